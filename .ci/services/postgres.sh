# PostgreSQL from Debian's packages, in a throwaway folder, on a free loopback port.
APT_PACKAGES="$APT_PACKAGES postgresql"

start_postgres() {
  local bindir; bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  local dir="$CI_WORK/pg"; mkdir -p "$dir"; chown postgres "$dir"
  local port; port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  su postgres -s /bin/sh -c "$bindir/initdb -D $dir/data -A trust -U postgres" >/dev/null
  su postgres -s /bin/sh -c "$bindir/pg_ctl -D $dir/data -l $dir/log -o '-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off' -w start" >/dev/null
  PG_BINDIR=$bindir; PG_DIR=$dir
  export LAUNCHYARD_TEST_POSTGRES_URL="postgresql+psycopg://postgres@127.0.0.1:$port/postgres"
  echo "PostgreSQL on port $port"
}

stop_postgres() {
  [ -n "${PG_DIR:-}" ] && su postgres -s /bin/sh -c "$PG_BINDIR/pg_ctl -D $PG_DIR/data -m immediate stop" >/dev/null 2>&1 || true
}
