"""Daily QC (hub/services/qc.py, GET /api/v1/qc): each list with what belongs in it
and what does not, around local midnight, and refused share links audited."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlmodel import col

from hub.context import Hub
from hub.models import AuditEvent, Delivery, Modality, Share, Study, utcnow
from hub.services import clock, qc
from tests import study_factory as sf
from tests.factories import REX, rex
from tests.harness import key_for

BERLIN = ZoneInfo("Europe/Berlin")  # UTC+1 in November: local midnight is 23:00 UTC
UTC_ZONE = ZoneInfo("UTC")
DAY = date(2026, 11, 28)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def order(
    client: TestClient,
    n: int,
    *,
    start: str = "2026-11-28T10:00:00",
    patient_id: str | None = None,
    name: str = "Rex",
) -> dict:
    """Order number ``n`` (placer ORD-n, accession An) for its own animal unless told."""
    patient = {**REX["patient"], "id": patient_id or f"P-{n}", "name": name}
    body = rex(
        placer_order_number=f"ORD-{n}",
        accession_number=f"A{n}",
        scheduled_start=start,
        patient=patient,
    )
    r = client.post("/api/v1/orders", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def store(hub: Hub, **attrs: object) -> str:
    """One stored instance (a study of its own); returns its StudyInstanceUID."""
    return sf.store(hub, sf.instance(**attrs)).study_instance_uid  # type: ignore[arg-type]


def set_study(hub: Hub, uid: str, **values: object) -> None:
    with hub.db.session() as s:
        s.execute(update(Study).where(col(Study.study_instance_uid) == uid).values(**values))


def study(hub: Hub, uid: str) -> Study:
    with hub.db.read_session() as s:
        found = s.scalars(select(Study).where(col(Study.study_instance_uid) == uid)).one()
        s.expunge(found)
        return found


def run(
    hub: Hub,
    day: date = DAY,
    *,
    tz: ZoneInfo = UTC_ZONE,
    now: str = "2026-11-29T10:00:00",
    waiting: float = 60,
) -> qc.QcReport:
    with hub.db.read_session() as s:
        return qc.report(s, day, tz=tz, waiting_minutes=waiting, now=at(now))


def test_missing_studies_are_open_orders_whose_day_is_over(
    hub: Hub, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    yesterday = order(client, 1, start="2026-11-28T09:00:00")
    earlier = order(client, 2, start="2026-11-25T09:00:00")  # earlier and still open
    today = order(client, 3, start="2026-11-29T08:00:00")  # its day is not over at 10:00
    tomorrow = order(client, 4, start="2026-11-30T08:00:00")
    imaged = order(client, 5, start="2026-11-28T11:00:00")
    store(hub, accession="A5", patient_id="P-5", study_date="20261128")  # matched by accession
    cancelled = order(client, 6, start="2026-11-28T12:00:00")
    assert client.post(f"/api/v1/orders/{cancelled['id']}/cancel").status_code == 200

    report = run(hub, DAY)
    listed = [o.order_id for o in report.missing_studies.items]
    assert listed == [yesterday["id"], earlier["id"]]  # newest day first
    assert report.missing_studies.count == 2
    assert report.missing_studies.items[0].accession_number == "A1"
    assert imaged["id"] not in listed and tomorrow["id"] not in listed

    # Today's report: today's own order still has the day ahead of it.
    later = [o.order_id for o in run(hub, date(2026, 11, 29)).missing_studies.items]
    assert today["id"] not in later and tomorrow["id"] not in later
    assert later == [yesterday["id"], earlier["id"]]
    # Capped lists still count everything.
    monkeypatch.setattr(qc, "LIST_LIMIT", 1)
    capped = run(hub, DAY).missing_studies
    assert ([o.order_id for o in capped.items], capped.count) == ([yesterday["id"]], 2)
    # A day before the order was scheduled: not yet missing.
    assert [o.order_id for o in run(hub, date(2026, 11, 26)).missing_studies.items] == [
        earlier["id"]
    ]


def test_attached_to_check_lists_patient_day_and_manual_not_accession(
    hub: Hub, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    rex_order = order(client, 1, patient_id="P-555", name="Rex")
    max_order = order(client, 2, patient_id="P-556", name="Max")
    by_accession = order(client, 3, patient_id="P-557", name="Bella")
    by_hand = order(client, 4, patient_id="P-558", name="Tom")
    day_rex = store(hub, patient_id="P-555", patient_name="Smith^Rex", study_date="20261128")
    day_max = store(hub, patient_id="P-556", patient_name="Smith^Max", study_date="20261128")
    acc = store(hub, accession="A3", patient_id="P-557", patient_name="Smith^Bella")
    loose = store(hub, patient_id="", patient_name="UNKNOWN^DOG", study_date="20261128")
    assert study(hub, day_rex).match_method == "patient_day"
    assert study(hub, day_max).match_method == "patient_day"
    assert study(hub, acc).match_method == "accession"
    assert study(hub, loose).order_id is None
    tech = {"Authorization": f"Bearer {key_for(hub, 'tech')}"}
    r = client.post(
        f"/api/v1/studies/{loose}/reconcile", json={"order_id": by_hand["id"]}, headers=tech
    )
    assert r.status_code == 200, r.text

    # Berlin's 28 November is 27 Nov 23:00 to 28 Nov 23:00 UTC.
    set_study(hub, day_rex, created_at=at("2026-11-27T23:30:00"))  # 00:30 local: in
    set_study(hub, day_rex, last_received_at=at("2026-11-27T23:31:00"))
    set_study(hub, day_max, created_at=at("2026-11-28T23:10:00"))  # 00:10 on the 29th: out
    set_study(hub, day_max, last_received_at=at("2026-11-28T23:11:00"))
    set_study(hub, acc, created_at=at("2026-11-28T10:00:00"))
    set_study(hub, acc, last_received_at=at("2026-11-28T10:00:00"))
    set_study(hub, loose, created_at=at("2026-11-26T10:00:00"))  # arrived days before
    set_study(hub, loose, last_received_at=at("2026-11-26T10:00:00"))
    with hub.db.session() as s:  # reconciled at 23:59 local on the 28th
        s.execute(
            update(AuditEvent)
            .where(col(AuditEvent.action) == "reconcile")
            .values(at=at("2026-11-28T22:59:00"))
        )

    report = run(hub, DAY, tz=BERLIN)
    items = {a.study_instance_uid: a for a in report.attached_to_check.items}
    assert set(items) == {day_rex, loose}
    assert report.attached_to_check.count == 2
    assert items[day_rex].match_method == "patient_day"
    assert items[day_rex].attached_by == "arrival"
    assert items[day_rex].order_id == rex_order["id"]
    assert items[day_rex].received_patient_name == "Smith^Rex"
    assert items[loose].match_method == "manual"
    assert items[loose].attached_by.endswith(":test-tech")
    assert items[loose].order_patient_id == "P-558" and items[loose].received_patient_id == ""
    # The next local day holds the study that arrived ten minutes after midnight.
    nxt = run(hub, date(2026, 11, 29), tz=BERLIN, now="2026-11-29T20:00:00")
    assert [a.study_instance_uid for a in nxt.attached_to_check.items] == [day_max]
    assert nxt.attached_to_check.items[0].order_id == max_order["id"]
    # The day before Berlin's 28th, in UTC, holds Rex's study instead.
    utc27 = run(hub, date(2026, 11, 27), tz=UTC_ZONE)
    assert [a.study_instance_uid for a in utc27.attached_to_check.items] == [day_rex]
    assert by_accession["id"] not in {a.order_id for a in report.attached_to_check.items}
    monkeypatch.setattr(qc, "LIST_LIMIT", 1)  # the count of a capped join
    capped = run(hub, DAY, tz=BERLIN).attached_to_check
    assert (len(capped.items), capped.count) == (1, 2)


def test_waiting_studies_longer_than_the_setting(hub: Hub, client: TestClient) -> None:
    old = store(hub, patient_id="P-900", patient_name="Nobody^Fido")
    recent = store(hub, patient_id="P-901", patient_name="Nobody^Rover")
    day_before = store(hub, patient_id="P-902", patient_name="Nobody^Spot")
    order(client, 7, patient_id="P-907", name="Rex")
    matched = store(hub, accession="A7", patient_id="P-907")
    set_study(hub, old, created_at=at("2026-11-29T08:30:00"))  # 90 minutes at 10:00
    set_study(hub, recent, created_at=at("2026-11-29T09:30:00"))  # 30 minutes
    set_study(hub, day_before, created_at=at("2026-11-28T15:00:00"))
    set_study(hub, matched, created_at=at("2026-11-28T15:00:00"))

    today = run(hub, date(2026, 11, 29), waiting=60)
    assert [w.study_instance_uid for w in today.waiting_studies.items] == [day_before, old]
    assert today.waiting_studies.items[1].unmatched_reason == "no_match"
    assert today.waiting_studies.items[1].patient_name == "Nobody^Fido"
    # Seen from the 28th (its end at midnight UTC), only the study of that day waited.
    yesterday = run(hub, DAY, waiting=60)
    assert [w.study_instance_uid for w in yesterday.waiting_studies.items] == [day_before]
    # A longer setting drops the 90-minute wait.
    assert run(hub, date(2026, 11, 29), waiting=120).waiting_studies.count == 1


def _delivery(hub: Hub, status: str, when: str, error: str | None = None) -> int:
    with hub.db.session() as s:
        row = Delivery(
            uuid=str(uuid.uuid4()),
            source="pims-main",
            kind="webhook",
            event_kind="study.received",
            outbox_event_id=1,
            order_id=1,
            status=status,
            attempts=20,
            next_attempt_at=at(when),
            last_error=error,
        )
        s.add(row)
        s.flush()
        assert row.id is not None
        return row.id


def test_failed_deliveries_with_source_kind_and_last_error(hub: Hub) -> None:
    failed = _delivery(hub, "failed", "2026-11-28T12:00:00", "https://pims/hook answered 500")
    older = _delivery(hub, "failed", "2026-11-20T12:00:00", "connection refused")
    _delivery(hub, "failed", "2026-11-29T01:00:00", "after the day")
    _delivery(hub, "pending", "2026-11-28T12:00:00", "answered 503")
    _delivery(hub, "delivered", "2026-11-28T12:00:00")

    report = run(hub, DAY)
    assert [d.id for d in report.failed_deliveries.items] == [failed, older]
    first = report.failed_deliveries.items[0]
    assert (first.source, first.kind, first.event) == ("pims-main", "webhook", "study.received")
    assert first.last_error == "https://pims/hook answered 500"
    assert first.failed_at == at("2026-11-28T12:00:00")
    assert report.failed_deliveries.count == 2


def _anon(client: TestClient) -> dict[str, str]:
    return {"Authorization": ""}


def test_refused_and_expired_unused_share_links(hub: Hub, client: TestClient) -> None:
    order(client, 1, patient_id="P-555")
    uid = store(hub, accession="A1", patient_id="P-555")
    vet = {"Authorization": f"Bearer {key_for(hub, 'vet')}"}

    def share() -> tuple[int, str]:
        r = client.post(f"/api/v1/studies/{uid}/shares", json={}, headers=vet)
        assert r.status_code == 201, r.text
        return r.json()["id"], r.json()["url"].rsplit("/", 1)[-1]

    def expire(share_id: int, when: datetime) -> None:
        with hub.db.session() as s:
            s.execute(update(Share).where(col(Share.id) == share_id).values(expires_at=when))

    now = utcnow()
    gone = now - timedelta(seconds=5)
    expired_id, expired_token = share()  # opened once it expired: refused
    revoked_id, revoked_token = share()  # opened once revoked: refused
    unused_id, _ = share()  # never opened, expired: unused
    used_id, used_token = share()  # opened, then expired: not "unused"
    live_id, _ = share()  # still valid: nothing to say
    assert client.get(f"/shared/{used_token}", headers=_anon(client)).status_code == 200
    for share_id in (expired_id, unused_id, used_id):
        expire(share_id, gone)
    revoked = client.delete(f"/api/v1/studies/{uid}/shares/{revoked_id}", headers=vet)
    assert revoked.status_code == 204
    assert client.get(f"/shared/{expired_token}", headers=_anon(client)).status_code == 410
    assert client.get(f"/shared/{revoked_token}", headers=_anon(client)).status_code == 410
    assert client.get("/shared/made-up-token", headers=_anon(client)).status_code == 404

    with hub.db.read_session() as s:
        refusals = list(s.scalars(select(AuditEvent).where(AuditEvent.action == "share.refused")))
    assert sorted((e.actor, e.detail["reason"]) for e in refusals) == sorted(
        [(f"share:{expired_id}", "expired"), (f"share:{revoked_id}", "revoked")]
    )  # the made-up token wrote nothing

    tz = hub.settings.tz
    day = gone.astimezone(tz).date()
    with hub.db.read_session() as s:
        report = qc.report(s, day, tz=tz, waiting_minutes=60)
    refused = {(p.share_id, p.reason) for p in report.shares_refused.items}
    assert refused == {(expired_id, "expired"), (revoked_id, "revoked")}
    assert all(p.study_instance_uid == uid for p in report.shares_refused.items)
    unused = report.shares_expired_unused.items
    # Not the one opened in time, the revoked or the live one; the one refused after it
    # expired was never opened while it worked, so it expired unused too.
    assert [p.share_id for p in unused] == [expired_id, unused_id]
    assert unused[1].reason == "expired_unused" and unused[1].created_by.endswith(":test-vet")
    assert live_id not in {p.share_id for p in unused}
    # Another day knows none of it.
    with hub.db.read_session() as s:
        before = qc.report(s, day - timedelta(days=2), tz=tz, waiting_minutes=60)
    assert before.shares_refused.count == 0 and before.shares_expired_unused.count == 0


def test_devices_silent_all_day(hub: Hub, client: TestClient) -> None:
    for ae in ("DX_QUERIED", "US_STORED", "CT_REPORTED", "DX_SILENT", "MR_NEVER", "LATE_MIDNIGHT"):
        assert client.put(f"/api/v1/modalities/{ae}", json={"site": "main"}).status_code == 201
    assert client.put("/api/v1/modalities/NEW_LATER", json={}).status_code == 201
    values = {
        # Berlin's 28 November starts at 27 Nov 23:00 UTC.
        "DX_QUERIED": {"last_query_at": at("2026-11-27T23:30:00")},  # 00:30 local: heard
        "US_STORED": {"last_store_at": at("2026-11-28T14:00:00")},
        "CT_REPORTED": {"last_report_at": at("2026-11-28T22:59:00")},
        "DX_SILENT": {"last_query_at": at("2026-11-26T08:00:00")},
        "LATE_MIDNIGHT": {"last_query_at": at("2026-11-27T22:30:00")},  # 23:30 the day before
        "NEW_LATER": {"created_at": at("2026-11-29T08:00:00")},  # registered after the day
    }
    with hub.db.session() as s:
        s.execute(update(Modality).values(created_at=at("2026-11-01T00:00:00")))
        for ae, change in values.items():
            s.execute(update(Modality).where(col(Modality.ae_title) == ae).values(**change))

    report = run(hub, DAY, tz=BERLIN)
    silent = [d.ae_title for d in report.silent_devices.items]
    assert silent == ["DX_SILENT", "LATE_MIDNIGHT", "MR_NEVER"]
    assert report.silent_devices.items[0].last_query_at == at("2026-11-26T08:00:00")
    assert report.silent_devices.items[0].site == "main"
    # In UTC the 23:30 query falls on the 27th, so on the 28th that device was silent too.
    assert "DX_QUERIED" in [d.ae_title for d in run(hub, DAY).silent_devices.items]


def test_bounds_follow_the_zone_and_daylight_saving() -> None:
    start, end = clock.day_bounds(DAY, BERLIN)
    assert (start, end) == (at("2026-11-27T23:00:00"), at("2026-11-28T23:00:00"))
    # The night the clocks go back (25 October 2026 in Berlin) is 25 hours long.
    start, end = clock.day_bounds(date(2026, 10, 25), BERLIN)
    assert end - start == timedelta(hours=25)
    assert qc.daily_due(BERLIN, at("2026-11-29T05:59:00")) is None  # 06:59 local
    assert qc.daily_due(BERLIN, at("2026-11-29T06:00:00")) == DAY  # 07:00 local
    assert qc.daily_due(BERLIN, at("2026-11-28T23:30:00")) is None  # 00:30 on the 29th


# --- the API ---------------------------------------------------------------------------


def test_api_roles(hub: Hub, client: TestClient) -> None:
    assert client.get("/api/v1/qc", headers={"Authorization": ""}).status_code == 401
    wrong = {"Authorization": "Bearer not-a-key"}
    assert client.get("/api/v1/qc", headers=wrong).status_code == 401
    for refused in ("integration", "frontdesk"):
        key = {"Authorization": f"Bearer {key_for(hub, refused)}"}
        assert client.get("/api/v1/qc", headers=key).status_code == 403, refused
    for role in ("tech", "vet"):
        r = client.get("/api/v1/qc", headers={"Authorization": f"Bearer {key_for(hub, role)}"})
        assert r.status_code == 200, (role, r.text)
    assert client.get("/api/v1/qc").status_code == 200  # admin


def test_api_refuses_a_bad_date_with_422(client: TestClient) -> None:
    for bad in ("2026-13-01", "yesterday", "28.11.2026", "2026-02-30"):
        r = client.get("/api/v1/qc", params={"date": bad})
        assert r.status_code == 422, bad
        assert "date" in r.json()["detail"]


def test_api_shape_lists_and_counts(hub: Hub, client: TestClient) -> None:
    placed = order(client, 1, start="2026-11-28T09:00:00")
    _delivery(hub, "failed", "2026-11-28T12:00:00", "answered 500")
    assert client.put("/api/v1/modalities/DX_SILENT", json={}).status_code == 201
    r = client.get("/api/v1/qc", params={"date": "2026-11-28"})
    assert r.status_code == 200, r.text
    body = r.json()
    lists = (
        "missing_studies",
        "attached_to_check",
        "waiting_studies",
        "failed_deliveries",
        "shares_refused",
        "shares_expired_unused",
        "silent_devices",
    )
    assert set(body) == {"date", "start", "end", "generated_at", "waiting_minutes", "counts"} | set(
        lists
    )
    assert body["date"] == "2026-11-28"
    assert body["waiting_minutes"] == hub.settings.qc_waiting_minutes
    assert body["counts"] == {name: len(body[name]) for name in lists}
    assert [o["order_id"] for o in body["missing_studies"]] == [placed["id"]]
    assert body["missing_studies"][0]["scheduled_start"] == "2026-11-28T09:00:00"
    (failed,) = body["failed_deliveries"]
    assert failed["last_error"] == "answered 500" and failed["source"] == "pims-main"
    # The device was registered today, after the 28th: not silent that day ...
    assert body["silent_devices"] == []
    # ... but it is today (default date), having done nothing.
    today = client.get("/api/v1/qc").json()
    assert today["date"] == clock.local_today(hub.settings.tz).isoformat()
    assert [d["ae_title"] for d in today["silent_devices"]] == ["DX_SILENT"]
