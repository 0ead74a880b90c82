"""Results back to ezyVet, as deliveries of two kinds an ezyVet source lists in ``results``.

- ``ezyvet-attach``: once a study is there, ``POST /v1/attachment`` on the
  animal's record with a note carrying the viewer link (and a small HTML file
  with the same link, since the attachment call takes a file). The hub keeps
  no written report, so none is attached.
- ``ezyvet-result``: the diagnostic-result status call. ezyVet's
  write-diagnosticresult scope implies it, but its path and fields were not
  visible: ``result_path``, ``result_fields`` and ``result_status`` say what to
  send (defaults in config.py; an empty ``result_path`` turns it off).

Each delivery makes one call, so a retry never repeats a call that already
succeeded; the outbox retries with backoff (or when a 429 said to) and shows
the last error in the deliveries view.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

import httpx

import hub
from adapters.ezyvet.client import Api
from adapters.ezyvet.config import NAME, RESULT_STATUS, Config
from hub.services import sealed
from hub.services.deliveries.kinds import (
    Claim,
    DeliveryError,
    DeliveryKind,
    Sender,
    SendOptions,
    Target,
)

ATTACH = "ezyvet-attach"
RESULT = "ezyvet-result"
Call = Callable[[Api, Config, Claim], None]


class EzyvetSender:
    """Sends one kind with a pooled client shared by the worker's threads."""

    def __init__(self, options: SendOptions, call: Call) -> None:
        self.secret_key = options.settings.secret_key if options.settings else None
        self.call = call
        self.http = httpx.Client(
            timeout=httpx.Timeout(options.timeout, connect=min(options.timeout, 5.0)),
            verify=options.tls,
            follow_redirects=False,
            headers={"User-Agent": f"vethub/{hub.__version__}"},
        )

    def __call__(self, target: Target, claim: Claim) -> None:
        try:
            cfg = Config.of(target.config(self.secret_key))
        except sealed.SealError as exc:
            raise DeliveryError(f"source {target.name!r}: {exc}") from None
        self.call(Api(cfg, self.http), cfg, claim)


def attach(api: Api, cfg: Config, claim: Claim) -> None:
    doc = claim.payload
    order = doc.get("order") or {}
    viewer = doc.get("viewer_url")
    animal = (order.get("patient") or {}).get("id")
    if not viewer or not animal:
        raise DeliveryError("nothing to attach: the delivery has no study link or animal id")
    names = cfg.attachment_fields
    form = {
        names["record_type"]: cfg.attachment_record_type,
        names["record_id"]: str(animal),
        names["notes"]: note(doc),
    }
    accession = order.get("accession_number") or "study"
    files = {names["file"]: (f"{accession}-images.html", link_page(doc), "text/html")}
    api.call("POST", cfg.attachment_path, data=form, files=files, headers=_key(claim))


def result(api: Api, cfg: Config, claim: Claim) -> None:
    doc = claim.payload
    status = cfg.result_status.get(str(doc.get("event")))
    if not cfg.result_path or status is None:
        return  # switched off for this source, or an event it sends nothing for
    order = doc.get("order") or {}
    names = cfg.result_fields
    body: dict[str, Any] = {
        names["request_id"]: order.get("placer_order_number"),
        names["status"]: status,
        names["accession"]: order.get("accession_number"),
    }
    if doc.get("viewer_url"):
        body[names["link"]] = doc["viewer_url"]
    api.call("POST", cfg.result_path, json=body, headers=_key(claim))


def note(doc: dict[str, Any]) -> str:
    """One line a vet reads in ezyVet: what was imaged, when, and the link."""
    order = doc.get("order") or {}
    study = doc.get("study") or {}
    what = (
        study.get("description")
        or (order.get("procedure") or {}).get("description")
        or "/".join(study.get("modalities") or [])
        or "Imaging study"
    )
    when = study.get("study_date") or ""
    count = study.get("instance_count")
    images = f", {count} images" if count else ""
    return f"{what} {when}{images} (accession {order.get('accession_number')}): {doc['viewer_url']}"


def link_page(doc: dict[str, Any]) -> bytes:
    url = html.escape(str(doc["viewer_url"]), quote=True)
    text = html.escape(note(doc))
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>Images</title></head>'
        f'<body><p>{text}</p><p><a href="{url}">Open the images</a></p></body></html>'
    ).encode()


def _key(claim: Claim) -> dict[str, str]:
    # Lets a receiver that keeps them drop a repeat of an attempt it already took.
    return {"Idempotency-Key": claim.uuid}


def _factory(call: Call) -> Callable[[SendOptions], Sender]:
    return lambda options: EzyvetSender(options, call)


ATTACH_KIND = DeliveryKind(
    name=ATTACH,
    events=frozenset({"study.received", "study.reconciled"}),
    sender=_factory(attach),
    needs_study=True,
    source_kind=NAME,
)
RESULT_KIND = DeliveryKind(
    name=RESULT,
    events=frozenset(RESULT_STATUS),
    sender=_factory(result),
    source_kind=NAME,
)
KINDS: tuple[DeliveryKind, ...] = (ATTACH_KIND, RESULT_KIND)
