#!/usr/bin/env bash
# A private PostgreSQL cluster in one folder, for the MLflow tracking server and shared
# Optuna studies on one machine (`make tracking-server`) and for the tests.
#
#   scripts/local-postgres.sh start DIR [PORT [DATABASE...]]   init if new, start, create databases
#   scripts/local-postgres.sh uri DIR [DATABASE]               print the URI (with the password)
#   scripts/local-postgres.sh stop DIR                         stop (the data stays)
#
# DIR/data is the cluster, DIR/run its unix socket, DIR/postgres.log its log, DIR/port the
# port it was started on. The server listens on 127.0.0.1 only. The login role is `sml`
# (superuser of this cluster only) with the password $SML_PG_PASSWORD, or one generated
# at init and kept in DIR/password (mode 600). TCP logins need the password
# (scram-sha-256); the socket, inside DIR, trusts the cluster's owner. The password is
# never put on a command line nor printed, except by `uri`.
#
# PostgreSQL refuses to run as root: as root the cluster belongs to the `postgres` user
# (Debian's package creates it), or to a system user `sml-postgres` created when there is
# none; DIR must then be reachable by that user. Defaults: PORT $SML_PG_PORT or 55432,
# DATABASE mlflow and optuna.
set -euo pipefail

die() { echo "error: $*" >&2; exit 1; }

pg_bin() {
  local found
  found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -z "$found" ] && command -v pg_ctl >/dev/null 2>&1; then
    found=$(dirname "$(readlink -f "$(command -v pg_ctl)")")
  fi
  [ -n "$found" ] && [ -x "$found/pg_ctl" ] && [ -x "$found/psql" ] \
    || die "PostgreSQL is not installed (run: make system-deps, or apt-get install postgresql)"
  echo "$found"
}

# The OS user that owns and runs the cluster: ourselves, or an unprivileged one as root.
cluster_user() {
  if [ "$(id -u)" -ne 0 ]; then
    id -un
  elif id postgres >/dev/null 2>&1; then
    echo postgres
  else
    id sml-postgres >/dev/null 2>&1 || useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin sml-postgres
    echo sml-postgres
  fi
}

as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u "$OWNER" -- "$@"
  else
    "$@"
  fi
}

[ $# -ge 2 ] || die "usage: $0 start|uri|stop DIR [PORT [DATABASE...]]"
command=$1
DIR=$2
shift 2
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
BIN=$(pg_bin)
OWNER=$(cluster_user)
DATA=$DIR/data
SOCKET_DIR=$DIR/run
PASSWORD_FILE=$DIR/password

password() {
  if [ -n "${SML_PG_PASSWORD:-}" ]; then
    printf '%s' "$SML_PG_PASSWORD"
  elif [ -f "$PASSWORD_FILE" ]; then
    cat "$PASSWORD_FILE"
  else
    die "no password for $DIR: set SML_PG_PASSWORD or run '$0 start $DIR' first"
  fi
}

running() { [ -f "$DATA/postmaster.pid" ] && as_owner "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; }

init_cluster() {
  if [ -z "${SML_PG_PASSWORD:-}" ] && [ ! -f "$PASSWORD_FILE" ]; then
    (umask 077 && od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$PASSWORD_FILE")
  fi
  if [ "$(id -u)" -eq 0 ]; then
    chown "$OWNER" "$DIR"
    as_owner test -x "$DIR" || die "$DIR is not reachable by the user '$OWNER' that runs PostgreSQL (a parent folder is private); use a folder under /tmp or /srv"
  fi
  local pwfile=$DIR/.initdb-password
  (umask 077 && password >"$pwfile")
  [ "$(id -u)" -ne 0 ] || chown "$OWNER" "$pwfile"
  as_owner "$BIN/initdb" -D "$DATA" -U sml --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256 \
    --encoding=UTF8 --locale=C.UTF-8 >"$DIR/initdb.log" 2>&1 || { rm -f "$pwfile"; cat "$DIR/initdb.log" >&2; die "initdb failed in $DATA"; }
  rm -f "$pwfile"
}

start() {
  local port=${1:-${SML_PG_PORT:-55432}}
  shift || true
  local databases=("$@")
  [ ${#databases[@]} -gt 0 ] || databases=(mlflow optuna)
  [ -f "$DATA/PG_VERSION" ] || init_cluster
  if running; then
    echo "PostgreSQL already running in $DATA on port $(cat "$DIR/port" 2>/dev/null || echo '?')"
  else
    mkdir -p "$SOCKET_DIR"
    [ "$(id -u)" -ne 0 ] || chown "$OWNER" "$SOCKET_DIR"
    touch "$DIR/postgres.log"
    [ "$(id -u)" -ne 0 ] || chown "$OWNER" "$DIR/postgres.log"
    as_owner "$BIN/pg_ctl" -D "$DATA" -l "$DIR/postgres.log" -w -t 60 \
      -o "-p $port -c listen_addresses=127.0.0.1 -k '$SOCKET_DIR'" start >/dev/null \
      || { tail -n 20 "$DIR/postgres.log" >&2; die "PostgreSQL did not start on 127.0.0.1:$port (log: $DIR/postgres.log)"; }
    echo "$port" >"$DIR/port"
  fi
  port=$(cat "$DIR/port")
  local db exists
  for db in "${databases[@]}"; do
    [[ $db =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "database name '$db' must be letters, digits and _"
    exists=$(as_owner "$BIN/psql" -h "$SOCKET_DIR" -p "$port" -U sml -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'")
    [ "$exists" = 1 ] || as_owner "$BIN/createdb" -h "$SOCKET_DIR" -p "$port" -U sml "$db"
  done
  echo "PostgreSQL on 127.0.0.1:$port (data $DATA, log $DIR/postgres.log): postgresql://sml:***@127.0.0.1:$port/{$(IFS=,; echo "${databases[*]}")}"
}

stop() {
  if running; then
    as_owner "$BIN/pg_ctl" -D "$DATA" -m fast -w -t 60 stop >/dev/null
    echo "PostgreSQL in $DATA stopped"
  else
    echo "PostgreSQL in $DATA is not running"
  fi
}

uri() {
  local db=${1:-mlflow}
  [ -f "$DIR/port" ] || die "no cluster started in $DIR (run '$0 start $DIR')"
  printf 'postgresql://sml:%s@127.0.0.1:%s/%s\n' "$(password)" "$(cat "$DIR/port")" "$db"
}

case $command in
  start) start "$@" ;;
  stop) stop ;;
  uri) uri "$@" ;;
  *) die "unknown command '$command' (expected start, uri or stop)" ;;
esac
