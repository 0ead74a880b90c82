"""Profile positions (``if uid``/``unless uid``, a repetition picked by value), the profile
for an MSH-12 version, and profile files with bad ``versions``/``outbound`` refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from adapters.hl7.profile import FieldPath, load_profiles, looks_like_uid
from hub.mappings import MappingError, default_mappings_dir


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


def test_a_repetition_picked_by_a_component_value() -> None:
    chip = FieldPath.parse("PID-3[5=RFID].1")
    assert (chip.field, chip.component, chip.rep_component, chip.rep_value) == (3, 1, 5, "RFID")
    assert FieldPath.parse("PID-3[2].1").repetition == 2


def copy_profiles(tmp_path: Path) -> Path:
    folder = tmp_path / "hl7"
    shutil.copytree(default_mappings_dir() / "hl7", folder)
    return folder


NEW_KEY = "senders: []\n"


@pytest.mark.parametrize(
    ("added", "fault"),
    [
        ('versions: ["2.3"]', "v2.3.yaml: version 2.3 is already served by profile 'default'"),
        ('versions: ["2.6"]', "default.yaml: versions: Value error, HL7 version '2.6'"),
        ('outbound: {version: "3.0"}', "default.yaml: outbound.version"),
        ("outbound: {patient_name: pet}", "default.yaml: outbound.patient_name"),
        ("outbound: {facility: A^B}", "default.yaml: outbound.facility"),
    ],
)
def test_bad_versions_and_outbound_name_the_file_and_entry(
    tmp_path: Path, added: str, fault: str
) -> None:
    folder = copy_profiles(tmp_path)
    default = folder / "default.yaml"
    default.write_text(default.read_text().replace(NEW_KEY, NEW_KEY + added + "\n"))
    with pytest.raises(MappingError) as caught:
        load_profiles(folder)
    assert fault in str(caught.value)


def test_version_picks_a_profile_only_for_senders_nobody_names() -> None:
    profiles = load_profiles(default_mappings_dir() / "hl7")
    assert profiles.match("ANY", version="2.3.1").profile.name == "v2.3"
    assert profiles.match("ANY", version="2.5").profile.name == "default"
    assert (
        profiles.match("ANY", registered={"ANY": "default"}, version="2.3").profile.name == "v2.3"
    )
    pinned = profiles.match("ANY", registered={"ANY": "animal-only"}, version="2.3")
    assert pinned.profile.name == "animal-only"
    assert profiles.match("CLINICWARE", version="2.3").profile.name == "animal-first"
    assert profiles.by_name["animal-first"].outbound.version == "2.3.1"
    assert profiles.default.outbound.version == "2.5"
