"""A realistic, seeded corpus of veterinary orders for the tests, and its wire forms.

Vendored from the team's benchmark harness so the repository stands alone:
the same vocabulary and generator (three sites, eleven stations, ten species
in several spellings, owners with non-ASCII names), the order as an HL7 v2.5.1
ORM^O01, and the order as a DCMTK ``wlmscpfs`` worklist file. ``generate`` is
deterministic: the same seed and day give the same orders.
"""

from __future__ import annotations

import datetime as _dt
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom.sop_class import ModalityWorklistInformationFind  # type: ignore[attr-defined]

# -- vocabulary ------------------------------------------------------------------

# site -> (source system, [(station AE title, modality), ...])
SITES: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "main": (
        "pims-main",
        [
            ("DX_ROOM1", "DX"),
            ("DX_ROOM2", "DX"),
            ("US_ROOM1", "US"),
            ("CT_MAIN", "CT"),
            ("MR_MAIN", "MR"),
            ("IO_DENTAL1", "IO"),
        ],
    ),
    "north": (
        "pims-main",
        [
            ("DX_NORTH", "DX"),
            ("US_NORTH", "US"),
            ("IO_NORTH", "IO"),
        ],
    ),
    "equine": (
        "equine-pims",
        [
            ("DX_EQUINE", "DX"),
            ("US_EQUINE", "US"),
        ],
    ),
}

STATIONS: list[tuple[str, str, str]] = [
    (ae, mod, site) for site, (_, st) in SITES.items() for ae, mod in st
]

# modality -> [(code, description, minutes)]
PROCEDURES: dict[str, list[tuple[str, str, int]]] = {
    "DX": [
        ("XR-THORAX", "Thorax, 2 views", 15),
        ("XR-ABDOMEN", "Abdomen, 2 views", 15),
        ("XR-PELVIS-HD", "Pelvis VD (hip dysplasia)", 20),
        ("XR-STIFLE", "Stifle, 2 views", 15),
        ("XR-ELBOW", "Elbow, 2 views", 15),
        ("XR-SPINE-TL", "Thoracolumbar spine", 20),
        ("XR-SKULL", "Skull / bullae", 20),
    ],
    "DX_EQUINE": [
        ("XR-EQ-FETLOCK", "Fetlock, 4 views", 30),
        ("XR-EQ-HOOF", "Hoof / navicular series", 30),
        ("XR-EQ-CARPUS", "Carpus, 4 views", 30),
        ("XR-EQ-PREPURCH", "Pre-purchase series", 60),
    ],
    "US": [
        ("US-ABDOMEN", "Abdominal ultrasound", 30),
        ("US-ECHO", "Echocardiography", 45),
        ("US-PREG", "Pregnancy check", 15),
        ("US-THORAX", "Thoracic ultrasound (pleural effusion)", 20),
    ],
    "US_EQUINE": [
        ("US-EQ-TENDON", "Flexor tendon ultrasound", 30),
        ("US-EQ-REPRO", "Reproductive ultrasound (mare)", 20),
    ],
    "CT": [
        ("CT-HEAD", "Head / nasal cavity", 30),
        ("CT-THORAX", "Thorax, metastasis check", 30),
        ("CT-ABDOMEN", "Abdomen with contrast", 45),
        ("CT-ELBOW", "Elbows (FCP)", 30),
        ("CT-SPINE", "Spine", 45),
    ],
    "MR": [
        ("MR-BRAIN", "Brain", 60),
        ("MR-SPINE-C", "Cervical spine", 60),
        ("MR-SPINE-TL", "Thoracolumbar spine", 60),
        ("MR-STIFLE", "Stifle", 45),
    ],
    "IO": [
        ("IO-FULLMOUTH", "Full-mouth dental radiographs", 30),
        ("IO-SINGLE", "Single tooth", 10),
        ("IO-MAXILLA", "Maxillary premolars", 15),
    ],
}

