"""HL7 v2 text split for display only: segments, fields labelled ``PID-5``,
repetitions and components. Plain string splitting with the separators the
message declares in MSH-1 and MSH-2 (no HL7 library: hub/ does not import one;
the HL7 adapter is what reads messages for real). Nothing here validates."""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_SEGMENTS = 1000  # a display, not an archive: a huge message is cut, and says so


@dataclass(frozen=True)
class Component:
    label: str  # PID-5.1
    value: str


@dataclass(frozen=True)
class Field:
    label: str  # PID-5
    value: str  # as sent, separators included
    repetitions: list[list[Component]] = field(default_factory=list)


@dataclass(frozen=True)
class Segment:
    name: str
    fields: list[Field]


@dataclass(frozen=True)
class Separators:
    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"


def separators(raw: str) -> Separators:
    """MSH-1 and MSH-2 of the first MSH segment, or the usual ``|^~\\&``."""
    start = raw.find("MSH")
    if start < 0 or len(raw) < start + 4:
        return Separators()
    fsep = raw[start + 3]
    if fsep.isalnum() or fsep in "\r\n":
        return Separators()
    enc = raw[start + 4 :].split(fsep, 1)[0].split("\r", 1)[0].split("\n", 1)[0]
    default = Separators()
    return Separators(
        field=fsep,
        component=enc[0] if len(enc) > 0 else default.component,
        repetition=enc[1] if len(enc) > 1 else default.repetition,
        escape=enc[2] if len(enc) > 2 else default.escape,
        subcomponent=enc[3] if len(enc) > 3 else default.subcomponent,
    )


def segments(raw: str) -> tuple[list[Segment], bool]:
    """The message's segments with their non-empty fields labelled; and whether it was cut."""
    sep = separators(raw)
    lines = [ln for ln in raw.replace("\r\n", "\r").replace("\n", "\r").split("\r") if ln.strip()]
    out: list[Segment] = []
    for line in lines[:MAX_SEGMENTS]:
        parts = line.split(sep.field)
        name = parts[0].strip()[:8]
        if name == "MSH":
            # MSH-1 is the field separator itself and MSH-2 the encoding characters.
            values = [(1, sep.field), (2, parts[1] if len(parts) > 1 else "")]
            values += [(n, v) for n, v in enumerate(parts[2:], start=3)]
        else:
            values = list(enumerate(parts[1:], start=1))
        fields = []
        for number, value in values:
            if value == "":
                continue
            label = f"{name}-{number}"
            if name == "MSH" and number in (1, 2):
                reps: list[list[Component]] = []
            else:
                reps = [
                    [
                        Component(f"{label}.{i}", c)
                        for i, c in enumerate(rep.split(sep.component), start=1)
                    ]
                    for rep in value.split(sep.repetition)
                ]
            fields.append(Field(label, value, reps))
        out.append(Segment(name, fields))
    return out, len(lines) > MAX_SEGMENTS
