"""The shipped species/procedure vocabularies and the loader's refusal of broken files."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.mappings import (
    MappingError,
    Procedure,
    Species,
    default_mappings_dir,
    load_mappings,
)
from tests import order_corpus

DOG = Species("Canis lupus familiaris", "448771007", "SCT", "Canis lupus familiaris")

# Species spellings the test order corpus (tests/order_corpus.py, SPECIES) sends, with
# the SNOMED CT code docs/domain.md section 1 verifies (None: no verified code).
BENCH_SPECIES: dict[str, str | None] = {
    "canine": "448771007", "dog": "448771007", "Canis lupus familiaris": "448771007",
    "feline": "448169003", "cat": "448169003", "Felis catus": "448169003",
    "equine": "35354009", "horse": "35354009", "Equus caballus": "35354009",
    "bovine": "34618005", "cow": "34618005", "Bos taurus": "34618005",
    "caprine": "125097000", "goat": "125097000", "Capra hircus": "125097000",
    "ovine": "125099002", "sheep": "125099002", "Ovis aries": "125099002",
    "guinea pig": "125076001", "Cavia porcellus": "125076001",
    "rabbit": "36571002", "Oryctolagus cuniculus": "36571002",
    "ferret": "449310008", "Mustela putorius furo": "449310008",
    "parrot": None, "African grey parrot": None, "Psittacus erithacus": None,
}  # fmt: skip

# Procedure codes and descriptions of tests/order_corpus.PROCEDURES.
BENCH_PROCEDURES: dict[str, tuple[str, str]] = {
    "XR-THORAX": ("Thorax, 2 views", "DX"),
    "XR-ABDOMEN": ("Abdomen, 2 views", "DX"),
    "XR-PELVIS-HD": ("Pelvis VD (hip dysplasia)", "DX"),
    "XR-STIFLE": ("Stifle, 2 views", "DX"),
    "XR-ELBOW": ("Elbow, 2 views", "DX"),
    "XR-SPINE-TL": ("Thoracolumbar spine", "DX"),
    "XR-SKULL": ("Skull / bullae", "DX"),
    "XR-EQ-FETLOCK": ("Fetlock, 4 views", "DX"),
    "XR-EQ-HOOF": ("Hoof / navicular series", "DX"),
    "XR-EQ-CARPUS": ("Carpus, 4 views", "DX"),
    "XR-EQ-PREPURCH": ("Pre-purchase series", "DX"),
    "US-ABDOMEN": ("Abdominal ultrasound", "US"),
    "US-ECHO": ("Echocardiography", "US"),
    "US-PREG": ("Pregnancy check", "US"),
    "US-THORAX": ("Thoracic ultrasound (pleural effusion)", "US"),
    "US-EQ-TENDON": ("Flexor tendon ultrasound", "US"),
    "US-EQ-REPRO": ("Reproductive ultrasound (mare)", "US"),
    "CT-HEAD": ("Head / nasal cavity", "CT"),
    "CT-THORAX": ("Thorax, metastasis check", "CT"),
    "CT-ABDOMEN": ("Abdomen with contrast", "CT"),
    "CT-ELBOW": ("Elbows (FCP)", "CT"),
    "CT-SPINE": ("Spine", "CT"),
    "MR-BRAIN": ("Brain", "MR"),
    "MR-SPINE-C": ("Cervical spine", "MR"),
    "MR-SPINE-TL": ("Thoracolumbar spine", "MR"),
    "MR-STIFLE": ("Stifle", "MR"),
    "IO-FULLMOUTH": ("Full-mouth dental radiographs", "IO"),
    "IO-SINGLE": ("Single tooth", "IO"),
    "IO-MAXILLA": ("Maxillary premolars", "IO"),
}


@pytest.fixture(scope="module")
def shipped():
    return load_mappings()


# --- shipped species ------------------------------------------------------------


@pytest.mark.parametrize("text", ["dog", "Canine", "DOG ", "Canis lupus familiaris", "448771007"])
def test_dog_spellings_resolve_to_one_entry(shipped, text):
    assert shipped.species.resolve(text) == DOG


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("cat", "448169003"),
        ("Feline", "448169003"),
        ("horse", "35354009"),
        ("Pferd", "35354009"),
        ("K-9", "448771007"),
        ("k_9", "448771007"),
        ("  guinea   pig ", "125076001"),
        ("Guinea-Pig", "125076001"),
        ("CHÈVRE", "125097000"),
        ("chevre", "125097000"),
        ("hurón", "449310008"),
        ("Canis", "388490000"),
    ],
)
def test_synonyms_languages_and_normalisation(shipped, text, code):
    assert shipped.species.resolve(text).code == code


def test_unknown_species_kept_as_free_text(shipped):
    assert shipped.species.resolve("  Axolotl ") == Species("Axolotl", None, None, None)


@pytest.mark.parametrize("text", [None, "", "   "])
def test_blank_species_is_none(shipped, text):
    assert shipped.species.resolve(text) is None


def test_budgie_has_description_but_no_code(shipped):
    assert shipped.species.resolve("budgie") == Species("Budgerigar", None, None, None)
    assert shipped.species.resolve("Wellensittich").description == "Budgerigar"


def test_by_code(shipped):
    assert shipped.species.by_code("448771007") == DOG
    assert shipped.species.by_code("35354009").meaning == "Equus caballus"
    assert shipped.species.by_code("000000") is None


@pytest.mark.parametrize(("text", "code"), BENCH_SPECIES.items())
def test_bench_species_resolve(shipped, text, code):
    species = shipped.species.resolve(text)
    assert species.code == code
    if code is not None:
        assert species.scheme == "SCT"
        assert species.description == species.meaning


def test_species_codes_match_dicom_cid_7454(shipped):
    """Every code we write must be in CID 7454 with exactly its code meaning."""
    from pydicom.sr._cid_dict import cid_concepts
    from pydicom.sr._concepts_dict import concepts

    cid = {
        code: meaning
        for keyword in cid_concepts[7454]["SCT"]
        for code, (meaning, _cids) in concepts["SCT"][keyword].items()
    }
    coded = [s for s in shipped.species if s.code]
    assert len(coded) >= 18
    for species in coded:
        assert species.scheme == "SCT"
        assert cid.get(species.code) == species.meaning, species


# --- shipped procedures -----------------------------------------------------------


@pytest.mark.parametrize(("code", "expected"), BENCH_PROCEDURES.items())
def test_bench_procedures_in_catalogue(shipped, code, expected):
    procedure = shipped.procedures.get(code)
    assert procedure is not None
    assert (procedure.description, procedure.modality) == expected


def test_procedure_lookup_ignores_case(shipped):
    assert shipped.procedures.get("xr-thorax") == Procedure(
        "XR-THORAX", "Thorax, 2 views", "DX", None, "THORAX"
    )
    assert shipped.procedures.get(None) is None
    assert shipped.procedures.get("NO-SUCH") is None


def test_matches_the_order_corpus_vocabulary(shipped):
    """Guards against the corpus vocabulary moving on without this test's copy."""
    for items in order_corpus.PROCEDURES.values():
        for code, description, _minutes in items:
            assert shipped.procedures.get(code).description == description
    for key, (description, _code, scientific, _w, _b) in order_corpus.SPECIES.items():
        for text in (key, description, scientific):
            assert text in BENCH_SPECIES or text.lower() in BENCH_SPECIES, text