# canonical species -> (DICOM description, SNOMED CT code or None,
#                       scientific name, weight range kg, breeds)
SPECIES: dict[str, tuple[str, str | None, str, tuple[float, float], list[str]]] = {
    "canine": (
        "Canine",
        "448771007",
        "Canis lupus familiaris",
        (2.0, 62.0),
        [
            "Labrador Retriever",
            "German Shepherd",
            "French Bulldog",
            "Golden Retriever",
            "Dachshund",
            "Border Collie",
            "Jack Russell Terrier",
            "Beagle",
            "Mixed breed",
            "Bernese Mountain Dog",
            "Cavalier King Charles Spaniel",
            "Shih Tzu",
            "Chihuahua",
            "Boxer",
            "Rottweiler",
            "Pug",
            "Yorkshire Terrier",
            "Australian Shepherd",
            "Perro de Agua Español",
            "Münsterländer",
        ],
    ),
    "feline": (
        "Feline",
        "448169003",
        "Felis catus",
        (2.0, 9.5),
        [
            "Domestic Shorthair",
            "Domestic Longhair",
            "Maine Coon",
            "British Shorthair",
            "Siamese",
            "Persian",
            "Bengal",
            "Norwegian Forest Cat",
            "Ragdoll",
            "Sphynx",
        ],
    ),
    "equine": (
        "Equine",
        "35354009",
        "Equus caballus",
        (150.0, 750.0),
        [
            "Warmblood",
            "Thoroughbred",
            "Quarter Horse",
            "Arabian",
            "Icelandic Horse",
            "Haflinger",
            "Shetland Pony",
            "Friesian",
            "Pura Raza Española",
        ],
    ),
    "bovine": (
        "Bovine",
        "34618005",
        "Bos taurus",
        (300.0, 900.0),
        [
            "Holstein Friesian",
            "Jersey",
            "Simmental",
            "Highland",
        ],
    ),
    "caprine": (
        "Caprine",
        "125097000",
        "Capra hircus",
        (20.0, 90.0),
        [
            "Saanen",
            "Boer",
            "Pygmy goat",
        ],
    ),
    "ovine": (
        "Ovine",
        "125099002",
        "Ovis aries",
        (30.0, 110.0),
        [
            "Merino",
            "Suffolk",
            "Texel",
        ],
    ),
    "guinea pig": (
        "Guinea pig",
        "125076001",
        "Cavia porcellus",
        (0.6, 1.4),
        [
            "Abyssinian",
            "American",
            "Peruvian",
        ],
    ),
    # no SNOMED code in the bench vocabulary: kept as free text
    "rabbit": (
        "Rabbit",
        None,
        "Oryctolagus cuniculus",
        (1.0, 7.0),
        [
            "Netherland Dwarf",
            "Holland Lop",
            "Flemish Giant",
            "Mixed breed",
        ],
    ),
    "ferret": (
        "Ferret",
        None,
        "Mustela putorius furo",
        (0.6, 2.2),
        [
            "Sable",
            "Albino",
        ],
    ),
    "parrot": (
        "African grey parrot",
        None,
        "Psittacus erithacus",
        (0.35, 0.6),
        [
            "Congo African Grey",
            "Timneh",
        ],
    ),
}

# Spellings a practice system may send for a species (what the hub must
# resolve through mappings/). Maps the spelling back to the canonical key.
SPECIES_ALIASES: dict[str, str] = {}
for _k, (_desc, _code, _sci, _w, _b) in SPECIES.items():
    SPECIES_ALIASES[_k] = _k
    SPECIES_ALIASES[_desc.lower()] = _k
    SPECIES_ALIASES[_sci.lower()] = _k
    if _code:
        SPECIES_ALIASES[_code] = _k
SPECIES_ALIASES.update(
    {
        "dog": "canine",
        "cat": "feline",
        "horse": "equine",
        "cow": "bovine",
        "goat": "caprine",
        "sheep": "ovine",
    }
)

