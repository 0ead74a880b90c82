"""The hub's calls to ezyVet's API: a bearer token kept as ezyVet asks, and each call's faults.

ezyVet says not to fetch a token before every call, that a token may stop
working at any time, and (apiv2) that a new token for the same credentials
revokes the old one. So one token per credential set is shared by every
sender thread of the process (``TOKENS``), kept until ``expires_in`` minus a
margin, fetched by one thread at a time, and dropped only by the thread that
saw it refused: a 401 fetches a new one once and repeats the call once. A
429 says when to come back (``Retry-After``, else ``x-ratelimit-reset``):
the delivery is retried then (``DeliveryError(retry_after=...)``). Error
texts carry ezyVet's own ``messages[].text``, never a credential.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from adapters.ezyvet.config import Config
from adapters.retry_after import seconds as retry_after_seconds
from hub.services.deliveries.kinds import DeliveryError

# Seconds before expires_in at which a token is no longer used (at most 10 % of its life).
MARGIN = 300
# When ezyVet gives no expires_in: the shorter of its two documented lifetimes (8 h).
DEFAULT_LIFETIME = 8 * 3600
# x-ratelimit-reset above this is an epoch time, below it a number of seconds.
_EPOCH = 1_000_000_000

Key = tuple[str, str, str, str, str]


@dataclass
class _Token:
    value: str
    good_until: float  # time.monotonic()


class Tokens:
    """Bearer tokens by credential set, shared across threads; one fetch at a time per set."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._guard = threading.Lock()
        self._locks: dict[Key, threading.Lock] = {}
        self._tokens: dict[Key, _Token] = {}

    def get(self, key: Key, fetch: Callable[[], tuple[str, float]]) -> str:
        """The cached token, or one ``fetch`` returns as ``(token, expires_in seconds)``."""
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            held = self._tokens.get(key)
            if held is not None and self._clock() < held.good_until:
                return held.value
            value, lifetime = fetch()
            margin = min(MARGIN, lifetime / 10)
            self._tokens[key] = _Token(value, self._clock() + lifetime - margin)
            return value

    def drop(self, key: Key, value: str) -> None:
        """Forget ``value`` if it is still the cached token (another thread may have renewed it)."""
        with self._guard:
            held = self._tokens.get(key)
            if held is not None and held.value == value:
                del self._tokens[key]


TOKENS = Tokens()


class Api:
    """One ezyVet site's API, called with ``http`` (the sender's pooled client)."""

    def __init__(self, cfg: Config, http: httpx.Client, tokens: Tokens = TOKENS) -> None:
        self.cfg = cfg
        self.http = http
        self.tokens = tokens
        self.key: Key = (cfg.base_url, cfg.token_path, cfg.partner_id, cfg.client_id, cfg.site_uid)

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """``method path`` with the bearer token; a 401 renews the token and tries once more."""
        token = self.tokens.get(self.key, self._fetch_token)
        resp = self._send(method, path, token, **kwargs)
        if resp.status_code == 401:
            self.tokens.drop(self.key, token)
            token = self.tokens.get(self.key, self._fetch_token)
            resp = self._send(method, path, token, **kwargs)
        if resp.status_code == 429:
            raise DeliveryError(
                f"{method} {path}: HTTP 429 rate limited{_said(resp)}",
                retry_after=retry_after(resp),
            )
        if not 200 <= resp.status_code < 300:
            raise DeliveryError(f"{method} {path}: HTTP {resp.status_code}{_said(resp)}")
        return resp

    def _send(self, method: str, path: str, token: str, **kwargs: Any) -> httpx.Response:
        url = self.cfg.base_url + path
        rest = dict(kwargs)
        headers = {"Authorization": f"Bearer {token}", **rest.pop("headers", {})}
        try:
            return self.http.request(method, url, headers=headers, **rest)
        except httpx.TimeoutException as exc:
            raise DeliveryError(f"{method} {path}: no answer in time ({exc!r})") from exc
        except httpx.HTTPError as exc:
            raise DeliveryError(f"{method} {path}: {exc.__class__.__name__}: {exc}") from exc

    def _fetch_token(self) -> tuple[str, float]:
        cfg = self.cfg
        body = {
            "partner_id": cfg.partner_id,
            "client_id": cfg.client_id,
            "client_secret": cfg.client_secret,
            "grant_type": "client_credentials",
            "scope": cfg.scope,
            "site_uid": cfg.site_uid,
        }
        where = f"token {cfg.token_path}"
        try:
            resp = self.http.post(cfg.base_url + cfg.token_path, json=body)
        except httpx.TimeoutException as exc:
            raise DeliveryError(f"{where}: no answer in time ({exc!r})") from exc
        except httpx.HTTPError as exc:
            raise DeliveryError(f"{where}: {exc.__class__.__name__}: {exc}") from exc
        if resp.status_code == 429:
            raise DeliveryError(f"{where}: HTTP 429{_said(resp)}", retry_after=retry_after(resp))
        if resp.status_code != 200:
            raise DeliveryError(f"{where}: HTTP {resp.status_code}{_said(resp)}")
        try:
            data = resp.json()
            token = data["access_token"]
            lifetime = float(data.get("expires_in") or DEFAULT_LIFETIME)
        except (ValueError, KeyError, TypeError) as exc:
            raise DeliveryError(f"{where}: the answer carries no access_token ({exc!r})") from None
        if not isinstance(token, str) or not token:
            raise DeliveryError(f"{where}: the answer carries no access_token")
        return token, lifetime


def retry_after(resp: httpx.Response, now: float | None = None) -> float | None:
    """Seconds to wait from ``Retry-After`` (seconds or an HTTP date), else
    ``x-ratelimit-reset`` (seconds, or an epoch time); None when neither says."""
    wait = retry_after_seconds(resp.headers.get("retry-after"), now)
    if wait is not None:
        return wait
    try:
        reset = float(resp.headers.get("x-ratelimit-reset", "").strip())
    except ValueError:
        return None
    if reset > _EPOCH:
        reset -= time.time() if now is None else now
    return max(0.0, reset)


def _said(resp: httpx.Response) -> str:
    """``: <ezyVet's messages[].text>`` when the body has them (bounded)."""
    try:
        messages = resp.json().get("messages") or []
        texts = [str(m.get("text")) for m in messages if isinstance(m, dict) and m.get("text")]
    except (ValueError, AttributeError):
        return ""
    return f": {'; '.join(texts)[:300]}" if texts else ""
