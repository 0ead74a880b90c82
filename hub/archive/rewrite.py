"""Correcting stored headers after the index changed: reconcile, detach, re-match.

Each command commits the index first (it is the truth), then rewrites the
study's files one by one, each atomically. A file that cannot be rewritten is
not hidden: it is logged, audited (``rewrite_failed``) and returned, so the
REST answer can name it; reconciling again redoes the rewrite.
"""

from __future__ import annotations

import logging
import threading
import weakref
from pathlib import Path
from typing import TYPE_CHECKING

from hub.archive import files
from hub.services import reconcile
from hub.services.coercion import Value
from hub.services.reconcile import Rewrite

if TYPE_CHECKING:
    from hub.context import Hub

log = logging.getLogger("hub.studies")


def reconcile_study(hub: Hub, study_instance_uid: str, order_id: int, actor: str) -> list[str]:
    """Attach a study to an order by hand; returns the files whose headers were not corrected."""
    with hub.db.session() as s:
        rewrite = reconcile.reconcile(s, study_instance_uid, order_id, actor)
    return finish(hub, [rewrite])


def detach_study(hub: Hub, study_instance_uid: str, actor: str) -> list[str]:
    """Return a study to the queue with its received headers; returns the files not restored."""
    with hub.db.session() as s:
        rewrite = reconcile.detach(s, study_instance_uid, actor)
    return finish(hub, [rewrite])


def rematch_waiting(hub: Hub) -> list[str]:
    """The timed re-match; returns the UIDs of the studies it attached."""
    with hub.db.session() as s:
        rewrites = reconcile.rematch_waiting(s, patient_day=hub.settings.match_patient_day)
    finish(hub, rewrites)
    return [r.study_instance_uid for r in rewrites]


def follow_orders(hub: Hub) -> None:
    """Let placing or changing an order attach the studies waiting for it (see
    ``reconcile.rematch_for_order``), with their files corrected after the commit."""

    # Weakly: the port is kept per engine, and the hub holds that engine.
    hub_ref = weakref.ref(hub)

    def after_order_commit(rewrites: list[Rewrite]) -> None:
        # Runs inside the order's commit, where this process may still hold the
        # database's writer lock: files now, the audit of failures from a thread.
        live = hub_ref()
        if live is None:
            return
        data_dir = live.settings.data_dir
        # The attachment may have been undone after it was made (an HL7 message
        # rolled back to its savepoint in a batch that committed): files follow
        # the index as committed, so look again.
        with live.db.read_session() as s:
            held = [r for r in rewrites if reconcile.still_attached(s, r)]
        failed = [(r, fails) for r in held if (fails := rewrite_files(data_dir, r))]
        if failed:
            threading.Thread(target=_audit, args=(live, failed), daemon=True).start()

    reconcile.files_follow_orders(
        hub.db.engine, patient_day=hub.settings.match_patient_day, rewrite=after_order_commit
    )


def finish(hub: Hub, rewrites: list[Rewrite]) -> list[str]:
    """Rewrite the files of committed changes; audit and return the paths that failed."""
    failed = [(r, fails) for r in rewrites if (fails := rewrite_files(hub.settings.data_dir, r))]
    if failed:
        _audit(hub, failed)
    return [path for _, fails in failed for path in fails]


def rewrite_files(data_dir: Path, rewrite: Rewrite) -> dict[str, str]:
    """Put ``rewrite.values`` into each of its files; ``{path: error}`` for those that failed."""
    failed: dict[str, str] = {}
    if not rewrite.values:
        return failed
    for rel in rewrite.paths:
        try:
            _rewrite_one(files.absolute(data_dir, rel), rewrite.values)
        except Exception as exc:
            log.exception("could not rewrite a stored instance", extra={"path": rel})
            failed[rel] = f"{type(exc).__name__}: {exc}"
    return failed


def _rewrite_one(path: Path, values: dict[str, Value]) -> None:
    # Imported here, not at the top: every Hub imports this module (hub.context), and
    # the CLI's commands (users, keys, db, ...) start faster without pydicom and numpy.
    from hub.archive import coercion, dicomfile

    ds = dicomfile.read_full(str(path))
    coercion.apply(ds, values)
    files.write_atomic(path, (dicomfile.encode(ds),))


def _audit(hub: Hub, failed: list[tuple[Rewrite, dict[str, str]]]) -> None:
    try:
        with hub.db.session() as s:
            for rewrite, fails in failed:
                reconcile.record_unwritten(s, rewrite, fails)
    except Exception:
        log.exception("could not audit failed header rewrites")