ANIMAL_NAMES = [
    "Rex",
    "Bella",
    "Luna",
    "Max",
    "Milo",
    "Charlie",
    "Nala",
    "Simba",
    "Kiki",
    "Bruno",
    "Filou",
    "Mía",
    "Zoë",
    "Chloé",
    "Fénix",
    "Björn",
    "Åsa",
    "Nuage",
    "Pepper",
    "Oscar",
    "Coco",
    "Lola",
    "Rocky",
    "Loki",
    "Frida",
    "Ronja",
    "Balu",
    "Emil",
    "Sámi",
    "Tigre",
    "Mäxchen",
    "Ñoño",
    "Jolly Jumper",
    "Duke",
    "Daisy",
    "Ginger",
    "Shadow",
    "Smokey",
    "Tessa",
    "Whisky",
]
OWNER_LAST = [
    "Smith",
    "Müller",
    "Ñúñez",
    "Øster",
    "Jensen",
    "García",
    "O'Brien",
    "Dubois",
    "Schröder",
    "Nguyen",
    "Kowalski",
    "Łukasiewicz",
    "Rossi",
    "Yamamoto",
    "Svensson",
    "Jørgensen",
    "Côté",
    "Brown",
    "Fischer",
    "Wagner",
    "Novák",
    "Papadopoulos",
    "van der Berg",
    "Ó Súilleabháin",
    "Meier",
    "Hernández",
    "Lindqvist",
    "Weiß",
    "Peña",
    "Dąbrowski",
    "Taylor",
    "Martin",
    "Schmidt",
    "Bianchi",
    "Haugen",
    "Kovačević",
    "Aalto",
    "Fernández",
    "MacLeod",
    "Zimmermann",
]
OWNER_FIRST = [
    "Anna",
    "Jörg",
    "José",
    "Zoë",
    "François",
    "Søren",
    "Ingrid",
    "Mateo",
    "Aisling",
    "Łucja",
    "Hannah",
    "Lars",
    "María",
    "Émile",
    "Ana",
    "Björn",
    "Chiara",
    "Noah",
    "Mia",
    "Ole",
    "Sofía",
    "Jürgen",
    "Eva",
    "Thomas",
]
ORGANIZATIONS = [
    "Tierheim Süd e.V.",
    "Police K9 Unit",
    "Riverside Equestrian Centre",
    "Granja Peñalara",
    "City Animal Shelter",
    "Gestüt Öhringen",
    "Guide Dogs North",
]
REFERRING_VETS = [
    "Jane Doe",
    "Lars Øberg",
    "María Peña",
    "Thomas Becker",
    "Aoife Ryan",
    "Pierre Lefèvre",
    "Katarzyna Zielińska",
    "Sam Okafor",
]
NOTES = [
    "Coughing 2 weeks",
    "Lame right hind since Monday",
    "Lahmt hinten rechts, Schmerzen bei Palpation",
    "Tos crónica, 2 semanas",
    "Vomiting, suspected foreign body",
    "Pre-anaesthetic screening",
    "Follow-up fracture repair 6 weeks",
    "Heart murmur grade III/VI",
    "Suspected hip dysplasia, HD screening",
    "Dental: fractured PM4",
    "Halter: nervös, Sedation geplant",
    "Recheck after chemo cycle 3",
]

# --------------------------------------------------------------------------
# I/O helpers

# -- generator -------------------------------------------------------------------

# (site, weight)
SITE_WEIGHTS = [("main", 0.62), ("north", 0.26), ("equine", 0.12)]
# species mix by site kind
SMALL_ANIMAL_SPECIES = [
    ("canine", 0.58),
    ("feline", 0.31),
    ("rabbit", 0.04),
    ("guinea pig", 0.02),
    ("ferret", 0.02),
    ("parrot", 0.01),
    ("caprine", 0.01),
    ("ovine", 0.01),
]
EQUINE_SITE_SPECIES = [("equine", 0.86), ("bovine", 0.08), ("caprine", 0.03), ("ovine", 0.03)]
# how a practice system may spell the species (weight of each form)
SPECIES_SPELLING = [("canonical", 0.80), ("common", 0.10), ("scientific", 0.05), ("code", 0.05)]
COMMON_NAME = {
    "canine": "dog",
    "feline": "cat",
    "equine": "horse",
    "bovine": "cow",
    "caprine": "goat",
    "ovine": "sheep",
}
# station weights per site (DX busiest)
MODALITY_WEIGHT = {"DX": 0.45, "US": 0.25, "CT": 0.12, "MR": 0.06, "IO": 0.12}


