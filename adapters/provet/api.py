"""The clinic's Provet Cloud REST API as the integration's virtual user.

OAuth2 client credentials (authentication_oauth2.html): a form-encoded POST
to ``/{provet_id}/oauth2/token/`` with the client id and secret in HTTP Basic;
the token (10 h) is kept until shortly before it expires and fetched again
once when an answer is 401. Every fault becomes a ``DeliveryError`` whose text
says what Provet answered, so the job is retried and the deliveries view shows
why; a 429 carries its ``Retry-After`` (ratelimit.html) so the retry waits
that long. A 404 is ``Missing``: the caller decides what a vanished object
means. Relations are URLs (trailing slash required); only URLs under this
clinic's API root are followed, so a payload cannot point the hub elsewhere.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from adapters.retry_after import seconds as retry_after_seconds
from hub.services.deliveries.kinds import DeliveryError

# A token is renewed this long before Provet says it expires.
TOKEN_MARGIN_S = 120.0
# A Retry-After beyond this is read as this (a typo in a proxy must not park a job for days).
MAX_RETRY_AFTER_S = 3600.0


class Missing(Exception):
    """Provet answered 404: the object does not exist (any more)."""


@dataclass(frozen=True)
class Credentials:
    base_url: str
    provet_id: str
    client_id: str
    client_secret: str = field(repr=False)  # never in a log line or error text
    scope: str = "restapi"

    @classmethod
    def of(cls, cfg: Mapping[str, Any]) -> Credentials:
        return cls(
            base_url=str(cfg["base_url"]).rstrip("/"),
            provet_id=str(cfg["provet_id"]),
            client_id=str(cfg["client_id"]),
            client_secret=str(cfg["client_secret"]),
            scope=str(cfg.get("scope") or "restapi"),
        )


def retry_after(value: str | None, default: float = 30.0) -> float:
    """Seconds from a ``Retry-After`` header, ``default`` when it says nothing usable."""
    wait = retry_after_seconds(value)
    return default if wait is None else min(wait, MAX_RETRY_AFTER_S)


class ProvetApi:
    """One clinic's API; safe to use from several delivery threads at once."""

    def __init__(
        self,
        creds: Credentials,
        http: httpx.Client,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.creds = creds
        self.http = http
        self.clock = clock
        self.root = f"{creds.base_url}/{creds.provet_id}/api/0.1/"
        self.token_url = f"{creds.base_url}/{creds.provet_id}/oauth2/token/"
        self._token: tuple[str, float] | None = None
        self._lock = threading.Lock()
        self.token_requests = 0
        # Lookup objects (modality, target area, user, department) by URL, with expiry.
        self._lookups: dict[str, tuple[Any, float]] = {}

    # -- token --------------------------------------------------------------

    def token(self, stale: str | None = None) -> str:
        """The cached token, or a new one (also when ``stale`` is the cached one)."""
        with self._lock:
            now = self.clock()
            if self._token and self._token[0] != stale and now < self._token[1]:
                return self._token[0]
            self.token_requests += 1
            resp = self._send(
                "POST",
                self.token_url,
                data={"grant_type": "client_credentials", "scope": self.creds.scope},
                auth=(self.creds.client_id, self.creds.client_secret),
            )
            if resp.status_code != 200:
                raise DeliveryError(
                    f"Provet refused the token request: HTTP {resp.status_code}" + _brief(resp),
                    retry_after=_wait(resp),
                )
            body = _json(resp, "token")
            token = body.get("access_token") if isinstance(body, dict) else None
            if not isinstance(token, str) or not token:
                raise DeliveryError("Provet's token answer has no access_token")
            life = body.get("expires_in")
            life_s = float(life) if isinstance(life, int | float) else 36000.0
            self._token = (token, now + max(life_s - TOKEN_MARGIN_S, life_s / 2))
            return token

    # -- resources ----------------------------------------------------------

    def url(self, ref: str | int, resource: str | None = None) -> str:
        """An absolute resource URL from a relation URL or ``resource`` + id."""
        if resource is not None:
            return f"{self.root}{resource}/{ref}/"
        text = str(ref)
        if not text.startswith(self.root):
            raise DeliveryError(f"relation {text!r} is not under this clinic's API {self.root}")
        return text if text.endswith("/") else text + "/"

    def lookup(
        self,
        ref: str | int,
        resource: str,
        page_size: int,
        *,
        whole_list: bool = True,
        ttl: float = 3600.0,
    ) -> Any:
        """A rarely changing object (modality, target area, user...), cached for ``ttl`` s.

        With ``whole_list`` (short lists: modalities, target areas) a miss reads
        the list, ``page_size`` at a time (ratelimit.html counts a larger page as
        several requests), so one list read serves every later worklist; an
        object the list does not hold is read by itself.
        """
        url = self.url(ref, resource if isinstance(ref, int) or str(ref).isdigit() else None)
        now = self.clock()
        hit = self._lookups.get(url)
        if hit is not None and now < hit[1]:
            return hit[0]
        page = f"{self.root}{resource}/?page_size={page_size}" if whole_list else None
        for _ in range(20):  # at most 20 pages per refresh
            if not page or not page.startswith(self.root):
                break
            body = self.get(page)
            items = body.get("results") if isinstance(body, dict) else None
            if not isinstance(items, list):
                break
            for item in items:
                if isinstance(item, dict) and isinstance(item.get("url"), str):
                    self._lookups[item["url"]] = (item, now + ttl)
            page = body.get("next") if isinstance(body.get("next"), str) else None
        hit = self._lookups.get(url)
        if hit is None:
            item = self.get(url)
            self._lookups[url] = hit = (item, now + ttl)
        return hit[0]

    def get(self, url: str, params: Mapping[str, Any] | None = None) -> Any:
        return _json(self.call("GET", url, params=params), url)

    def patch(self, url: str, body: Mapping[str, Any]) -> Any:
        resp = self.call("PATCH", url, json=dict(body))
        return _json(resp, url) if resp.content else None

    def call(self, method: str, url: str, **kw: Any) -> httpx.Response:
        """One request with the token; renewed once on 401. 2xx or an error."""
        token = self.token()
        resp = self._send(method, url, headers=_bearer(token), **kw)
        if resp.status_code == 401:
            resp = self._send(method, url, headers=_bearer(self.token(stale=token)), **kw)
        if resp.status_code == 404:
            raise Missing(url)
        if resp.status_code == 429:
            wait = _wait(resp)
            raise DeliveryError(
                f"Provet rate limit on {method} {url}: HTTP 429, retry after {wait:g} s",
                retry_after=wait,
            )
        if not 200 <= resp.status_code < 300:
            raise DeliveryError(
                f"Provet answered {method} {url} with HTTP {resp.status_code}" + _brief(resp),
                retry_after=_wait(resp) if resp.status_code == 503 else None,
            )
        return resp

    def _send(self, method: str, url: str, **kw: Any) -> httpx.Response:
        try:
            return self.http.request(method, url, **kw)
        except httpx.TimeoutException as exc:
            raise DeliveryError(f"Provet did not answer {method} {url} in time ({exc!r})") from exc
        except httpx.HTTPError as exc:
            raise DeliveryError(f"cannot reach Provet for {method} {url}: {exc!r}") from exc


class ApiPool:
    """One ``ProvetApi`` (and its token) per clinic credentials, shared by threads."""

    def __init__(self, timeout: float, tls: ssl.SSLContext | bool = True) -> None:
        self.http = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            verify=tls,
            follow_redirects=False,
        )
        self._apis: dict[Credentials, ProvetApi] = {}
        self._lock = threading.Lock()

    def get(self, cfg: Mapping[str, Any]) -> ProvetApi:
        creds = Credentials.of(cfg)
        with self._lock:
            api = self._apis.get(creds)
            if api is None:
                api = self._apis[creds] = ProvetApi(creds, self.http)
            return api


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Accept": "application/json"}


def _wait(resp: httpx.Response) -> float | None:
    if resp.status_code not in (429, 503):
        return None
    return retry_after(resp.headers.get("Retry-After"))


def _json(resp: httpx.Response, what: str) -> Any:
    try:
        return resp.json()
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        raise DeliveryError(
            f"Provet's answer to {what} is not JSON (HTTP {resp.status_code}): {resp.text[:80]!r}"
        ) from None


def _brief(resp: httpx.Response) -> str:
    text = resp.text.strip().replace("\n", " ")
    return f": {text[:160]}" if text else ""
