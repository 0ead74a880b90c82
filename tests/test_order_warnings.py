"""An order that is probably wrong is still taken, and the answer says what looks wrong:
a species or procedure code the vocabularies do not know, a weight implausible for
the species (mappings/species.yaml ``weight_kg``). Over REST in ``warnings``, over
HL7 as ERR of severity W in the ACK and in the message log."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from hub.context import Hub
from hub.mappings import MappingError, load_mappings
from hub.models import InboundMessage
from tests.factories import REX, rex
from tests.harness import make_settings, sqlite_api
from tests.mllp_client import DoorThread, ack_segments, sample


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with sqlite_api(tmp_path_factory.mktemp("warnings")) as client:
        yield client


def order(placer: str, **patient: object) -> dict:
    body = rex(placer_order_number=placer, accession_number=None)
    body["patient"] = {**REX["patient"], **patient}
    return body


def test_a_clean_order_has_no_warnings(api: TestClient) -> None:
    r = api.post("/api/v1/orders", json=order("W-CLEAN", species="dog", weight_kg=31.5))
    assert r.status_code == 201 and r.json()["warnings"] == []


def test_unknown_species_and_procedure_are_warned_and_the_order_kept(api: TestClient) -> None:
    body = order("W-UNKNOWN", species="Axolotl")
    body["procedure"] = {"code": "XR-WHOLE-AXOLOTL"}
    r = api.post("/api/v1/orders", json=body)
    assert r.status_code == 201, r.text
    out = r.json()
    assert [w["field"] for w in out["warnings"]] == ["patient.species", "procedure.code"]
    assert "'Axolotl'" in out["warnings"][0]["message"]
    assert "'XR-WHOLE-AXOLOTL'" in out["warnings"][1]["message"]
    stored = api.get(f"/api/v1/orders/{out['id']}").json()
    assert stored["patient"]["species"] == "Axolotl" and stored["patient"]["species_code"] is None
    assert "warnings" not in stored
    # The identical resend (200) is warned about the same way.
    again = api.post("/api/v1/orders", json=body)
    assert again.status_code == 200 and again.json()["warnings"] == out["warnings"]


@pytest.mark.parametrize(
    ("species", "weight", "warned"),
    [
        ("dog", 69.5, False),  # a large dog
        ("dog", 154.0, True),  # 70 kg sent in pounds
        ("kitten", 0.09, False),  # a newborn, spelled as a synonym
        ("cat", 4500.0, True),  # grams for kilograms
        ("budgie", 35.0, True),
        ("Axolotl", 900.0, False),  # no range for an unknown species: only the species warned
    ],
)
def test_implausible_weight_for_the_species(
    api: TestClient, species: str, weight: float, warned: bool
) -> None:
    body = order(f"W-{species}-{weight}", species=species, weight_kg=weight)
    r = api.post("/api/v1/orders", json=body)
    assert r.status_code == 201, r.text
    weight_warnings = [w for w in r.json()["warnings"] if w["field"] == "patient.weight_kg"]
    assert bool(weight_warnings) is warned
    if warned:
        assert f"{weight:g} kg" in weight_warnings[0]["message"]
        assert "check the unit" in weight_warnings[0]["message"]


def test_a_reversed_weight_range_stops_the_mappings_from_loading(tmp_path: Path) -> None:
    shipped = load_mappings()
    for f in shipped.root.iterdir():
        if f.is_file():
            (tmp_path / f.name).write_bytes(f.read_bytes())
    species = tmp_path / "species.yaml"
    species.write_text(
        species.read_text(encoding="utf-8").replace("[0.08, 110]", "[110, 0.08]", 1),
        encoding="utf-8",
    )
    with pytest.raises(MappingError, match="weight_kg"):
        load_mappings(tmp_path)


def test_hl7_orders_get_the_same_warnings_in_the_ack_and_the_message_log(tmp_path: Path) -> None:
    hub = Hub.open(make_settings(tmp_path, f"sqlite:///{tmp_path / 'vethub.db'}"), upgrade=True)
    door = DoorThread(hub)
    try:
        # 32.5 kg sent as 325 (a slipped decimal point) for a dog, and an unknown procedure.
        msg = sample("orm_o01_nw_v251_utf8.hl7")
        msg = msg.replace(b"||32.5|kg", b"||325|kg").replace(b"XR-THORAX^", b"XR-NOPE^")
        with door.client() as c:
            ack = ack_segments(c.send(msg))
        assert ack["MSA"][1] == "AA"  # accepted all the same
        assert ack["ERR"][4] == "W" and "procedure.code" in ack["ERR"][8]
        with hub.db.read_session() as s:
            row = s.scalars(select(InboundMessage)).one()
        assert row.outcome == "AA" and row.order_id is not None
        assert "'XR-NOPE'" in (row.error or "") and "325 kg is implausible" in (row.error or "")
    finally:
        door.stop()
        hub.close()