def pick(rng: random.Random, weighted: list[tuple[str, float]]) -> str:
    x = rng.random() * sum(w for _, w in weighted)
    for v, w in weighted:
        x -= w
        if x < 0:
            return v
    return weighted[-1][0]


def make_patient(rng: random.Random, serial: int, site: str, day: _dt.date) -> dict:
    species = pick(rng, EQUINE_SITE_SPECIES if site == "equine" else SMALL_ANIMAL_SPECIES)
    _desc, code, sci, (wlo, whi), breeds = SPECIES[species]
    form = pick(rng, SPECIES_SPELLING)
    if form == "common" and species in COMMON_NAME:
        spelled = COMMON_NAME[species]
    elif form == "scientific":
        spelled = sci
    elif form == "code" and code:
        spelled = code
    else:
        spelled = species
    age_days = rng.randint(90, 16 * 365)
    sex = pick(rng, [("male", 0.49), ("female", 0.49), ("unknown", 0.02)])
    neutered = pick(rng, [("true", 0.6), ("false", 0.35), ("null", 0.05)])
    if rng.random() < 0.05 or (species in ("bovine",) and rng.random() < 0.5):
        owner = {
            "id": f"C-{serial:06d}",
            "last_name": None,
            "first_name": None,
            "organization": rng.choice(ORGANIZATIONS),
        }
    else:
        owner = {
            "id": f"C-{serial:06d}",
            "last_name": rng.choice(OWNER_LAST),
            "first_name": rng.choice(OWNER_FIRST),
            "organization": None,
        }
    return {
        "patient": {
            "id": f"P-{serial:06d}",
            "name": rng.choice(ANIMAL_NAMES),
            "species": spelled,
            "breed": rng.choice(breeds),
            "sex": sex,
            "neutered": {"true": True, "false": False, "null": None}[neutered],
            "birth_date": (day - _dt.timedelta(days=age_days)).isoformat(),
            "weight_kg": round(rng.uniform(wlo, whi), 1),
        },
        "owner": owner,
        "site": site,
    }


def pick_station(rng: random.Random, stations: list[tuple[str, str]]) -> tuple[str, str]:
    """A station of the site, busier modalities (DX) more often."""
    x = rng.random() * sum(MODALITY_WEIGHT[mod] for _, mod in stations)
    for ae, mod in stations:
        x -= MODALITY_WEIGHT[mod]
        if x < 0:
            return ae, mod
    return stations[-1]


def scheduled_day(rng: random.Random, day: _dt.date, span: int) -> _dt.date:
    while True:
        d = day + _dt.timedelta(days=rng.randint(-span, span))
        if d.weekday() < 5 or rng.random() < 0.3:
            return d


def generate(
    n: int, seed: int, day: _dt.date, span: int, prefix: str = ""
) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    patients: list[dict] = []
    for i in range(1, n + 1):
        if patients and rng.random() < 0.25:
            pat = rng.choice(patients)
        else:
            site = pick(rng, SITE_WEIGHTS)
            pat = make_patient(rng, len(patients) + 1, site, day)
            patients.append(pat)
        site = pat["site"]
        source, stations = SITES[site]
        ae, mod = pick_station(rng, stations)
        proc_key = f"{mod}_EQUINE" if site == "equine" and f"{mod}_EQUINE" in PROCEDURES else mod
        code, desc, _minutes = rng.choice(PROCEDURES[proc_key])
        d = scheduled_day(rng, day, span)
        slot = rng.randint(0, 44)  # 07:30 .. 18:30 in 15-minute slots
        start = _dt.datetime.combine(d, _dt.time(7, 30)) + _dt.timedelta(minutes=15 * slot)
        order = {
            "source": source,
            "placer_order_number": f"{prefix}ORD-{i:07d}",
            "accession_number": f"A{seed % 100:02d}{i:08d}",
            "patient": dict(pat["patient"]),
            "owner": dict(pat["owner"]),
            "procedure": {"code": code, "description": desc},
            "modality": mod,
            "station_ae_title": ae,
            "scheduled_start": start.isoformat(timespec="seconds"),
            "referring_vet": rng.choice(REFERRING_VETS),
            "site": site,
            "priority": "stat" if rng.random() < 0.04 else "routine",
            "notes": rng.choice(NOTES) if rng.random() < 0.3 else None,
        }
        yield order


