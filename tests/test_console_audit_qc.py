"""Audit (admin) and Daily QC (tech, vet, admin) in the console, through the app with
signed-in sessions on SQLite and PostgreSQL: filters, paging, the date picker,
links to orders and deliveries, roles, escaping."""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta

from fastapi.testclient import TestClient

from hub.context import Hub
from hub.models import Delivery
from hub.services import events
from tests.factories import rex
from tests.test_console_deliveries import EVIL, nav_links, signed_in


def test_the_audit_log_filters_by_action_target_and_actor_and_pages(
    hub: Hub, client: TestClient
) -> None:
    with hub.db.session() as s:
        for i in range(120):
            events.audit(s, "user:9:ada", "view", "study", f"1.2.{i}")
        events.audit(s, "key:4:pims", "cancel", "order", "77", {"reason": EVIL})
        events.audit(s, "user:5:bada", "view", "study", "1.2.999")
    admin = signed_in(hub, client, "admin")
    assert "/console/audit" in nav_links(admin.get("/console").text)
    text = admin.get("/console/audit").text
    assert "key:4:pims" in text and EVIL not in text and "&lt;script&gt;" in text
    older = re.search(r'href="(/console/audit\?cursor=[^"]+)"', text)
    assert older is not None  # 100 a page
    assert ">1.2.99<" in text and ">1.2.0<" not in text
    rest = admin.get(older.group(1).replace("&amp;", "&")).text
    assert ">1.2.0<" in rest and ">1.2.99<" not in rest and "Older entries" not in rest
    by_actor = admin.get("/console/audit", params={"actor": "ada"}).text
    assert "user:9:ada" in by_actor and "bada" not in by_actor and "pims" not in by_actor
    whole = admin.get("/console/audit", params={"actor": "user:5:bada"}).text
    assert whole.count("<tr>") - 1 == 1
    cancel = admin.get("/console/audit", params={"action": "cancel", "target_id": "77"}).text
    assert cancel.count("<tr>") - 1 == 1 and "key:4:pims" in cancel
    none = admin.get("/console/audit", params={"target_id": "nothing"}).text
    assert "No entries match." in none
    bad = admin.get("/console/audit", params={"cursor": "garbage"})
    assert bad.status_code == 400
    # The service's actor filter takes LIKE wildcards literally.
    assert admin.get("/console/audit", params={"actor": "%"}).text.count("<tr>") == 0


def test_only_admins_open_the_audit_log(hub: Hub, client: TestClient) -> None:
    for role in ("frontdesk", "tech", "vet"):
        browser = signed_in(hub, client, role)
        assert "/console/audit" not in nav_links(browser.get("/console").text)
        assert browser.get("/console/audit").status_code == 403


def test_daily_qc_lists_a_missed_order_and_a_failed_delivery_with_links(
    hub: Hub, client: TestClient
) -> None:
    yesterday = (datetime.now() - timedelta(days=1)).replace(hour=9, minute=0, second=0)
    order = client.post(
        "/api/v1/orders",
        json=rex(scheduled_start=yesterday.isoformat(), patient={**rex()["patient"], "name": EVIL}),
    ).json()
    with hub.db.session() as s:
        s.add(
            Delivery(
                uuid=str(uuid.uuid4()),
                source="pims-main",
                kind="webhook",
                event_kind="order.completed",
                outbox_event_id=1,
                order_id=order["id"],
                status="failed",
                attempts=20,
                last_error="HTTP 500 from the PIMS",
            )
        )
    vet = signed_in(hub, client, "vet")
    assert "/console/qc" in nav_links(vet.get("/console").text)
    day = yesterday.date().isoformat()
    r = vet.get("/console/qc", params={"date": day})
    assert r.status_code == 200
    text = r.text
    assert f"Daily QC, {day}" in text and f'value="{day}"' in text
    assert "Orders whose day passed without images (1)" in text
    assert f'href="/console/orders/{order["id"]}"' in text
    assert EVIL not in text and "&lt;script&gt;" in text
    assert "HTTP 500 from the PIMS" not in text  # it failed today, not yesterday
    today = vet.get("/console/qc").text
    assert "(today)" in today and "HTTP 500 from the PIMS" in today
    assert "/console/deliveries?source=pims-main" not in today  # a vet does not retry
    admin = signed_in(hub, client, "admin")
    assert "/console/deliveries?source=pims-main" in admin.get("/console/qc").text
    poll = vet.get("/console/qc", headers={"HX-Request": "true"})
    assert "<html" not in poll.text and "Failed deliveries (1)" in poll.text
    assert vet.get("/console/qc", params={"date": "2026-02-30"}).status_code == 400


def test_frontdesk_does_not_open_daily_qc(hub: Hub, client: TestClient) -> None:
    browser = signed_in(hub, client, "frontdesk")
    assert "/console/qc" not in nav_links(browser.get("/console").text)
    assert browser.get("/console/qc").status_code == 403
