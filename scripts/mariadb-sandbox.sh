#!/bin/sh
# A throwaway MariaDB for tests: own datadir, own socket, loopback-only random port.
#
#   mariadb-sandbox.sh start DIR   -> prints mysql://USER:PASS@127.0.0.1:PORT/DB (also DIR/dsn, DIR/env)
#   mariadb-sandbox.sh stop DIR    -> SIGTERM, SIGKILL after MARIADB_SANDBOX_STOP_TIMEOUT s; idempotent
#   mariadb-sandbox.sh purge DIR   -> stop, then delete DIR (only if start created it)
#
# Every program gets --defaults-file=DIR/my.cnf as its FIRST argument, so no distro config
# (system socket, port 3306, /var/lib/mysql) is ever read. root has no password: acceptable
# only because the server listens on 127.0.0.1 and lives for one test session.
# Knobs: MARIADB_SANDBOX_PORT, _DB, _USER, _PASSWORD, _TIMEOUT (60), _STOP_TIMEOUT (20),
# _EXTRA_CNF (extra [mariadbd] lines), _WATCH_PID (stop the server when that pid exits).
set -eu

DB=${MARIADB_SANDBOX_DB:-piko}
DBUSER=${MARIADB_SANDBOX_USER:-piko}
PASSWORD=${MARIADB_SANDBOX_PASSWORD:-piko}
TIMEOUT=${MARIADB_SANDBOX_TIMEOUT:-60}
STOP_TIMEOUT=${MARIADB_SANDBOX_STOP_TIMEOUT:-20}
MARKER=.mariadb-sandbox

die() { echo "mariadb-sandbox: $*" >&2; exit 1; }

find_prog() {  # first of the names found on PATH or in the sbin/libexec dirs
    for name in "$@"; do
        for dir in $(echo "$PATH" | tr ':' ' ') /usr/sbin /usr/local/sbin /sbin /usr/libexec /usr/local/mysql/bin; do
            if [ -x "$dir/$name" ]; then echo "$dir/$name"; return 0; fi
        done
    done
    return 1
}