def gen_orders(n: int, seed: int = 42, day: str = "2026-11-27", span: int = 30) -> list[dict]:
    """``n`` order bodies for ``POST /api/v1/orders`` around ``day`` (+/- ``span`` days)."""
    return list(generate(n, seed, _dt.date.fromisoformat(day), span))


# -- order -> DICOM worklist item ------------------------------------------------


def species_of(order: dict) -> tuple[str, str | None]:
    """(description, SNOMED code or None) for an order's species text."""
    raw = (order.get("patient", {}).get("species") or "").strip()
    key = SPECIES_ALIASES.get(raw.lower())
    if key is None:
        return raw, None
    desc, code, _sci, _w, _b = SPECIES[key]
    return desc, code


def dicom_pn(last: str | None, first: str | None) -> str:
    return f"{last or ''}^{first or ''}".rstrip("^")


def person_pn(full: str | None) -> str:
    """'Jane Doe' -> 'Doe^Jane' (last word is the family name)."""
    if not full:
        return ""
    parts = full.split()
    if len(parts) == 1:
        return parts[0]
    return f"{parts[-1]}^{' '.join(parts[:-1])}"


def patient_name(order: dict) -> str:
    owner = order.get("owner") or {}
    head = owner.get("last_name") or owner.get("organization") or ""
    return f"{head}^{order['patient']['name']}"


def sched_date_time(order: dict) -> tuple[str, str]:
    ts = order["scheduled_start"]
    d, _, t = ts.partition("T")
    return d.replace("-", ""), (t or "000000").replace(":", "")[:6]


def study_uid_for(order: dict) -> str:
    """A stable StudyInstanceUID derived from (source, placer number)."""
    seed = f"{order.get('source', 'default')}/{order['placer_order_number']}"
    return generate_uid(entropy_srcs=["vethub-bench-study", seed])


