"""Profile positions: the ``if uid`` / ``unless uid`` condition that splits ZDS-1 by its value."""

from __future__ import annotations

import pytest

from adapters.hl7.profile import FieldPath, looks_like_uid


@pytest.mark.parametrize(
    ("value", "uid_shaped"),
    [
        ("1.2.826.0.1.3680043.10.543.9100", True),
        ("1.2.03", True),  # shaped like one (a malformed UID, refused later), not an accession
        ("ACC-9100", False),
        ("12345", False),  # one component: an all-digit accession number
        ("1.2.", False),
        ("", False),
    ],
)
def test_looks_like_uid(value: str, uid_shaped: bool) -> None:
    assert looks_like_uid(value) is uid_shaped


def test_conditions_pick_opposite_values() -> None:
    when_uid = FieldPath.parse("ZDS-1.1 if uid")
    unless_uid = FieldPath.parse("ZDS-1.1 unless uid")
    plain = FieldPath.parse("ZDS-1.1")
    assert (when_uid.segment, when_uid.field, when_uid.component) == ("ZDS", 1, 1)
    assert when_uid.location == unless_uid.location == plain.location == "ZDS^1^1^1^1"
    for value in ("1.2.840.10008.1", "A1001"):
        assert when_uid.accepts(value) != unless_uid.accepts(value)
        assert plain.accepts(value)


@pytest.mark.parametrize("text", ["ZDS-1.1 if text", "ZDS-1.1 uid", "ZDS-1.1if uid"])
def test_an_unknown_condition_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="is not an HL7 position"):
        FieldPath.parse(text)
