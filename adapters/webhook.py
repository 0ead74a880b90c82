"""Webhooks out: the delivery document as a signed JSON POST (docs/webhooks.md).

The signature is HMAC-SHA256 over the exact bytes of the body, keyed with the
source's secret, so a receiver verifies before it parses. Any 2xx completes
the delivery; anything else (an error status, a redirect, a timeout, a
connection closed mid-answer) raises ``DeliveryError`` and the delivery is
retried with backoff.

The receiver's certificate is always verified (public CAs plus
``VETHUB_TLS_EXTRA_CA``): a receiver the hub cannot verify fails the attempt
with the certificate problem as its error, and is retried like any other.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import ssl
import time
from typing import Any

import httpx

import hub
from hub.services.deliveries.kinds import (
    Claim,
    DeliveryError,
    DeliveryKind,
    SendOptions,
    Target,
)
from hub.services.sources import EVENTS

SIGNATURE_HEADER = "X-Vethub-Signature"
DELIVERY_HEADER = "X-Vethub-Delivery"
EVENT_HEADER = "X-Vethub-Event"


def body(payload: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON; the bytes that are signed are the bytes that are sent."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def signature(secret: str, raw: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()


def verify(secret: str, raw: bytes, header: str | None) -> bool:
    """What a receiver does (and our tests do): constant-time compare."""
    return header is not None and hmac.compare_digest(signature(secret, raw), header)


class WebhookSender:
    """Sends with one pooled ``httpx.Client``; safe to call from several threads."""

    def __init__(self, timeout: float = 10.0, tls: ssl.SSLContext | bool = True) -> None:
        self.timeout = timeout
        self.client = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            verify=tls,
            follow_redirects=False,
            headers={"User-Agent": f"vethub/{hub.__version__}"},
        )

    def __call__(self, target: Target, claim: Claim) -> None:
        if not target.webhook_url or not target.webhook_secret:
            raise DeliveryError(f"source {target.name!r} has no webhook URL and secret")
        raw = body(claim.payload)
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: signature(target.webhook_secret, raw),
            DELIVERY_HEADER: claim.uuid,
            EVENT_HEADER: claim.event_kind,
        }
        deadline = time.monotonic() + 3 * self.timeout
        try:
            with self.client.stream(
                "POST", target.webhook_url, content=raw, headers=headers
            ) as resp:
                # Read (and bound) the answer so a half-sent response counts as a failure.
                size = 0
                for chunk in resp.iter_bytes():
                    size += len(chunk)
                    if size > 1 << 20 or time.monotonic() > deadline:
                        break
        except httpx.TimeoutException as exc:
            raise DeliveryError(f"no answer from {target.webhook_url} in time ({exc!r})") from exc
        except httpx.HTTPError as exc:
            raise DeliveryError(f"{target.webhook_url}: {exc.__class__.__name__}: {exc}") from exc
        if not 200 <= resp.status_code < 300:
            raise DeliveryError(f"{target.webhook_url} answered HTTP {resp.status_code}")

    @classmethod
    def of(cls, options: SendOptions) -> WebhookSender:
        return cls(options.timeout, options.tls)

    def close(self) -> None:
        self.client.close()


# Every event a source may subscribe to; the source chooses which.
KIND = DeliveryKind(
    name="webhook",
    events=frozenset(EVENTS),
    sender=WebhookSender.of,
    requires=("webhook_url", "webhook_secret"),
)