def order_to_mwl(order: dict) -> Dataset:
    """Build the worklist item (a pydicom Dataset) for one order.

    It follows docs/interface.md's list of veterinary attributes and carries
    every return key of type 1 that DCMTK's wlmscpfs checks for (its
    'file reject' rule), so the same files work for wlmscpfs and Orthanc.
    """
    p = order["patient"]
    owner = order.get("owner") or {}
    proc = order.get("procedure") or {}
    date, tm = sched_date_time(order)
    acc = order.get("accession_number") or ""
    desc, code = species_of(order)

    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.AccessionNumber = acc
    ds.ReferringPhysicianName = person_pn(order.get("referring_vet"))
    ds.PatientName = patient_name(order)
    ds.PatientID = p["id"]
    ds.IssuerOfPatientID = order.get("source", "default")
    ds.PatientBirthDate = (p.get("birth_date") or "").replace("-", "")
    ds.PatientSex = {"male": "M", "female": "F"}.get(p.get("sex") or "", "O")
    if p.get("weight_kg") is not None:
        ds.PatientWeight = f"{float(p['weight_kg']):.1f}"
    ds.PatientSpeciesDescription = desc
    if code:
        sp = Dataset()
        sp.CodeValue = code
        sp.CodingSchemeDesignator = "SCT"
        sp.CodeMeaning = SPECIES[SPECIES_ALIASES[code]][2]
        ds.PatientSpeciesCodeSequence = Sequence([sp])
    else:
        ds.PatientSpeciesCodeSequence = Sequence([])
    ds.PatientBreedDescription = p.get("breed") or ""
    ds.PatientBreedCodeSequence = Sequence([])
    ds.BreedRegistrationSequence = Sequence([])
    neut = p.get("neutered")
    if neut is not None:
        ds.PatientSexNeutered = "ALTERED" if neut else "UNALTERED"
    if owner.get("last_name"):
        ds.ResponsiblePerson = dicom_pn(owner.get("last_name"), owner.get("first_name"))
        ds.ResponsiblePersonRole = "OWNER"
    if owner.get("organization"):
        ds.ResponsibleOrganization = owner["organization"]
    ds.StudyInstanceUID = study_uid_for(order)
    ds.RequestedProcedureID = acc or order["placer_order_number"][-16:]
    ds.RequestedProcedureDescription = proc.get("description") or proc.get("code") or ""
    if proc.get("code"):
        rc = Dataset()
        rc.CodeValue = proc["code"]
        rc.CodingSchemeDesignator = "99VETHUB"
        rc.CodeMeaning = proc.get("description") or proc["code"]
        ds.RequestedProcedureCodeSequence = Sequence([rc])
    ds.RequestedProcedurePriority = "STAT" if order.get("priority") == "stat" else "ROUTINE"
    ds.PlacerOrderNumberImagingServiceRequest = order["placer_order_number"]
    if order.get("notes"):
        ds.ImagingServiceRequestComments = order["notes"]
    ds.ReferencedStudySequence = Sequence([])
    ds.ReferencedPatientSequence = Sequence([])

    sps = Dataset()
    sps.ScheduledStationAETitle = order.get("station_ae_title") or ""
    sps.ScheduledProcedureStepStartDate = date
    sps.ScheduledProcedureStepStartTime = tm
    sps.Modality = order.get("modality") or ""
    sps.ScheduledPerformingPhysicianName = ""
    sps.ScheduledProcedureStepDescription = proc.get("description") or proc.get("code") or ""
    if proc.get("code"):
        pc = Dataset()
        pc.CodeValue = proc["code"]
        pc.CodingSchemeDesignator = "99VETHUB"
        pc.CodeMeaning = proc.get("description") or proc["code"]
        sps.ScheduledProtocolCodeSequence = Sequence([pc])
    sps.ScheduledProcedureStepID = acc or order["placer_order_number"][-16:]
    sps.ScheduledProcedureStepLocation = order.get("site") or ""
    sps.ScheduledProcedureStepStatus = "SCHEDULED"
    ds.ScheduledProcedureStepSequence = Sequence([sps])
    return ds


# --------------------------------------------------------------------------
# expected C-FIND match counts, computed from the orders themselves
# --------------------------------------------------------------------------


def write_worklist_file(order: dict, out_dir: Path) -> Path:
    """The order as a ``<accession>.wl`` file that DCMTK's wlmscpfs serves."""
    ds = order_to_mwl(order)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ModalityWorklistInformationFind
    meta.MediaStorageSOPInstanceUID = generate_uid(
        entropy_srcs=["vethub-test-wl", order["placer_order_number"]]
    )
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    path = out_dir / ((order.get("accession_number") or order["placer_order_number"]) + ".wl")
    ds.save_as(path, enforce_file_format=True)
    return path


# -- order -> HL7 v2.5.1 ORM^O01 -------------------------------------------------


def _hl7_escape(text: str) -> str:
    return (
        text.replace("\\", "\\E\\")
        .replace("|", "\\F\\")
        .replace("^", "\\S\\")
        .replace("&", "\\T\\")
        .replace("~", "\\R\\")
        .replace("\r", " ")
        .replace("\n", " ")
    )


def _hl7_xcn(full: str | None) -> str:
    """'Jane Doe' -> '^Doe^Jane' (XCN: ID^Family^Given), components escaped."""
    if not full:
        return ""
    parts = full.split()
    last, first = parts[-1], " ".join(parts[:-1])
    return f"^{_hl7_escape(last)}^{_hl7_escape(first)}"


