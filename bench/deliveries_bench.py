"""Delivery throughput: events/s from outbox to a local webhook receiver, 1 and 2 hub processes.

For each process count: a fresh PostgreSQL database, that many ``vethub serve``
processes, a source subscribed to ``order.scheduled`` with a webhook to a local
receiver; then N orders are placed in one transaction (N ``order.scheduled``
events at once) and the clock runs from that commit until the receiver holds
N distinct delivery ids. Prints one JSON line per run.

    .venv/bin/python bench/deliveries_bench.py [-n 2000] [--procs 1 2] [--reps 1]

Needs the PostgreSQL of the test suite (``VETHUB_TEST_PG``, default the local
``test`` server). Traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hub.config import Settings  # noqa: E402
from hub.context import Hub  # noqa: E402
from hub.db import Database  # noqa: E402
from hub.schemas import OrderIn  # noqa: E402
from hub.services import orders  # noqa: E402
from tests.delivery_receivers import WebhookReceiver  # noqa: E402
from tests.factories import rex  # noqa: E402
from tests.harness import pg_admin, pg_database_url, start_hub  # noqa: E402

SECRET = "bench-secret-0123456789"


def run(n: int, procs: int, work: Path) -> dict[str, object]:
    name = f"vethub_bench_{uuid.uuid4().hex[:10]}"
    with pg_admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = pg_database_url(name)
    db = Database(url)
    db.upgrade()
    db.dispose()
    receiver = WebhookReceiver(SECRET)
    hubs = []
    try:
        env = {"VETHUB_DELIVERY_POLL_SECONDS": "0.1", "VETHUB_LOG_LEVEL": "WARNING"}
        hubs = [start_hub(work / f"{name}-{i}", url, **env) for i in range(procs)]
        with hubs[0].api() as api:
            api.put(
                "/api/v1/sources/pims-main",
                json={
                    "webhook_url": receiver.url,
                    "webhook_secret": SECRET,
                    "results": ["webhook"],
                    "events": ["order.scheduled"],
                },
            ).raise_for_status()
        producer = Hub.open(Settings(data_dir=work / f"{name}-p", database_url=url))
        bodies = [
            OrderIn.model_validate(rex(placer_order_number=f"B{i}", accession_number=None))
            for i in range(n)
        ]
        with producer.db.session() as s:
            for body in bodies:
                orders.place(s, body, producer.orders)
        t0 = time.perf_counter()
        got = receiver.wait_for(n, timeout=600)
        elapsed = time.perf_counter() - t0
        time.sleep(1)
        ids = receiver.delivery_ids()
        producer.close()
        return {
            "bench": "deliveries_webhook",
            "processes": procs,
            "events": n,
            "received": len(got),
            "distinct": len(set(ids)),
            "duplicates": len(ids) - len(set(ids)),
            "seconds": round(elapsed, 3),
            "events_per_s": round(n / elapsed, 1),
        }
    finally:
        for h in hubs:
            h.stop()
        receiver.close()
        with pg_admin() as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=2000)
    p.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    p.add_argument("--reps", type=int, default=1)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="vethub-deliv-bench-") as tmp:
        for procs in args.procs:
            for _ in range(args.reps):
                print(json.dumps(run(args.n, procs, Path(tmp))), flush=True)


if __name__ == "__main__":
    main()
