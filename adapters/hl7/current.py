"""The HL7 profiles in use, per profile directory, so a reload reaches the door at once.

The door installs what it loaded at start; ``POST /api/v1/hl7/profiles/reload``
installs a fresh load only when every file is good, so a broken edit keeps the
old profiles running. Results going out (``sender.py``) run in the delivery
worker, which knows no directory: they use the profiles last installed in this
process (the door's), else the shipped ones. The door also notes the HL7
version each source last sent (``heard``), so a source left on ``default``
is answered like it is read: by its version's profile.
"""

from __future__ import annotations

import threading
from pathlib import Path

from adapters.hl7.profile import Profile, Profiles, load_profiles
from hub.mappings import default_mappings_dir

_lock = threading.Lock()
_by_dir: dict[Path, Profiles] = {}
_last: Profiles | None = None
_spoken: dict[str, str] = {}  # source -> the MSH-12 it last sent


def install(directory: Path, profiles: Profiles) -> Profiles:
    """Make ``profiles`` the ones in use for ``directory`` (and for outbound messages).

    Directories are keys as given: callers pass ``Path.resolve()``d ones, once, so
    the lookup per message costs no file system call.
    """
    global _last
    with _lock:
        _by_dir[directory] = profiles
        _last = profiles
    return profiles


def load(directory: Path) -> Profiles:
    """Read every file afresh and install them; a bad file raises ``MappingError``
    and leaves the profiles in use as they were."""
    return install(directory, load_profiles(directory))


def get(directory: Path) -> Profiles:
    """The profiles in use for ``directory`` (loaded and installed on first use)."""
    found = _by_dir.get(directory)
    return found if found is not None else load(directory)


def heard(source: str, version: str) -> None:
    """Note the HL7 version a source sends (MSH-12), for the results back to it."""
    if version and _spoken.get(source) != version:
        _spoken[source] = version


def outbound_profile(name: str, source: str = "") -> Profile:
    """The profile for writing results to a source: the one it names, or for
    ``default`` (or an unknown name) the one for the version it last sent."""
    profiles = _last if _last is not None else get((default_mappings_dir() / "hl7").resolve())
    return profiles.named(name, _spoken.get(source, ""))
