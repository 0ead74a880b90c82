"""Timed work (APScheduler in a background thread): quiet-period order completion,
re-matching studies that wait for orders, the daily QC event, and whatever else
other areas add with ``Jobs.add``.

Each job opens its own session through the services, so a failing run is
logged and simply retried at its next interval; none overlaps itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import date, datetime
from typing import TYPE_CHECKING

from apscheduler.schedulers.background import BackgroundScheduler

from hub.archive import rewrite
from hub.services import completion, qc

if TYPE_CHECKING:
    from hub.context import Hub

log = logging.getLogger("hub.jobs")


class Jobs:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.scheduler = BackgroundScheduler(timezone="UTC")
        self.add("quiet_period_completion", self.complete_quiet_orders, seconds=30)
        self.add("rematch_waiting_studies", self.rematch_waiting_studies, seconds=60)
        # Checked every minute rather than fired once at 07:00: a hub that was down
        # then still writes the day's event when it is back (qc.write_daily).
        self.qc_daily_done: date | None = None
        self.add("qc_daily", self.write_qc_daily, seconds=60)
        if hub.tls is not None:  # a renewed certificate is used without a restart
            self.add(
                "tls_reload", hub.tls.reload_if_changed, seconds=hub.settings.tls_reload_seconds
            )

    def add(self, name: str, func: Callable[[], object], *, seconds: float) -> None:
        """Run ``func`` every ``seconds`` (one run at a time, missed runs coalesced)."""

        def run() -> None:
            try:
                func()
            except Exception:
                log.exception("job failed", extra={"job": name})

        self.scheduler.add_job(
            run,
            "interval",
            seconds=seconds,
            id=name,
            name=name,
            max_instances=1,
            coalesce=True,
            replace_existing=True,
        )

    def complete_quiet_orders(self) -> list[int]:
        with self.hub.db.session() as s:
            done = completion.complete_quiet_orders(
                s, quiet_minutes=self.hub.settings.study_quiet_minutes
            )
        if done:
            log.info("orders completed after the quiet period", extra={"order_ids": done})
        return done

    def rematch_waiting_studies(self) -> list[str]:
        attached = rewrite.rematch_waiting(self.hub)
        if attached:
            log.info("waiting studies matched to new orders", extra={"studies": attached})
        return attached

    def write_qc_daily(self, now: datetime | None = None) -> date | None:
        """Write yesterday's ``qc.daily`` event once it is due; returns the day if this
        call wrote it. A day known to be done costs no query until the next one."""
        settings = self.hub.settings
        due = qc.daily_due(settings.tz, now, settings.qc_daily_at)
        if due is None or due == self.qc_daily_done:
            return None
        with self.hub.db.read_session() as s:
            done = qc.daily_written(s, due)
        written = None
        if not done:
            with self.hub.db.session() as s:
                written = qc.write_daily(
                    s,
                    tz=settings.tz,
                    waiting_minutes=settings.qc_waiting_minutes,
                    public_url=settings.public_url,
                    now=now,
                    at=settings.qc_daily_at,
                )
        self.qc_daily_done = due
        if written:
            log.info("daily QC event written", extra={"day": written.isoformat()})
        return written

    def start(self) -> None:
        self.scheduler.start()

    def stop(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
