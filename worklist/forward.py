"""The ``dicom-forward`` delivery kind: a study sent on to a registered node.

Each attempt C-STOREs the study's instances the destination has not yet
acknowledged (``hub.services.routes.pending``) over one association
(``worklist.send``), noting every answer in its own short transaction as it
comes. A retry, a manual retry or a restart after a crash therefore resumes
where the destination stopped, and never sends it an instance it already
took. The attempt succeeds only when every instance is acknowledged; any
refusal or a dropped association is a ``DeliveryError``, retried with the
outbox's backoff.
"""

from __future__ import annotations

from hub.db import Database
from hub.models import Modality
from hub.services import routes
from hub.services.deliveries.kinds import (
    Claim,
    DeliveryError,
    DeliveryKind,
    Sender,
    SendOptions,
    Target,
)
from worklist.send import Destination, Outgoing, Progress, send_instances

NAME = routes.KIND
# Instances that arrive while a study is being sent go in the same attempt;
# beyond this many passes the next attempt takes the rest.
PASSES = 3


def sender(opts: SendOptions) -> Sender:
    db, settings = opts.db, opts.settings
    if db is None or settings is None:
        raise ValueError("the dicom-forward kind needs the hub's database and settings")

    def send(target: Target, c: Claim) -> None:
        uid = str(c.payload.get("study_instance_uid"))
        try:
            for _ in range(PASSES):
                with db.read_session() as s:
                    node = s.get(Modality, target.name)
                    todo = routes.pending(s, c.id, uid)
                if not todo:
                    return
                if node is None or not node.host or not node.port:
                    raise DeliveryError(
                        f"{target.name!r} is not a registered node with host and port"
                    )
                dest = Destination(
                    ae_title=node.ae_title,
                    host=node.host,
                    port=node.port,
                    calling_ae=settings.dicom_ae,
                    tls=opts.tls if node.tls else None,
                    timeout=opts.timeout,
                )
                files = [
                    Outgoing(
                        settings.data_dir / t.path,
                        t.sop_class_uid,
                        t.sop_instance_uid,
                        t.transfer_syntax_uid,
                    )
                    for t in todo
                ]
                report = send_instances(dest, files, _noter(db, c.id))
                if report.error or report.failed:
                    raise DeliveryError(_summary(report.error, report.failed, len(files)))
            raise DeliveryError(f"study {uid} still receiving instances; the rest goes next")
        finally:
            with db.session() as s:
                routes.save_progress(s, c.id, uid)

    return send


def _noter(db: Database, delivery_id: int) -> Progress:
    def noted(sop_instance_uid: str, status: int | None, detail: str) -> None:
        ok = status is not None and (status == 0 or status in (0xB000, 0xB006, 0xB007))
        with db.session() as s:
            routes.note(s, delivery_id, sop_instance_uid, None if ok else detail)

    return noted


def _summary(error: str | None, failed: dict[str, str], total: int) -> str:
    parts = [error] if error else []
    if failed:
        first = next(iter(failed.items()))
        parts.append(
            f"{len(failed)} of {total} instances not accepted (first: {first[0]}: {first[1]})"
        )
    return "; ".join(parts)


KIND = DeliveryKind(name=NAME, events=frozenset(), sender=sender, needs_study=True, to_node=True)
