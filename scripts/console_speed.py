"""Server time of each console page on a served hub with a day of orders.

    .venv/bin/python scripts/console_speed.py [ORDERS]

Starts ``vethub serve`` on a throwaway SQLite database (the test harness's
``start_hub``), books ORDERS orders (default 2000) for today, signs in as an
admin and prints the median of 7 requests per page. Figures: docs/console.md.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hub.db import Database
from hub.services import users
from tests.harness import start_hub
from tests.order_corpus import gen_orders

PAGES = ["/console", "/console/queue", "/console/orders", "/console/deliveries"]
PAGES += ["/console/messages", "/console/devices", "/console/qc", "/console/audit"]
PASSWORD = "correct horse battery"


def main(count: int) -> None:
    folder = Path(tempfile.mkdtemp())
    db_url = f"sqlite:///{folder}/vethub.db"
    hub = start_hub(folder / "data", db_url)
    try:
        with hub.api() as api:
            for order in gen_orders(count, seed=3, day=time.strftime("%Y-%m-%d"), span=1):
                api.post("/api/v1/orders", json=order)
        db = Database(db_url)
        with db.session() as s:
            users.create(s, "ada", "admin", PASSWORD, actor="console-speed")
        db.dispose()
        with httpx.Client(base_url=hub.url) as web:
            signed = web.post(
                "/sign-in",
                data={"username": "ada", "password": PASSWORD},
                headers={"Origin": hub.url},
            )
            assert signed.status_code == 303, signed.text
            for path in PAGES:
                times = []
                for _ in range(7):
                    began = time.perf_counter()
                    page = web.get(path)
                    times.append((time.perf_counter() - began) * 1000)
                    assert page.status_code == 200, (path, page.status_code)
                size = len(page.content) // 1024
                print(f"{path:22s} median {statistics.median(times):6.1f} ms  {size} KiB")
    finally:
        hub.stop()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
