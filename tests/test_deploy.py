"""deploy/'s systemd units are ones systemd accepts: ``systemd-analyze verify`` reports
nothing about them (unknown keys and bad values are only warnings there, so any line
naming a unit fails the test)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.harness import REPO

INSTALLED = "/opt/vethub/.venv/bin/vethub"
UNITS = ("vethub.service", "vethub-backup.service", "vethub-backup.timer")


def _verify(folder: Path, *units: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", "verify", *(str(folder / u) for u in units)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _installed_here(tmp_path: Path, misspell: str = "") -> None:
    """The units with ExecStart pointing at this checkout's vethub (verify insists the
    program exists), optionally with one key misspelt."""
    here = Path(sys.executable).parent / "vethub"
    assert here.is_file()
    for name in UNITS:
        unit = (REPO / "deploy" / name).read_text()
        if name.endswith(".service"):
            assert f"ExecStart={INSTALLED} " in unit and "--config /etc/vethub/vethub.toml" in unit
        unit = unit.replace(INSTALLED, str(here))
        if misspell:
            unit = unit.replace(f"{misspell}=", f"{misspell[:-1]}=")
        (tmp_path / name).write_text(unit)


def test_systemd_units_verify(tmp_path: Path) -> None:
    _installed_here(tmp_path)
    run = _verify(tmp_path, *UNITS)
    about_us = [line for line in run.stderr.splitlines() if "vethub" in line]
    assert run.returncode == 0 and not about_us, run.stderr


def test_systemd_verify_catches_a_misspelt_key(tmp_path: Path) -> None:
    """The check above can fail: a typo in a hardening key is reported."""
    _installed_here(tmp_path, misspell="ProtectSystem")
    assert "ProtectSyste" in _verify(tmp_path, "vethub.service").stderr
