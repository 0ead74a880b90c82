"""The C-FIND encoder shim: cached bytes out as they are, anything else through pydicom,
and a start-up check that refuses a pynetdicom it was not made for."""

from __future__ import annotations

import logging
import types
import zlib
from io import BytesIO
from typing import Any

import pynetdicom.service_class
import pytest
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pynetdicom.dsutils import encode as pynetdicom_encode

from hub.context import Hub
from tests.worklist_scu import accessions, find, identifier, order, place, running_door
from worklist import charset, encoded
from worklist.encoded import EncodedIdentifier, PassEncoded, incompatibility, install
from worklist.items import T, encode

C_FIND_SCP = pynetdicom.service_class.ServiceClass._c_find_scp

ITEM = {
    T["AccessionNumber"]: ("SH", "A1"),
    T["PatientName"]: ("PN", "Müller^Rex"),
    T["PatientID"]: ("LO", "P-1"),
    T["ScheduledProcedureStepSequence"]: (
        "SQ",
        [{T["Modality"]: ("CS", "DX"), T["ScheduledStationAETitle"]: ("AE", "DX_ROOM1")}],
    ),
}


def cached(implicit: bool) -> bytes:
    return encode(ITEM, None, charset.UTF8, implicit)


def decode(data: bytes, implicit: bool, little: bool = True) -> dict[str, Any]:
    ds = read_dataset(BytesIO(data), is_implicit_VR=implicit, is_little_endian=little)
    ds.decode()
    return ds.to_json_dict()


class Recorder:
    """pynetdicom's encoder, noting every call it gets."""

    def __init__(self) -> None:
        self.calls: list[tuple[Dataset, bool, bool, bool]] = []

    def __call__(
        self, ds: Dataset, is_implicit_vr: bool, is_little_endian: bool, deflated: bool = False
    ) -> bytes | None:
        self.calls.append((ds, is_implicit_vr, is_little_endian, deflated))
        return pynetdicom_encode(ds, is_implicit_vr, is_little_endian, deflated)


@pytest.mark.parametrize("implicit", [True, False])
def test_cached_bytes_go_out_as_they_are(implicit: bool) -> None:
    original = Recorder()
    data = cached(implicit)
    sent = PassEncoded(original)(EncodedIdentifier(data, implicit), implicit, True, False)
    assert sent is data
    assert original.calls == []  # pydicom never saw it


@pytest.mark.parametrize(
    ("cached_implicit", "implicit", "little", "deflated"),
    [
        (False, True, True, False),  # explicit cached, implicit asked
        (True, False, True, False),  # implicit cached, explicit asked
        (False, False, False, False),  # big endian
        (False, False, True, True),  # deflated explicit little endian
    ],
)
def test_other_transfer_syntaxes_are_encoded_by_pydicom(
    cached_implicit: bool, implicit: bool, little: bool, deflated: bool
) -> None:
    original = Recorder()
    data = cached(cached_implicit)
    sent = PassEncoded(original)(
        EncodedIdentifier(data, cached_implicit), implicit, little, deflated
    )
    assert sent is not None and sent != data
    assert len(original.calls) == 1 and original.calls[0][1:] == (implicit, little, deflated)
    if deflated:
        sent = zlib.decompress(sent, -zlib.MAX_WBITS)
    assert decode(sent, implicit, little) == decode(data, cached_implicit)


def test_plain_data_sets_pass_through_unchanged() -> None:
    original = Recorder()
    ds = Dataset()
    ds.PatientID = "P-1"
    sent = PassEncoded(original)(ds, True, True, False)
    assert original.calls == [(ds, True, True, False)]
    assert sent == pynetdicom_encode(ds, True, True, False)


def test_decoded_answer_is_written_back_byte_for_byte() -> None:
    """The fallback path: a data set of raw elements, which pydicom writes unchanged."""
    for implicit in (True, False):
        data = cached(implicit)
        assert (
            pynetdicom_encode(EncodedIdentifier(data, implicit).decoded(), implicit, True) == data
        )


def test_check_accepts_the_installed_pynetdicom() -> None:
    assert incompatibility(pynetdicom.service_class.encode, C_FIND_SCP) is None
    assert incompatibility(PassEncoded(pynetdicom_encode), C_FIND_SCP) is None


def _three_parameters(ds: Dataset, is_implicit_vr: bool, is_little_endian: bool) -> bytes | None:
    return pynetdicom_encode(ds, is_implicit_vr, is_little_endian)


def _renamed(ds: Dataset, implicit: bool, little: bool, deflated: bool = False) -> bytes | None:
    return pynetdicom_encode(ds, implicit, little, deflated)


def _always_explicit(
    ds: Dataset, is_implicit_vr: bool, is_little_endian: bool, deflated: bool = False
) -> bytes | None:
    return pynetdicom_encode(ds, False, is_little_endian, deflated)


def _c_find_scp_without_encode(self: object, req: object, context: object) -> None:
    return None


@pytest.mark.parametrize(
    ("encoder", "c_find_scp", "reason"),
    [
        (_three_parameters, C_FIND_SCP, "is not encode"),
        (_renamed, C_FIND_SCP, "is not encode"),
        (None, C_FIND_SCP, "missing"),
        (_always_explicit, C_FIND_SCP, "other bytes"),
        (pynetdicom_encode, _c_find_scp_without_encode, "no longer calls"),
    ],
)
def test_check_detects_an_incompatible_pynetdicom(
    encoder: object, c_find_scp: object, reason: str
) -> None:
    found = incompatibility(encoder, c_find_scp)
    assert found is not None and reason in found


def test_install_leaves_an_incompatible_module_alone(caplog: pytest.LogCaptureFixture) -> None:
    module = types.ModuleType("fake_service_class")
    module.encode = _three_parameters  # type: ignore[attr-defined]
    with caplog.at_level(logging.WARNING, logger="worklist.encoded"):
        assert install(module, C_FIND_SCP) is False
    assert module.encode is _three_parameters  # type: ignore[attr-defined]
    record = next(r for r in caplog.records if r.name == "worklist.encoded")
    assert "is not encode" in record.reason  # type: ignore[attr-defined]


def test_install_wraps_once() -> None:
    module = types.ModuleType("fake_service_class")
    module.encode = pynetdicom_encode  # type: ignore[attr-defined]
    assert install(module, C_FIND_SCP) is True
    shim = module.encode  # type: ignore[attr-defined]
    assert isinstance(shim, PassEncoded) and shim.original is pynetdicom_encode
    assert install(module, C_FIND_SCP) is True
    assert module.encode is shim  # type: ignore[attr-defined]


def test_without_the_shim_answers_are_the_same(hub: Hub, monkeypatch: pytest.MonkeyPatch) -> None:
    """An incompatible pynetdicom costs speed, never answers."""
    place(hub, [order(1), order(2, patient={"name": "Łatka"})])
    query = identifier(AccessionNumber="", PatientName="", sps={"Modality": ""})
    with running_door(hub) as port:
        fast, fast_final, _ = find(port, query)
    monkeypatch.setattr(encoded, "install", lambda *args, **kwargs: False)
    with running_door(hub) as port:
        slow, slow_final, _ = find(port, query)
    assert fast_final == slow_final == 0x0000
    assert accessions(fast) == accessions(slow) == {"A1", "A2"}
    assert [a.to_json_dict() for a in fast] == [a.to_json_dict() for a in slow]
