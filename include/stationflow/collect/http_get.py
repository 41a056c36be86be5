"""GET with bounded retries, for harvesters that read JSON APIs from several threads.

One ``requests.Session`` per thread (a session is not safe to share), TLS verification
always on (or a CA bundle), credentials only in headers. A 5xx, 429 or no answer is
retried with backoff; any other non-200 is final. What fails raises ``FetchError`` with
the URL (never a credential) and the cause.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import requests

log = logging.getLogger("stationflow.collect.http")
RETRYABLE = frozenset({429, 500, 502, 503, 504})
MAX_DELAY = 30.0


class FetchError(Exception):
    """A GET that did not give a 200 (after retries where retrying made sense)."""

    def __init__(self, url: str, message: str, status: int | None = None) -> None:
        super().__init__(f"GET {url}: {message}")
        self.url = url
        self.status = status


class Fetcher:
    def __init__(
        self,
        *,
        headers: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | tuple[float, float] = (5.0, 30.0),
        retries: int = 3,
        backoff: float = 0.5,
        verify: bool | str = True,
        sleep: Callable[[float], None] = time.sleep,
        secrets: tuple[str, ...] = (),
        session: requests.Session | None = None,
    ) -> None:
        self.headers = dict(headers or {})
        self.auth = auth
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.verify = verify if verify is not False else True  # never turned off
        self.sleep = sleep
        self._secrets = tuple(s for s in secrets if s and len(s) >= 4)
        self._local = threading.local()
        self._shared = session  # a caller's session (tests count requests): used by all

    def session(self) -> requests.Session:
        s = self._shared or getattr(self._local, "session", None)
        if s is None:
            s = self._local.session = requests.Session()
        return s

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def get(self, url: str, params: Mapping[str, Any] | None = None) -> bytes:
        """The body of a 200 answer."""
        attempt = 0
        while True:
            try:
                r = self.session().get(
                    url,
                    params=params,
                    headers=self.headers,
                    auth=self.auth,
                    timeout=self.timeout,
                    verify=self.verify,
                    allow_redirects=False,
                )
            except requests.RequestException as exc:
                status, why = None, f"no answer ({type(exc).__name__}: {self.scrub(str(exc))})"
            else:
                if r.status_code == 200:
                    return r.content
                status = r.status_code
                why = f"HTTP {status}: {self.scrub(r.text.strip()[:300]) or r.reason}"
                if status not in RETRYABLE:
                    raise FetchError(url, why, status)
            if attempt >= self.retries:
                raise FetchError(url, f"failed after {attempt + 1} attempts: {why}", status)
            delay = min(self.backoff * 2**attempt, MAX_DELAY)
            log.info("GET %s: %s; retry in %.1f s", url, why, delay)
            self.sleep(delay)
            attempt += 1
