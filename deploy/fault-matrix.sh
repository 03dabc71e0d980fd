#!/usr/bin/env bash
# The fault matrix: real processes on loopback (PostgreSQL, a `voicemeter serve`, 40 simulated
# calls streaming through the Swift client) and, one row at a time, a fault while the calls
# stream. Each row prints the frames sent, acknowledged and stored, the acknowledged frames the
# database lacks (must be 0), the frames stored twice (must be 0), whether the rollups equal the
# events, how long the server took to commit again once the fault ended, and the server's peak
# memory. The exit status is 0 when every row held.
#
#   deploy/fault-matrix.sh                      every row
#   deploy/fault-matrix.sh read-only partition  the rows named
#
# Needs root: PostgreSQL runs as `postgres`, and the rows make a network namespace, iptables
# rules, a tmpfs and a CPU cgroup. Installs iptables with apt-get when missing.
# VOICEMETER_FAULTS_KEEP=1 keeps the logs (server, PostgreSQL, simulator) and prints where.
set -euo pipefail
cd "$(dirname "$0")/.."

all_rows=(server-kill postgres-kill postgres-stop read-only failover partition wal-disk-full slow-database)
rows=("$@")
((${#rows[@]})) || rows=("${all_rows[@]}")
for row in "${rows[@]}"; do
    [[ " ${all_rows[*]} " == *" $row "* ]] || { echo "fault-matrix: no row '$row'; the rows are: ${all_rows[*]}" >&2; exit 2; }
done
[ "$(id -u)" -eq 0 ] || { echo "fault-matrix: run it as root (PostgreSQL runs as postgres; rows make namespaces, mounts and cgroups)" >&2; exit 2; }
if ! command -v iptables >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends iptables >/dev/null
fi
swift build --product voicemeter >/dev/null
swift build --product voicemeter-sim >/dev/null
bin=$(swift build --show-bin-path)
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)

# The load: 40 five-minute calls at 10× (30 s each) on 10 connections; the fault starts at 6 s.
calls=40
fault_at=6
server_port=18850
namespace=vmfaults
cgroup=/sys/fs/cgroup/cpu/voicemeter-faults
work=$(mktemp -d /tmp/voicemeter-faults.XXXXXX)
chmod 755 "$work"

# --- PostgreSQL -------------------------------------------------------------------------------
in_namespace=()   # ("ip" "netns" "exec" NAME) while PostgreSQL runs in the partition row's namespace

# pg_init DIR [initdb options…]
pg_init() {
    local dir=$1
    shift
    mkdir -p "$dir"
    chown postgres: "$dir"
    runuser -u postgres -- "$pgbin/initdb" -D "$dir/data" -U voicemeter -A trust -E UTF8 --locale=C --no-instructions "$@" >/dev/null
}

# pg_start DIR HOST PORT [-c name=value…]
pg_start() {
    local dir=$1 host=$2 port=$3
    shift 3
    "${in_namespace[@]}" runuser -u postgres -- "$pgbin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 \
        -o "-c listen_addresses=$host -c port=$port -c unix_socket_directories=$dir $*" start >/dev/null 2>"$dir/pg_ctl.log" \
        || { tail -n 20 "$dir/pg_ctl.log" "$dir/postgres.log" >&2; return 1; }
}

# The postmaster and its children.
pg_pids() {
    local postmaster
    postmaster=$(head -n 1 "$1/data/postmaster.pid" 2>/dev/null) || return 0
    echo "$postmaster" $(pgrep -P "$postmaster" || true)
}

# SIGKILL to the postmaster and every backend, as a crash would.
pg_kill() {
    local pids
    pids=$(pg_pids "$1")
    [ -n "$pids" ] && kill -KILL $pids 2>/dev/null || true
    for _ in $(seq 100); do
        local alive=0
        for pid in $pids; do kill -0 "$pid" 2>/dev/null && alive=1; done
        ((alive)) || break
        sleep 0.1
    done
}

pg_stop() { "${in_namespace[@]}" runuser -u postgres -- "$pgbin/pg_ctl" -D "$1/data" -m immediate stop >/dev/null 2>&1 || true; }

sql() { psql "$database_url" -qAt -v ON_ERROR_STOP=1 -c "$1"; }

# --- The server and the load ---------------------------------------------------------------------
server_pid=
peak_kib=0

server_start() {
    "$bin/voicemeter" serve --listen "127.0.0.1:$server_port" --database-url "$database_url" >>"$dir/server.log" 2>&1 &
    server_pid=$!
    for _ in $(seq 200); do
        curl -sf "http://127.0.0.1:$server_port/readyz" >/dev/null && return 0
        sleep 0.1
    done
    echo "fault-matrix: the server did not become ready; its log:" >&2
    tail -n 20 "$dir/server.log" >&2
    return 1
}

# A counter of the server's (0 when it does not answer).
metric() {
    curl -sf --max-time 1 "http://127.0.0.1:$server_port/metrics" | awk -v name="$1" '$1 == name { print $2; found = 1 } END { if (!found) print 0 }' \
        || echo 0
}
committed() { metric voicemeter_events_committed_total; }

# Before a server stops: its peak resident memory so far (VmHWM) and the commits it retried
# (the evidence that the row's fault reached the ledger writer).
note_server() {
    local kib
    kib=$(awk '/^VmHWM:/ { print $2 }' "/proc/$server_pid/status" 2>/dev/null || echo 0)
    ((kib > peak_kib)) && peak_kib=$kib || true
    retries=$((retries + $(metric voicemeter_ledger_commit_retries_total)))
}

now_ms() { echo $(($(date +%s%N) / 1000000)); }

# Waits until the server commits again after the fault ended (now, or at the given ms with the
# given count of commits); keeps the slowest recovery.
recovery_ms=0
await_recovery() {
    local started=${1:-$(now_ms)} before=${2:-$(committed)}
    for _ in $(seq 1200); do
        (($(committed) > before)) && break
        sleep 0.1
    done
    local took=$(($(now_ms) - started))
    ((took > recovery_ms)) && recovery_ms=$took || true
}

# --- The faults ------------------------------------------------------------------------------------
fault_server_kill() {
    for _ in 1 2 3; do
        note_server
        kill -KILL "$server_pid"
        wait "$server_pid" 2>/dev/null || true
        local restarted
        restarted=$(now_ms)
        server_start
        await_recovery "$restarted" 0
        sleep 3
    done
}

fault_postgres_kill() {
    for _ in 1 2; do
        pg_kill "$dir/pg"
        sleep 2
        pg_start "$dir/pg" 127.0.0.1 "$pg_port"
        await_recovery
        sleep 4
    done
}

fault_postgres_stop() {
    local pids
    pids=$(pg_pids "$dir/pg")
    kill -STOP $pids
    sleep 10
    kill -CONT $pids
    await_recovery
}

fault_read_only() {
    sql "ALTER SYSTEM SET default_transaction_read_only = on" && sql "SELECT pg_reload_conf()" >/dev/null
    sleep 5
    sql "ALTER SYSTEM RESET default_transaction_read_only" && sql "SELECT pg_reload_conf()" >/dev/null
    await_recovery
}

# What a failover manager does: the primary dies, the synchronous standby is promoted.
fault_failover() {
    pg_kill "$dir/pg"
    sleep 1
    runuser -u postgres -- "$pgbin/pg_ctl" -D "$dir/standby/data" -w promote >/dev/null
    await_recovery
}

fault_partition() {
    ip netns exec "$namespace" iptables -A INPUT -p tcp --dport 5432 -j DROP
    sleep 15
    ip netns exec "$namespace" iptables -R INPUT 1 -p tcp --dport 5432 -j REJECT --reject-with tcp-reset
    sleep 5
    ip netns exec "$namespace" iptables -F INPUT
    await_recovery
}

# A runaway job fills the WAL volume: the database stops accepting writes (PostgreSQL panics);
# the space is freed after 10 s and the operator starts PostgreSQL again if it stopped.
fault_wal_disk_full() {
    dd if=/dev/zero of="$dir/wal/ballast" bs=1M status=none 2>/dev/null || true
    sql "CREATE TABLE ballast AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 200000) g" >/dev/null 2>&1 || true
    sleep 10
    rm -f "$dir/wal/ballast"
    if ! "$pgbin/pg_isready" -q -h 127.0.0.1 -p "$pg_port"; then
        sleep 2
        "$pgbin/pg_isready" -q -h 127.0.0.1 -p "$pg_port" || { pg_stop "$dir/pg"; pg_start "$dir/pg" 127.0.0.1 "$pg_port" -c max_wal_size=48MB -c min_wal_size=32MB; }
    fi
    sql "DROP TABLE IF EXISTS ballast" >/dev/null 2>&1 || true
    await_recovery
}

# Every statement runs slowly: PostgreSQL gets 1 % of one core for 15 s.
fault_slow_database() {
    mkdir -p "$cgroup"
    echo 1000 >"$cgroup/cpu.cfs_quota_us"
    for pid in $(pg_pids "$dir/pg"); do echo "$pid" >"$cgroup/cgroup.procs" 2>/dev/null || true; done
    sleep 15
    for pid in $(cat "$cgroup/cgroup.procs"); do echo "$pid" >"${cgroup%/*}/cgroup.procs" 2>/dev/null || true; done
    rmdir "$cgroup"
    await_recovery
}

# --- Rows ----------------------------------------------------------------------------------------
# Starts the row's database (a standby, a namespace or a small WAL volume where the row needs one).
setup_database() {
    pg_port=15470
    case $row in
        failover)
            pg_init "$dir/pg"
            pg_start "$dir/pg" 127.0.0.1 "$pg_port" -c synchronous_standby_names=standby
            mkdir -p "$dir/standby" && chown postgres: "$dir/standby"
            runuser -u postgres -- "$pgbin/pg_basebackup" -D "$dir/standby/data" -R -X stream \
                -d "host=127.0.0.1 port=$pg_port user=voicemeter application_name=standby"
            pg_start "$dir/standby" 127.0.0.1 $((pg_port + 1))
            database_url="postgresql://voicemeter@127.0.0.1:$pg_port/postgres"
            for _ in $(seq 100); do [ "$(sql "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'")" = 1 ] && break; sleep 0.1; done
            database_url="postgresql://voicemeter@127.0.0.1:$pg_port,127.0.0.1:$((pg_port + 1))/postgres?target_session_attrs=read-write"
            ;;
        partition)
            ip netns add "$namespace"
            ip link add vmf-host type veth peer name vmf-db
            ip link set vmf-db netns "$namespace"
            ip addr add 10.231.0.1/30 dev vmf-host
            ip link set vmf-host up
            ip netns exec "$namespace" ip addr add 10.231.0.2/30 dev vmf-db
            ip netns exec "$namespace" ip link set vmf-db up
            ip netns exec "$namespace" ip link set lo up
            pg_init "$dir/pg"
            echo "host all all 10.231.0.1/32 trust" >>"$dir/pg/data/pg_hba.conf"
            in_namespace=(ip netns exec "$namespace")
            pg_start "$dir/pg" 10.231.0.2 5432
            database_url="postgresql://voicemeter@10.231.0.2:5432/postgres"
            ;;
        wal-disk-full)
            mkdir -p "$dir/wal"
            mount -t tmpfs -o size=72m tmpfs "$dir/wal"
            chown postgres: "$dir/wal"
            pg_init "$dir/pg" --waldir="$dir/wal/pg_wal"
            pg_start "$dir/pg" 127.0.0.1 "$pg_port" -c max_wal_size=48MB -c min_wal_size=32MB
            database_url="postgresql://voicemeter@127.0.0.1:$pg_port/postgres"
            ;;
        *)
            pg_init "$dir/pg"
            pg_start "$dir/pg" 127.0.0.1 "$pg_port"
            database_url="postgresql://voicemeter@127.0.0.1:$pg_port/postgres"
            ;;
    esac
}