is_alive() {  # a zombie counts as dead: PID 1 here reaps late and kill -0 still succeeds
    [ -n "$1" ] || return 1
    if [ -r "/proc/$1/stat" ]; then
        state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
        [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
    else
        kill -0 "$1" 2>/dev/null
    fi
}

random_port() {
    n=$(od -An -N2 -tu2 /dev/urandom | tr -d ' ')
    echo $((20000 + n % 40000))
}

sql_quote() { printf "%s" "$1" | sed "s/\\\\/\\\\\\\\/g; s/'/\\\\'/g"; }

write_cnf() {  # $1 = port
    {
        echo "[client]"
        echo "socket=$SOCKET"
        echo "user=root"
        echo "[mariadbd]"
        echo "datadir=$DIR/data"
        echo "socket=$SOCKET"
        echo "port=$1"
        echo "bind-address=127.0.0.1"
        echo "pid-file=$DIR/mariadbd.server.pid"
        echo "log-error=$DIR/error.log"
        echo "skip-name-resolve"
        echo "skip-log-bin"
        echo "performance_schema=OFF"
        echo "innodb_buffer_pool_size=64M"
        echo "innodb_log_file_size=16M"
        echo "innodb_flush_log_at_trx_commit=2"
        echo "innodb_buffer_pool_dump_at_shutdown=OFF"
        echo "innodb_buffer_pool_load_at_startup=OFF"
        echo "innodb_fast_shutdown=3"
        echo "max_connections=500"
        echo "character-set-server=utf8mb4"
        echo "collation-server=utf8mb4_unicode_ci"
        if [ "$(id -u)" = 0 ]; then echo "user=root"; fi
        if [ -n "${MARIADB_SANDBOX_EXTRA_CNF:-}" ]; then printf '%s\n' "$MARIADB_SANDBOX_EXTRA_CNF"; fi
    } >"$DIR/my.cnf"
}

pick_socket() {  # unix socket paths are limited to ~107 bytes
    if [ ${#DIR} -gt 90 ]; then
        if [ -s "$DIR/sockdir" ] && [ -d "$(cat "$DIR/sockdir")" ]; then
            SOCKDIR=$(cat "$DIR/sockdir")
        else
            SOCKDIR=$(mktemp -d /tmp/mdbsb.XXXXXX)
            echo "$SOCKDIR" >"$DIR/sockdir"
        fi
        SOCKET=$SOCKDIR/mariadbd.sock
    else
        SOCKET=$DIR/mariadbd.sock
    fi
}

launch() {  # $1 = port; sets PID; returns 0 when ready, 2 when the port was taken, 1 otherwise
    write_cnf "$1"
    : >"$DIR/error.log"
    "$MARIADBD" --defaults-file="$DIR/my.cnf" </dev/null >/dev/null 2>&1 &
    PID=$!
    echo "$PID" >"$DIR/mariadbd.pid"
    waited=0
    limit=$((TIMEOUT * 20))
    while [ "$waited" -lt "$limit" ]; do
        if "$ADMIN" --defaults-file="$DIR/my.cnf" --connect-timeout=2 ping >/dev/null 2>&1; then return 0; fi
        if ! is_alive "$PID"; then
            rm -f "$DIR/mariadbd.pid"
            if grep -q -e "Address already in use" -e "Do you already have another" "$DIR/error.log"; then
                return 2
            fi
            return 1
        fi
        sleep 0.05
        waited=$((waited + 1))
    done
    echo "mariadb-sandbox: not ready after ${TIMEOUT}s" >&2
    kill -KILL "$PID" 2>/dev/null || true
    rm -f "$DIR/mariadbd.pid"
    return 1
}

start_watchdog() {
    [ -n "${MARIADB_SANDBOX_WATCH_PID:-}" ] || return 0
    watched=$MARIADB_SANDBOX_WATCH_PID
    (
        trap '' HUP
        while is_alive "$watched" && is_alive "$PID"; do sleep 0.5; done
        if is_alive "$PID"; then kill -TERM "$PID" 2>/dev/null || true; fi
    ) </dev/null >/dev/null 2>&1 &
    echo $! >"$DIR/watchdog.pid"
}

create_db_and_user() {
    pw=$(sql_quote "$PASSWORD")
    pattern=$(printf '%s' "$DB" | sed 's/_/\\_/g')
    "$CLIENT" --defaults-file="$DIR/my.cnf" <<SQL
CREATE DATABASE IF NOT EXISTS \`$DB\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
CREATE USER IF NOT EXISTS '$DBUSER'@'%' IDENTIFIED BY '$pw';
CREATE USER IF NOT EXISTS '$DBUSER'@'localhost' IDENTIFIED BY '$pw';
ALTER USER '$DBUSER'@'%' IDENTIFIED BY '$pw';
ALTER USER '$DBUSER'@'localhost' IDENTIFIED BY '$pw';
GRANT ALL ON \`$DB\`.* TO '$DBUSER'@'%';
GRANT ALL ON \`$DB\`.* TO '$DBUSER'@'localhost';
GRANT ALL ON \`${pattern}\\_%\`.* TO '$DBUSER'@'%';
GRANT ALL ON \`${pattern}\\_%\`.* TO '$DBUSER'@'localhost';
SQL
}

cmd_start() {
    MARIADBD=$(find_prog mariadbd mysqld) || die "mariadbd not found (install mariadb-server)"
    INSTALL_DB=$(find_prog mariadb-install-db mysql_install_db) || die "mariadb-install-db not found"
    ADMIN=$(find_prog mariadb-admin mysqladmin) || die "mariadb-admin not found (install mariadb-client)"
    CLIENT=$(find_prog mariadb mysql) || die "mariadb client not found (install mariadb-client)"
    [ -e "$DIR" ] || { mkdir -p "$DIR"; : >"$DIR/$MARKER"; }
    DIR=$(cd "$DIR" && pwd)
    if [ -s "$DIR/mariadbd.pid" ] && is_alive "$(cat "$DIR/mariadbd.pid")"; then
        die "a server from $DIR is already running (pid $(cat "$DIR/mariadbd.pid")); stop it first"
    fi
    pick_socket
    fixed_port=${MARIADB_SANDBOX_PORT:-}
    port=$fixed_port
    [ -n "$port" ] || { [ -s "$DIR/port" ] && port=$(cat "$DIR/port"); } || true
    [ -n "$port" ] || port=$(random_port)
    if [ ! -d "$DIR/data/mysql" ]; then
        write_cnf "$port"
        as_root=""
        if [ "$(id -u)" = 0 ]; then as_root="--user=root"; fi
        "$INSTALL_DB" --defaults-file="$DIR/my.cnf" --auth-root-authentication-method=normal \
            --skip-test-db $as_root >"$DIR/install.log" 2>&1 </dev/null \
            || { tail -n 20 "$DIR/install.log" >&2; die "mariadb-install-db failed (log: $DIR/install.log)"; }
    fi
    tries=0
    while :; do
        status=0
        launch "$port" || status=$?
        [ "$status" = 0 ] && break
        tries=$((tries + 1))
        if [ "$status" = 2 ] && [ -z "$fixed_port" ] && [ "$tries" -lt 10 ]; then
            port=$(random_port)
            continue
        fi
        tail -n 20 "$DIR/error.log" >&2
        die "mariadbd did not start (log: $DIR/error.log)"
    done
    start_watchdog
    create_db_and_user || { cmd_stop; die "creating database/user failed"; }
    dsn="mysql://$DBUSER:$PASSWORD@127.0.0.1:$port/$DB"
    echo "$port" >"$DIR/port"
    echo "$dsn" >"$DIR/dsn"
    {
        echo "MARIADB_SANDBOX_DSN='$dsn'"
        echo "MARIADB_SANDBOX_HOST=127.0.0.1"
        echo "MARIADB_SANDBOX_PORT=$port"
        echo "MARIADB_SANDBOX_SOCKET='$SOCKET'"
        echo "MARIADB_SANDBOX_USER='$DBUSER'"
        echo "MARIADB_SANDBOX_PASSWORD='$PASSWORD'"
        echo "MARIADB_SANDBOX_DB='$DB'"
        echo "MARIADB_SANDBOX_PID=$PID"
    } >"$DIR/env"
    echo "$dsn"
}

cmd_stop() {
    [ -d "$DIR" ] || return 0
    if [ -s "$DIR/watchdog.pid" ]; then
        kill -TERM "$(cat "$DIR/watchdog.pid")" 2>/dev/null || true
        rm -f "$DIR/watchdog.pid"
    fi
    if [ -s "$DIR/mariadbd.pid" ]; then
        pid=$(cat "$DIR/mariadbd.pid")
        if is_alive "$pid"; then
            kill -TERM "$pid" 2>/dev/null || true
            waited=0
            while is_alive "$pid" && [ "$waited" -lt $((STOP_TIMEOUT * 20)) ]; do
                sleep 0.05
                waited=$((waited + 1))
            done
            if is_alive "$pid"; then
                echo "mariadb-sandbox: pid $pid ignored SIGTERM for ${STOP_TIMEOUT}s; sending SIGKILL" >&2
                kill -KILL "$pid" 2>/dev/null || true
                while is_alive "$pid"; do sleep 0.05; done
            fi
        fi
        rm -f "$DIR/mariadbd.pid"
    fi
    if [ -s "$DIR/sockdir" ]; then
        rm -rf "$(cat "$DIR/sockdir")"
        rm -f "$DIR/sockdir"
    fi
}

cmd_purge() {
    cmd_stop
    [ -d "$DIR" ] || return 0
    if [ -e "$DIR/$MARKER" ]; then
        rm -rf "$DIR"
    else  # DIR existed before start: delete only what start created
        rm -rf "$DIR/data"
        rm -f "$DIR/my.cnf" "$DIR/error.log" "$DIR/install.log" "$DIR/dsn" "$DIR/port" "$DIR/env" \
            "$DIR/mariadbd.server.pid" "$DIR/mariadbd.sock"
    fi
}

[ $# -eq 2 ] || die "usage: $0 start|stop|purge DIR"
DIR=$2
case "$1" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    purge) cmd_purge ;;
    *) die "unknown command '$1' (use start, stop or purge)" ;;
esac
