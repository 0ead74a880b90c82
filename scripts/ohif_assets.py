"""Install the stock OHIF viewer build the hub serves (``make viewer-assets``).

    python3 scripts/ohif_assets.py web/ohif.lock hub/viewer_assets/ohif

``npm install @ohif/app`` cannot resolve the package (its @ohif/i18n
dependency of the same version is not published), so npm's own lockfile is no
use here; ``web/ohif.lock`` pins the tarball instead. The script fetches it
with ``npm pack`` (npm's registry, cache and proxy settings), refuses it
unless its sha512 matches the pinned integrity, and unpacks the prebuilt
``dist/`` into the target folder. Nothing is fetched at run time.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

STAMP = ".installed"


def integrity(path: Path) -> str:
    digest = hashlib.sha512()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return "sha512-" + base64.b64encode(digest.digest()).decode()


def install(lock_path: Path, target: Path) -> None:
    lock = json.loads(lock_path.read_text())
    spec = f"{lock['name']}@{lock['version']}"
    stamp = target / STAMP
    if stamp.is_file() and stamp.read_text().strip() == lock["integrity"]:
        stamp.touch()  # up to date: newer than the lock for make
        return
    with tempfile.TemporaryDirectory(prefix="ohif-") as tmp:
        work = Path(tmp)
        subprocess.run(
            ["npm", "pack", spec, "--pack-destination", str(work), "--silent"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        (tarball,) = work.glob("*.tgz")
        found = integrity(tarball)
        if found != lock["integrity"]:
            sys.exit(f"{spec}: tarball integrity {found} is not the pinned {lock['integrity']}")
        prefix = lock["unpack"]
        unpacked = work / "unpacked"
        with tarfile.open(tarball) as tar:
            members = [m for m in tar.getmembers() if m.name.startswith(prefix)]
            for m in members:
                m.name = m.name[len(prefix) :]
            tar.extractall(unpacked, members=[m for m in members if m.name], filter="data")
        if not (unpacked / "index.html").is_file():
            sys.exit(f"{spec}: no {prefix}index.html in the tarball")
        (unpacked / STAMP).write_text(lock["integrity"] + "\n")
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(unpacked), target)
    print(f"{spec} installed in {target}")


if __name__ == "__main__":
    install(Path(sys.argv[1]), Path(sys.argv[2]))