def order_to_orm(
    order: dict, control_id: str, placer: str | None = None, now: str | None = None
) -> bytes:
    """One ORM^O01 (NW) message for an order, UTF-8, segments joined by CR.

    Field use (the bench's default profile; the hub maps it via mappings/):
      PID-3 patient id, PID-5 Owner^Animal, PID-7 birth date, PID-8 sex,
      PID-35 species, PID-36 breed; NK1 the owner (relationship OWN);
      PV1-8 / OBR-16 referring vet (XCN ^Family^Given); ORC-2 / OBR-2 placer order number;
      OBR-4 procedure code^description; OBR-18 accession number;
      OBR-24 modality; OBR-27 / ORC-7 start time and priority (R/S);
      OBR-21 station AE title; OBR-13 / NTE notes.
    """
    e = _hl7_escape
    p = order["patient"]
    owner = order.get("owner") or {}
    proc = order.get("procedure") or {}
    placer = placer or order["placer_order_number"]
    ts = order["scheduled_start"].replace("-", "").replace(":", "").replace("T", "")
    now = now or _dt.datetime.now().strftime("%Y%m%d%H%M%S")
    prio = "S" if order.get("priority") == "stat" else "R"
    sex = {"male": "M", "female": "F"}.get(p.get("sex") or "", "U")
    desc, code = species_of(order)
    species = f"{code}^{e(desc)}^SCT" if code else f"^{e(p.get('species') or '')}"
    owner_head = owner.get("last_name") or owner.get("organization") or ""
    pid = [
        "PID",
        "1",
        "",
        f"{e(p['id'])}^^^{e(order.get('source', 'default'))}",
        "",
        f"{e(owner_head)}^{e(p['name'])}",
        "",
        (p.get("birth_date") or "").replace("-", ""),
        sex,
    ]
    pid += [""] * (35 - len(pid) + 1)
    pid[35] = species
    pid.append(f"^{e(p.get('breed') or '')}")
    segs = [
        "|".join(
            [
                "MSH",
                "^~\\&",
                e(order.get("source", "default")),
                e(order.get("site") or ""),
                "VETHUB",
                "VETHUB",
                now,
                "",
                "ORM^O01^ORM_O01",
                control_id,
                "P",
                "2.5.1",
                "",
                "",
                "AL",
                "NE",
                "",
                "UNICODE UTF-8",
            ]
        ),
        "|".join(pid),
    ]
    if owner.get("last_name") or owner.get("organization"):
        nk1_name = (
            f"{e(owner.get('last_name') or '')}^{e(owner.get('first_name') or '')}"
            if owner.get("last_name")
            else ""
        )
        segs.append(
            "|".join(
                [
                    "NK1",
                    "1",
                    nk1_name,
                    "OWN^Owner^HL70063",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    e(owner.get("organization") or ""),
                ]
            )
        )
    segs.append(
        "|".join(
            [
                "PV1",
                "1",
                "O",
                e(order.get("site") or ""),
                "",
                "",
                "",
                "",
                _hl7_xcn(order.get("referring_vet")),
            ]
        )
    )
    segs.append("|".join(["ORC", "NW", e(placer), "", "", "SC", "", f"^^^{ts}^^{prio}"]))
    obr = [
        "OBR",
        "1",
        e(placer),
        "",
        f"{e(proc.get('code') or '')}^{e(proc.get('description') or '')}^L",
        "",
        "",
        ts,
        "",
        "",
        "",
        "",
        "",
        e(order.get("notes") or ""),
        "",
        "",
        _hl7_xcn(order.get("referring_vet")),
        "",
        e(order.get("accession_number") or ""),
        "",
        "",
        e(order.get("station_ae_title") or ""),
        "",
        "",
        e(order.get("modality") or ""),
        "",
        "",
        f"^^^{ts}^^{prio}",
    ]
    segs.append("|".join(obr))
    if order.get("notes"):
        segs.append("|".join(["NTE", "1", "", e(order["notes"])]))
    return ("\r".join(segs) + "\r").encode("utf-8")
