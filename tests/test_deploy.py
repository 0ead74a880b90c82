"""deploy/vethub.service is a unit systemd accepts: ``systemd-analyze verify`` reports
nothing about it (unknown keys and bad values are only warnings there, so any line
naming the unit fails the test)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.harness import REPO

INSTALLED = "/opt/vethub/.venv/bin/vethub"


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    unit = (REPO / "deploy" / "vethub.service").read_text()
    assert f"ExecStart={INSTALLED} serve --config /etc/vethub/vethub.toml" in unit
    # verify insists the ExecStart program exists: point it at this checkout's.
    here = Path(sys.executable).parent / "vethub"
    assert here.is_file()
    (tmp_path / "vethub.service").write_text(unit.replace(INSTALLED, str(here)))
    run = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / "vethub.service")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    about_us = [line for line in run.stderr.splitlines() if "vethub" in line]
    assert run.returncode == 0 and not about_us, run.stderr


def test_systemd_verify_catches_a_misspelt_key(tmp_path: Path) -> None:
    """The check above can fail: a typo in a hardening key is reported."""
    unit = (REPO / "deploy" / "vethub.service").read_text()
    here = Path(sys.executable).parent / "vethub"
    bad = unit.replace(INSTALLED, str(here)).replace("ProtectClock=", "ProtectClok=")
    (tmp_path / "vethub.service").write_text(bad)
    run = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / "vethub.service")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "ProtectClok" in run.stderr