teardown() {
    [ -n "$server_pid" ] && kill -KILL "$server_pid" 2>/dev/null || true
    server_pid=
    [ -d "$cgroup" ] && { for pid in $(cat "$cgroup/cgroup.procs"); do echo "$pid" >"${cgroup%/*}/cgroup.procs"; done; rmdir "$cgroup"; } 2>/dev/null || true
    for cluster in "$dir/pg" "$dir/standby"; do [ -d "$cluster/data" ] && { pg_kill "$cluster"; pg_stop "$cluster"; }; done
    if [ "$row" = partition ]; then ip netns del "$namespace" 2>/dev/null || true; ip link del vmf-host 2>/dev/null || true; fi
    in_namespace=()
    mountpoint -q "$dir/wal" 2>/dev/null && umount "$dir/wal" || true
}
cleanup() {
    teardown
    if [ -n "${VOICEMETER_FAULTS_KEEP:-}" ]; then echo "fault-matrix: logs kept in $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

held_rows=0
lost_total=0
duplicates_total=0
printf '%-14s %5s %6s %10s %6s %16s %10s %14s %7s %10s %8s  %s\n' row sent acked "max ack s" stored "acked-not-stored" duplicates "rollups=events" retries "recovery s" "peak MiB" held
for row in "${rows[@]}"; do
    dir=$work/$row
    mkdir -p "$dir"
    chmod 755 "$dir"
    peak_kib=0
    retries=0
    recovery_ms=0
    setup_database
    DATABASE_URL=$database_url "$bin/voicemeter" migrate >/dev/null 2>&1
    token=$(DATABASE_URL=$database_url "$bin/voicemeter" tokens create fault-matrix 2>/dev/null | tail -n 1)
    server_start
    "$bin/voicemeter-sim" --server "ws://127.0.0.1:$server_port" --token "$token" --database-url "$database_url" \
        --calls "$calls" --concurrency "$calls" --connections 10 --speed 10 --answer-timeout 150 --run-id "fm-$row" --json \
        >"$dir/report.json" 2>"$dir/sim.log" &
    load=$!
    sleep "$fault_at"
    "fault_${row//-/_}"
    wait "$load" || true
    note_server
    kill -TERM "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
    server_pid=
    read -r sent acked slowest stored lost duplicates rollups passed < <(python3 - "$dir/report.json" <<'PY' || echo "0 0 - 0 -1 -1 no no"
import json, sys
report = json.load(open(sys.argv[1]))
verification = report["verification"] or {}
slowest = report["ack_latency_ms"]["max"]
print(report["frames"]["sent"], report["frames"]["acknowledged"], "-" if slowest is None else "%.1f" % (float(slowest) / 1000),
      verification.get("frames_stored", 0),
      verification.get("acknowledged_but_lost", -1), verification.get("duplicates", -1),
      "yes" if verification.get("rollups_equal_events") else "no", "yes" if report["passed"] else "no")
PY
    )
    held=no
    if [ "$lost" = 0 ] && [ "$duplicates" = 0 ] && [ "$rollups" = yes ] && [ "$passed" = yes ]; then held=yes; held_rows=$((held_rows + 1)); fi
    ((lost > 0)) && lost_total=$((lost_total + lost)) || true
    ((duplicates > 0)) && duplicates_total=$((duplicates_total + duplicates)) || true
    printf '%-14s %5s %6s %10s %6s %16s %10s %14s %7s %10s %8s  %s\n' "$row" "$sent" "$acked" "$slowest" "$stored" "$lost" "$duplicates" "$rollups" "$retries" \
        "$(awk -v ms="$recovery_ms" 'BEGIN { printf "%.1f", ms / 1000 }')" "$((peak_kib / 1024))" "$held"
    if [ "$held" != yes ]; then
        python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); [print("   ", c["name"] + ":", c["detail"]) for c in r["checks"] if not c["passed"]]; [print("   ", m) for m in (r["verification"] or {}).get("mismatches", [])[:5]]' \
            "$dir/report.json" 2>/dev/null || tail -n 5 "$dir/sim.log"
    fi
    teardown
done
echo "${#rows[@]} faults, $lost_total acknowledged frames lost, $duplicates_total duplicates"
[ "$held_rows" -eq "${#rows[@]}" ]
