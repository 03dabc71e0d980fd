#!/usr/bin/env bash
# Checks the finance API against its contract: schemathesis (PyPI, in a virtualenv made here)
# generates requests from docs/openapi.yaml, valid and invalid, and sends them to a real
# `voicemeter serve` with a finance token; every response must be documented (status, content
# type, schema, 405 with Allow for other methods) and none may be a 5xx. Also sends each request without the token, and with an
# ingest token, expecting 401 and 403.
#
#   deploy/api-contract-test.sh [SECONDS]    (default 60: the time schemathesis may spend)
#
# Uses DATABASE_URL (a fresh database is created on that server) or starts a private PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
swift build --product voicemeter >/dev/null
bin=$(swift build --show-bin-path)
venv=.build/schemathesis-venv
if [ ! -x "$venv/bin/schemathesis" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q 'schemathesis>=4,<5'
fi

work=$(mktemp -d /tmp/voicemeter-contract.XXXXXX)
server=
cleanup() {
    [ -n "$server" ] && kill -TERM "$server" 2>/dev/null && wait "$server" 2>/dev/null || true
    [ -n "${private_postgres:-}" ] && stop_private_postgres "$work"
    rm -rf "$work"
}
trap cleanup EXIT
source deploy/lib/private-postgres.sh
fresh_database "$work" 15480 "vm_contract_$$" "$bin"
finance=$("$bin/voicemeter" tokens create contract-finance --kind finance 2>/dev/null | tail -n 1)
ingest=$("$bin/voicemeter" tokens create contract-ingest 2>/dev/null | tail -n 1)

port=18870
"$bin/voicemeter" serve --listen "127.0.0.1:$port" >"$work/server.log" 2>&1 &
server=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.2; done
# A few calls, so the API has rows to return.
"$bin/voicemeter-sim" --server "ws://127.0.0.1:$port" --token "$ingest" --calls 5 --speed 300 --run-id contract >/dev/null 2>&1 \
    || { swift build --product voicemeter-sim >/dev/null && "$bin/voicemeter-sim" --server "ws://127.0.0.1:$port" --token "$ingest" --calls 5 --speed 300 --run-id contract >/dev/null; }

# Every check but positive_data_acceptance: a range whose `to` is not after its `from` is
# schema-valid (OpenAPI cannot relate two parameters) and is refused with 400 and the reason.
# No NUL bytes: libwebsockets drops a request whose URL decodes to one before the server sees it.
"$venv/bin/schemathesis" run docs/openapi.yaml --url "http://127.0.0.1:$port" -H "Authorization: Bearer $finance" \
    --checks all --exclude-checks positive_data_acceptance --generation-allow-x00 false \
    --max-time "$seconds" --workers 2 --no-color

# The same paths without a token, and with a token of the wrong kind.
for path in /v1/finance/months "/v1/finance/margins?from=2026-01-01&to=2026-02-01" /v1/calls/x/costs /v1/users/x/spend; do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port$path")" = 401 ] || { echo "$path without a token is not 401" >&2; exit 1; }
    [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $ingest" "http://127.0.0.1:$port$path")" = 403 ] \
        || { echo "$path with an ingest token is not 403" >&2; exit 1; }
done
if grep -q "fatal\|Fatal error" "$work/server.log"; then cat "$work/server.log" >&2; exit 1; fi
echo "api contract: passed"
