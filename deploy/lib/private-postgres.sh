# Sourced by scripts that need a throwaway PostgreSQL: starts one on a loopback port in DIR, owned
# by the unprivileged postgres account (the server refuses to run as root), never on the system
# cluster's port, and exports DATABASE_URL. Stop it with stop_private_postgres DIR.

# start_private_postgres DIR [FIRST_PORT]
start_private_postgres() {
    local dir=$1 port=${2:-15432}
    local bin
    bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
    chmod 755 "$dir"
    chown postgres: "$dir"
    runuser -u postgres -- "$bin/initdb" -D "$dir/data" -U voicemeter -A trust -E UTF8 --locale=C --no-instructions >/dev/null
    # Below Linux's ephemeral range (32768-60999), so no client socket can hold it; the next port if taken.
    local last=$((port + 10))
    until runuser -u postgres -- "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
        -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir" start >/dev/null; do
        port=$((port + 1))
        if ((port > last)); then cat "$dir/server.log" >&2; return 1; fi
    done
    export DATABASE_URL="postgresql://voicemeter@127.0.0.1:$port/postgres"
}

# stop_private_postgres DIR
stop_private_postgres() {
    local bin
    bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
    runuser -u postgres -- "$bin/pg_ctl" -D "$1/data" -m immediate stop >/dev/null 2>&1 || true
}

# fresh_database DIR FIRST_PORT NAME BIN: a database of its own called NAME, migrated with
# BIN/voicemeter, on DATABASE_URL's server, or on a private PostgreSQL started in DIR when
# DATABASE_URL is unset (then private_postgres=1: stop it with stop_private_postgres DIR).
# Exports DATABASE_URL for the new database.
fresh_database() {
    local dir=$1 port=$2 name=$3 bin=$4
    if [ -z "${DATABASE_URL:-}" ]; then
        private_postgres=1
        start_private_postgres "$dir" "$port"
    fi
    psql "$DATABASE_URL" -qAt -c "CREATE DATABASE $name" >/dev/null
    export DATABASE_URL="${DATABASE_URL%/*}/$name"
    "$bin/voicemeter" migrate >/dev/null 2>&1
}
