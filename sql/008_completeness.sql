-- The completeness view (the Airflow UI plugin) reads these two views; both are computed
-- from the ledger, so what the view shows is what the chains recorded.

-- Per ETC file name (without its extension: the name the portal knows), its latest version,
-- the fragments it was merged from, and what became of its uploads.
CREATE VIEW stationflow.file_status AS
SELECT DISTINCT ON (o.station, regexp_replace(o.etc_name, '\.[^.]*$', ''))
       o.id AS output_file_id, o.station, o.file_type, o.logger_number, o.file_number,
       regexp_replace(o.etc_name, '\.[^.]*$', '') AS stem, o.etc_name, o.version,
       o.period_start, o.period_end, o.rows_expected, o.rows_present, o.rows_filled,
       o.created_at,
       (SELECT count(*) FROM stationflow.output_fragment f
         WHERE f.output_file_id = o.id) AS fragments,
       (SELECT count(*) FROM stationflow.upload u WHERE u.output_file_id = o.id) AS attempts,
       a.receipt, a.at AS uploaded_at,
       l.outcome AS last_outcome, l.http_status AS last_http_status,
       l.message AS last_message, l.at AS last_attempt_at
  FROM stationflow.output_file o
  LEFT JOIN LATERAL (
        SELECT u.receipt, u.at FROM stationflow.upload u
         WHERE u.output_file_id = o.id AND u.outcome = 'accepted') a ON true
  LEFT JOIN LATERAL (
        SELECT u.outcome, u.http_status, u.message, u.at FROM stationflow.upload u
         WHERE u.output_file_id = o.id ORDER BY u.attempt DESC LIMIT 1) l ON true
 ORDER BY o.station, regexp_replace(o.etc_name, '\.[^.]*$', ''), o.version DESC;

-- Per raw hour: was it refined (at its current revision), and per publish target, is every
-- value it gave published? One row per raw hour and target that holds any of its values.
CREATE VIEW smartem_publish.hour_status AS
SELECT r.harvester, r.device_id, r.day, r.hour, r.hour_start,
       s.status AS refine_status, COALESCE(s.rows, 0) AS refined_values,
       o.target,
       count(*) FILTER (WHERE o.state = 'published') AS published,
       count(*) FILTER (WHERE o.state = 'sending') AS sending,
       count(*) FILTER (WHERE o.state = 'failed') AS failed,
       max(o.error) AS error
  FROM smartem_raw.timeseries r
  LEFT JOIN smartem_refined.raw_state s
         ON s.raw_gid = r.gid AND s.raw_revision = r.revision
  LEFT JOIN smartem_publish.observation o
         ON (o.device_id, o.day, o.hour) = (r.device_id, r.day, r.hour)
 GROUP BY r.harvester, r.device_id, r.day, r.hour, r.hour_start, s.status, s.rows, o.target;
