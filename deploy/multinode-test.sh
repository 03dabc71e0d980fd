#!/usr/bin/env bash
# Three VoiceMeter servers behind nginx on loopback, sharing one PostgreSQL: calls stream through
# nginx, drop their connections mid-call and resume on whichever node nginx picks next; every call
# must reconcile with the database, every node must have carried calls, and one user's month limit
# must hold while that user's calls run on all three nodes at once.
#
# Uses DATABASE_URL (a fresh database is created on that server) or starts a private PostgreSQL.
# Needs nginx (installed with apt-get when missing) and root (PostgreSQL runs as `postgres`).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v nginx >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx >/dev/null
fi
swift build --product voicemeter >/dev/null
swift build --product voicemeter-sim >/dev/null
bin=$(swift build --show-bin-path)

work=$(mktemp -d /tmp/voicemeter-multinode.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [ -f "$work/nginx/nginx.pid" ] && nginx -p "$work/nginx" -c nginx.conf -s stop 2>/dev/null || true
    [ -n "${private_postgres:-}" ] && stop_private_postgres "$work"
    rm -rf "$work"
}
trap cleanup EXIT

source deploy/lib/private-postgres.sh
fresh_database "$work" 15460 "vm_multinode_$$" "$bin"
token=$("$bin/voicemeter" tokens create multinode 2>/dev/null | tail -n 1)

# Three nodes; spend is shared through the database every second.
ports=(18801 18802 18803)
for port in "${ports[@]}"; do
    VOICEMETER_BUDGET_TICK_SECONDS=1 "$bin/voicemeter" serve --listen "127.0.0.1:$port" >"$work/node-$port.log" 2>&1 &
    pids+=($!)
done
for port in "${ports[@]}"; do
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.2; done
    curl -sf "http://127.0.0.1:$port/readyz" >/dev/null || { cat "$work/node-$port.log"; exit 1; }
done

# nginx round-robins connections over the three nodes.
mkdir -p "$work/nginx/logs"
cat >"$work/nginx/nginx.conf" <<CONF
worker_processes 1;
pid $work/nginx/nginx.pid;
error_log $work/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $work/nginx/body;
    proxy_temp_path $work/nginx/proxy;
    upstream voicemeter_nodes {
        server 127.0.0.1:${ports[0]} max_fails=0;
        server 127.0.0.1:${ports[1]} max_fails=0;
        server 127.0.0.1:${ports[2]} max_fails=0;
    }
    map \$http_upgrade \$voicemeter_connection { default upgrade; '' close; }
    server {
        listen 127.0.0.1:18800;
        location / {
            proxy_pass http://voicemeter_nodes;
            proxy_http_version 1.1;
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection \$voicemeter_connection;
            proxy_set_header Host \$host;
            proxy_read_timeout 180s;
        }
    }
}
CONF
nginx -p "$work/nginx" -c nginx.conf

echo "multinode: 60 calls through nginx (3 nodes), each dropping its connection mid-call and resuming on the next node"
"$bin/voicemeter-sim" --server ws://127.0.0.1:18800 --token "$token" --scenario reconnect --calls 60 --concurrency 30 --connections 30 --speed 60 2>/dev/null

for port in "${ports[@]}"; do
    frames=$(curl -sf "http://127.0.0.1:$port/metrics" | awk '$1 == "voicemeter_frames_received_total" { print $2 }')
    echo "node $port received $frames frames"
    [ "${frames:-0}" -gt 0 ] || { echo "node $port carried no calls: nginx did not spread them" >&2; exit 1; }
done

echo "multinode: one user's calls on all three nodes at once against a \$3 month limit"
run="mn$$"
"$bin/voicemeter-sim" --server ws://127.0.0.1:18800 --token "$token" --scenario month-limit --users 1 --calls 40 \
    --concurrency 12 --connections 12 --speed 60 --run-id "$run" 2>/dev/null
spent=$(psql "$DATABASE_URL" -qAt -c "SELECT coalesce(sum(total_cost), 0) FROM api_call_events WHERE user_id = 'sim-$run-user-0001'")
# Each node sees the others' spend at its next tick (1 s): the overshoot is bounded by about one
# tick of the user's burn on the other nodes (12 calls x ~\$0.09/s here) plus the frames in flight.
bound="4.50"
echo "user sim-$run-user-0001 spent \$$spent against a \$3 limit (bound with 3 nodes and a 1 s tick: \$$bound)"
awk -v spent="$spent" -v bound="$bound" 'BEGIN { exit !(spent + 0 <= bound + 0) }' || { echo "the month limit did not hold across nodes" >&2; exit 1; }
echo "multinode: passed"
