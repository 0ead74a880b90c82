"""A study as a ZIP download: staff's export and a share link's "download" offer.

The archive is streamed (hub/archive/bundle.py): the response starts at once
and the hub holds one chunk at a time, whatever the study's size. What goes
in is read from the index first, so no database session stays open while a
slow phone downloads.
"""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from hub.api.plain import describe
from hub.archive import bundle
from hub.models import Series, Study
from hub.services import orders, studies

_UNSAFE = re.compile(r"[^A-Za-z0-9 _-]+")

README = """\
{title}
{underline}

{lines}

What is in this ZIP file
------------------------
DICOM/  the original images ({count} files), one folder per series. DICOM is
        the format of medical images: it keeps every detail the machine
        recorded, and any vet or specialist can open it.
{jpeg_note}README.txt  this file.

How to open the DICOM files
---------------------------
Unzip the file first. Then open the DICOM folder with a free DICOM viewer,
for example Weasis or MicroDicom (Windows), Horos or OsiriX Lite (macOS), or
give the whole ZIP file to your vet, who can import it into their system.
{jpeg_how}
These images are medical records. Please keep them private.
"""
JPEG_NOTE = """\
JPEG/   the same images as ordinary pictures, for looking at on any phone or
        computer (they are not for diagnosis).
"""
JPEG_HOW = """\
The pictures in the JPEG folder open with any photo viewer.
"""


def series_label(n: int, series: Series) -> str:
    """A folder name for a series: its number, modality and description, file-name safe."""
    number = series.series_number if series.series_number.isdigit() else str(n)
    words = " ".join(x for x in (series.modality, series.series_description) if x)
    return f"{int(number):02d} {_UNSAFE.sub('', words)}".strip()[:60]


def response(
    s: Session, study: Study, data_dir: Path, *, jpegs: bool
) -> tuple[StreamingResponse, int]:
    """The streamed ZIP of ``study`` and how many DICOM files it holds (for the audit)."""
    order = orders.get(s, study.order_id) if study.order_id else None
    name, lines = describe(order, study)
    groups = [
        bundle.SeriesFiles(series_label(n, series), [data_dir / i.path for i in instances])
        for n, (series, instances) in enumerate(studies.series_of(s, study), 1)
    ]
    count = sum(len(g.files) for g in groups)
    title = f"Images of {name}"
    readme = README.format(
        title=title,
        underline="=" * len(title),
        lines="\n".join(lines),
        count=count,
        jpeg_note=JPEG_NOTE if jpegs else "",
        jpeg_how=JPEG_HOW if jpegs else "",
    ).replace("\n", "\r\n")  # Notepad, too, shows the lines
    members = bundle.study_members(groups, readme, jpegs=jpegs)
    filename = f"study-{_UNSAFE.sub('', name).replace(' ', '-') or 'images'}.zip"
    streamed = StreamingResponse(
        bundle.stream(members),
        media_type="application/zip",
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        },
    )
    return streamed, count
