"""Messages in the console (``/console/messages``, admin): the HL7 log searchable,
a message's page with segments and fields labelled and its ACK, Reprocess through
the HL7 adapter's API route with the session and CSRF header; the display
splitter on its own; roles and escaping. Both databases."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from fastapi.testclient import TestClient

from hub.console import hl7view
from hub.context import Hub
from hub.services import messages
from tests.test_console_deliveries import EVIL, csrf, nav_links, signed_in

HL7 = Path(__file__).parent / "hl7_messages"
ORM_CA = (HL7 / "orm_o01_ca.hl7").read_text()
ACK = (
    "MSH|^~\\&|VETHUB|HAPPYPAWS|VETPMS|HAPPYPAWS|20261127100001||ACK^O01|A1|P|2.5.1\r"
    "MSA|AE|PMS000044"
)


def log(hub: Hub, raw: str, outcome: str = "AA", **values: object) -> int:
    row = {
        "received_at": datetime.now(UTC),
        "sender": "VETPMS",
        "facility": "HAPPYPAWS",
        "control_id": "PMS000044",
        "type": "ORM^O01",
        "version": "2.5.1",
        "charset": "UNICODE UTF-8",
        "outcome": outcome,
        "raw": raw,
        "ack": ACK,
        **values,
    }
    with hub.db.session() as s:
        return messages.record(s, row)


def test_the_display_splitter_labels_fields_and_components() -> None:
    segs, cut = hl7view.segments(ORM_CA)
    assert not cut and [s.name for s in segs] == ["MSH", "PID", "ORC", "OBR"]
    msh = {f.label: f for f in segs[0].fields}
    assert msh["MSH-1"].value == "|" and msh["MSH-2"].value == "^~\\&"
    assert msh["MSH-9"].value == "ORM^O01^ORM_O01" and msh["MSH-10"].value == "PMS000044"
    pid = {f.label: f for f in segs[1].fields}
    assert [(c.label, c.value) for c in pid["PID-5"].repetitions[0]] == [
        ("PID-5.1", "Müller"),
        ("PID-5.2", "Rex"),
    ]
    assert "PID-2" not in pid  # empty fields are left out, numbers kept
    # Separators come from MSH-1/MSH-2, whatever the sender chose.
    custom, _ = hl7view.segments((HL7 / "orm_o01_custom_encoding.hl7").read_text())
    pid = {f.label: f for f in custom[1].fields}
    assert [c.value for c in pid["PID-5"].repetitions[0]] == ["Côté", "Filou"]
    reps, _ = hl7view.segments("MSH|^~\\&|A\rPID|1||X^^^A~Y^^^B")
    assert [
        r[0].value for r in next(f for f in reps[1].fields if f.label == "PID-3").repetitions
    ] == ["X", "Y"]
    assert hl7view.segments("") == ([], False)
    assert hl7view.segments("garbage without a header")[0][0].name == "garbage without a header"[:8]


def test_an_admin_searches_the_log_and_reads_a_message(hub: Hub, client: TestClient) -> None:
    ok = log(hub, ORM_CA)
    evil = log(
        hub,
        ORM_CA.replace("Müller^Rex", f"Müller^{EVIL}"),
        outcome="AR",
        sender="OTHERPMS",
        error=f"bad {EVIL}",
        error_location="PID-5",
    )
    admin = signed_in(hub, client, "admin")
    assert "/console/messages" in nav_links(admin.get("/console").text)
    text = admin.get("/console/messages").text
    assert f'id="message-{ok}"' in text and f'id="message-{evil}"' in text
    assert EVIL not in text and "bad &lt;script&gt;" in text
    assert 'hx-trigger="every 15s"' in text
    only = admin.get("/console/messages", params={"outcome": "AR"}).text
    assert f'id="message-{evil}"' in only and f'id="message-{ok}"' not in only
    by_sender = admin.get("/console/messages", params={"sender": "VETPMS", "type": "orm^o01"})
    assert f'id="message-{ok}"' in by_sender.text and f'id="message-{evil}"' not in by_sender.text
    assert admin.get("/console/messages", params={"date": "nope"}).status_code == 400
    page = admin.get(f"/console/messages/{evil}").text
    assert ">PID-5<" in page and ">PID-5.2<" in page and ">MSH-10<" in page
    assert "ACK sent" in page and ">MSA-1<" in page
    assert EVIL not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert f'hx-post="/api/v1/messages/{evil}/reprocess"' in page
    assert admin.get("/console/messages/999999").status_code == 404


def test_reprocess_runs_through_the_adapters_route_with_the_session(
    hub: Hub, client: TestClient
) -> None:
    first = log(hub, ORM_CA, outcome="AE")
    admin = signed_in(hub, client, "admin", "ada")
    assert admin.post(f"/api/v1/messages/{first}/reprocess").status_code == 403  # no CSRF
    r = admin.post(f"/api/v1/messages/{first}/reprocess", headers={"X-CSRF-Token": csrf(admin)})
    assert r.status_code == 201, r.text
    again = r.json()
    assert again["reprocess_of"] == first
    page = admin.get(f"/console/messages/{again['id']}").text
    assert f'href="/console/messages/{first}"' in page and "Reprocessing of" in page


def test_only_admins_open_messages(hub: Hub, client: TestClient) -> None:
    first = log(hub, ORM_CA)
    for role in ("frontdesk", "tech", "vet"):
        browser = signed_in(hub, client, role)
        assert "/console/messages" not in nav_links(browser.get("/console").text)
        assert browser.get("/console/messages").status_code == 403
        assert browser.get(f"/console/messages/{first}").status_code == 403
        r = browser.post(
            f"/api/v1/messages/{first}/reprocess", headers={"X-CSRF-Token": csrf(browser)}
        )
        assert r.status_code == 403
