"""DICOM UIDs the core mints, without the core importing a DICOM library."""

from __future__ import annotations

import uuid


def new_uid() -> str:
    """A UID under the 2.25 root (PS3.5 B.2): a UUID as a decimal integer, globally unique."""
    return f"2.25.{uuid.uuid4().int}"