def test_default_dir_is_the_package(shipped):
    assert default_mappings_dir() == shipped.root
    assert (shipped.root / "species.yaml").is_file()


# --- broken files -------------------------------------------------------------------

GOOD_SPECIES = """
species:
  - description: Canis lupus familiaris
    code: "448771007"
    scheme: SCT
    meaning: Canis lupus familiaris
    synonyms: [dog]
  - description: Budgerigar
    synonyms: [budgie]
"""
GOOD_PROCEDURES = """
procedures:
  XR-THORAX: {description: "Thorax, 2 views", modality: DX, body_part: THORAX}
"""


def write(tmp_path: Path, species: str = GOOD_SPECIES, procedures: str = GOOD_PROCEDURES) -> Path:
    (tmp_path / "species.yaml").write_text(species, encoding="utf-8")
    (tmp_path / "procedures.yaml").write_text(procedures, encoding="utf-8")
    return tmp_path


def test_good_temp_dir_loads(tmp_path):
    mappings = load_mappings(write(tmp_path))
    assert mappings.root == tmp_path
    assert mappings.species.resolve("DOG") == DOG
    assert len(mappings.species) == 2
    assert len(mappings.procedures) == 1


def test_unquoted_numeric_code_is_accepted(tmp_path):
    mappings = load_mappings(write(tmp_path, GOOD_SPECIES.replace('"448771007"', "448771007")))
    assert mappings.species.by_code("448771007") == DOG


