#!/usr/bin/env bash
# Make sure the PostgreSQL the tests use (VETHUB_TEST_PG, default
# 127.0.0.1:5432, database `test`) answers; start the local cluster if not.
# Without one, the tests run their SQLite half and say loudly that PostgreSQL
# was skipped; with VETHUB_REQUIRE_PG=1 (CI) a missing server fails here.
set -u
host=127.0.0.1 port=5432
ready() { pg_isready -q -h "$host" -p "$port" 2>/dev/null; }
give_up() {
    echo "$1" >&2
    if [ "${VETHUB_REQUIRE_PG:-0}" = 1 ]; then exit 1; fi
    echo "continuing: the PostgreSQL half of the tests will be skipped" >&2
    exit 0
}
if ! command -v pg_isready >/dev/null; then
    give_up "pg_isready not found: is PostgreSQL installed?"
fi
ready && exit 0
echo "PostgreSQL is down on $host:$port; starting it" >&2
if command -v pg_ctlcluster >/dev/null; then
    version=$(ls /etc/postgresql | sort -V | tail -1)
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
else
    service postgresql start || true
fi
for _ in $(seq 1 60); do ready && exit 0; sleep 0.5; done
give_up "PostgreSQL did not come up on $host:$port"
