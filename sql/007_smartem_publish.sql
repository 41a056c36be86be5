-- Smart Emission record chain, publish (seed 001 4.4): what each publish target (an STA or
-- SOS-T server) holds of every refined value. One row per target and refined value, so a
-- replay or a crash never sends a value twice, and a changed value (a new refined revision)
-- is updated in place on the server.
--
-- state: 'sending'   the request that creates it was (maybe) sent: the server may hold it
--                    or not, so the next run asks the server before sending it again;
--        'published' the server confirmed it (remote_id is the server's id);
--        'failed'    the server refused it (error says why); retried on the next run.

CREATE SCHEMA smartem_publish;

CREATE TABLE smartem_publish.observation (
    target       text        NOT NULL,   -- '<kind>:<connection id>'
    device_id    integer     NOT NULL,
    name         text        NOT NULL,   -- the indicator
    day          integer     NOT NULL,
    hour         integer     NOT NULL,
    revision     integer     NOT NULL,   -- the refined revision sent
    state        text        NOT NULL CHECK (state IN ('sending', 'published', 'failed')),
    remote_id    jsonb,                  -- STA: the Observation's @iot.id; SOS: its identifier
    attempts     integer     NOT NULL DEFAULT 1,
    error        text,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz,
    PRIMARY KEY (target, device_id, name, day, hour),
    CHECK (state <> 'published' OR remote_id IS NOT NULL)
);
CREATE INDEX observation_unsettled ON smartem_publish.observation (target)
    WHERE state <> 'published';

-- Per target and device: values published, waiting and failed, and the newest published
-- hour (for the completeness view).
CREATE VIEW smartem_publish.progress AS
SELECT o.target, o.device_id,
       count(*) FILTER (WHERE o.state = 'published') AS published,
       count(*) FILTER (WHERE o.state = 'sending') AS sending,
       count(*) FILTER (WHERE o.state = 'failed') AS failed,
       max(t.time) FILTER (WHERE o.state = 'published') AS last_published_time,
       max(o.updated_at) AS updated_at
  FROM smartem_publish.observation o
  LEFT JOIN smartem_refined.timeseries t
         ON (t.device_id, t.name, t.day, t.hour) = (o.device_id, o.name, o.day, o.hour)
 GROUP BY o.target, o.device_id;