@pytest.mark.parametrize(
    ("species", "procedures", "fragments"),
    [
        ("species: [\n  - {description: x\n", GOOD_PROCEDURES, ["species.yaml", "malformed YAML"]),
        (GOOD_SPECIES, "procedures:\n  A: {description: a}\n  A: {description: b}\n",
         ["procedures.yaml", "duplicate key 'A'"]),
        ("- just a list\n", GOOD_PROCEDURES, ["species.yaml", "'species' key"]),
        ("species:\n  - synonyms: [dog]\n", GOOD_PROCEDURES,
         ["species.yaml", "species entry 1", "description", "Field required"]),
        (GOOD_SPECIES + "  - description: Cat\n    synonyms: [Dog]\n", GOOD_PROCEDURES,
         ["species.yaml", "'Dog'", "'Cat'", "'Canis lupus familiaris'"]),
        (GOOD_SPECIES + "  - description: budgie\n", GOOD_PROCEDURES,
         ["species.yaml", "'budgie'", "'Budgerigar'"]),
        (GOOD_SPECIES + '  - {description: X, code: "448771007", scheme: SCT, meaning: X}\n',
         GOOD_PROCEDURES, ["species.yaml", "448771007", "'X'"]),
        (GOOD_SPECIES + '  - {description: Cat, code: "448169003"}\n', GOOD_PROCEDURES,
         ["species.yaml", "species entry 3 ('Cat')", "scheme and meaning"]),
        (GOOD_SPECIES + "  - {description: Cat, code: cat1, scheme: SCT, meaning: C}\n",
         GOOD_PROCEDURES, ["species.yaml", "'Cat'", "code"]),
        (GOOD_SPECIES + "  - {description: Cat, colour: black}\n", GOOD_PROCEDURES,
         ["species.yaml", "'Cat'", "colour"]),
        (GOOD_SPECIES, "procedures:\n  XR-THORAX: {description: Thorax, modality: XRAY}\n",
         ["procedures.yaml", "'XR-THORAX'", "modality", "XRAY"]),
        (GOOD_SPECIES, "procedures:\n  XR-THORAX: {modality: DX}\n",
         ["procedures.yaml", "'XR-THORAX'", "description"]),
        (GOOD_SPECIES, "procedures:\n  XR: {description: x, body_part: thorax}\n",
         ["procedures.yaml", "'XR'", "body_part"]),
        (GOOD_SPECIES, "procedures:\n  XR: {description: x, station_ae_title: AE_TITLE_TOO_LONG}\n",
         ["procedures.yaml", "'XR'", "station_ae_title"]),
        (GOOD_SPECIES, "procedures:\n  XR-A: {description: a}\n  xr-a: {description: b}\n",
         ["procedures.yaml", "differ only in case"]),
        (GOOD_SPECIES, "procedures:\n  A-CODE-LONGER-THAN-16: {description: a}\n",
         ["procedures.yaml", "A-CODE-LONGER-THAN-16", "1-16"]),
    ],
    ids=[
        "broken-yaml", "duplicate-key", "not-a-mapping", "missing-description",
        "synonym-in-two-species", "description-clash", "duplicate-code", "code-without-meaning",
        "bad-code", "unknown-field", "unknown-modality", "procedure-missing-description",
        "bad-body-part", "long-ae-title", "codes-differ-in-case", "long-code",
    ],
)  # fmt: skip
def test_malformed_files_are_refused(tmp_path, species, procedures, fragments):
    with pytest.raises(MappingError) as caught:
        load_mappings(write(tmp_path, species, procedures))
    for fragment in fragments:
        assert fragment in str(caught.value)


def test_missing_file_is_named(tmp_path):
    write(tmp_path)
    (tmp_path / "procedures.yaml").unlink()
    with pytest.raises(MappingError, match=r"procedures\.yaml"):
        load_mappings(tmp_path)
