"""Study searches through the folded-name index (migration 0016) give the same answers.

A name wildcard is matched as LIKE on ``lower(patient_name)`` plus the byte-order
range of its leading characters, which ``ix_studies_patient_name_folded`` reads;
the range must never drop a match (case, non-ASCII letters, a wildcard first),
and the per-study tally read beside each row counts only series holding images.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from hub.context import Hub
from hub.models import Instance, Series, Study
from hub.services import study_search
from hub.services.study_search import Query

NAMES = ["Schmidt^Bello", "SCHMITZ^Mia", "schmal^Rex", "Schneider^Kira", "Müller^Ali", "MÜLLER^Bo"]


def _store(hub: Hub) -> None:
    with hub.db.session() as s:
        for n, name in enumerate(NAMES):
            study = Study(
                study_instance_uid=f"1.2.826.0.1.{n}",
                patient_name=name,
                patient_id=f"P{n}",
                study_date=f"2026030{n + 1}",
            )
            s.add(study)
            s.flush()
            for k, modality in enumerate(("MR", "CT")):
                series = Series(
                    study_id=study.id, series_instance_uid=f"1.2.826.0.1.{n}.{k}", modality=modality
                )
                s.add(series)
                s.flush()
                if modality == "CT" and n % 2:  # an emptied series: no instance left
                    continue
                s.add(
                    Instance(
                        study_id=study.id,
                        series_id=series.id,
                        sop_instance_uid=f"1.2.826.0.1.{n}.{k}.1",
                        sop_class_uid="1.2.840.10008.5.1.4.1.1.4",
                        transfer_syntax_uid="1.2.840.10008.1.2.1",
                        path=f"x/{n}/{k}.dcm",
                        size=1,
                        received_sha256="0" * 64,
                    )
                )


def _names(hub: Hub, **kw: Any) -> list[str]:
    with hub.db.read_session() as s:
        found = study_search.search(s, Query(level="study", **kw))
    return sorted(r["PatientName"] for r in found.rows)


def test_name_searches_through_the_folded_index_keep_every_match(hub: Hub) -> None:
    _store(hub)
    schm = ["SCHMITZ^Mia", "Schmidt^Bello", "schmal^Rex"]
    assert _names(hub, patient_name="Schm*") == schm
    assert _names(hub, patient_name="sCHM*") == schm
    assert _names(hub, patient_name="?chm*") == schm  # no leading characters: no range
    assert _names(hub, patient_name="Schmi*") == ["SCHMITZ^Mia", "Schmidt^Bello"]
    assert _names(hub, patient_name="schmidt^bello") == ["Schmidt^Bello"]
    assert _names(hub, patient_name="Schm") == []
    assert _names(hub, patient_name="*^Rex") == ["schmal^Rex"]
    # A non-ASCII letter in the leading characters; SQLite folds ASCII letters
    # only, so there the upper-case Ü does not match a lower-case ü (as before 0016).
    both = ["MÜLLER^Bo", "Müller^Ali"]
    sqlite = hub.db.engine.dialect.name == "sqlite"
    assert _names(hub, patient_name="mü*") == (["Müller^Ali"] if sqlite else both)
    assert _names(hub, patient_name="MüLL*") == (["Müller^Ali"] if sqlite else both)

    with hub.db.read_session() as s:
        if hub.db.engine.dialect.name == "postgresql":
            s.execute(text("SET LOCAL enable_seqscan = off"))  # six rows: force the choice
        stmt = study_search._studies_statement(s, Query(level="study", patient_name="Schm*"))
        compiled = stmt.compile(s.get_bind(), compile_kwargs={"literal_binds": True})
        prefix = "EXPLAIN QUERY PLAN " if hub.db.engine.dialect.name == "sqlite" else "EXPLAIN "
        plan = " ".join(str(row) for row in s.execute(text(prefix + str(compiled))))
    assert "ix_studies_patient_name_folded" in plan, plan


def test_the_tally_counts_series_holding_images(hub: Hub) -> None:
    _store(hub)
    with hub.db.read_session() as s:
        rows = study_search.search(s, Query(level="study", patient_name="Schm*")).rows
    tally = {
        r["PatientName"]: (
            r["ModalitiesInStudy"],
            r["NumberOfStudyRelatedSeries"],
            r["NumberOfStudyRelatedInstances"],
        )
        for r in rows
    }
    assert tally == {
        "Schmidt^Bello": (["CT", "MR"], 2, 2),
        "SCHMITZ^Mia": (["MR"], 1, 1),  # its CT series holds nothing
        "schmal^Rex": (["CT", "MR"], 2, 2),
    }
    # Newest first, as before.
    assert [r["StudyDate"] for r in rows] == ["20260303", "20260302", "20260301"]
