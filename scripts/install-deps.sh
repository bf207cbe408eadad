#!/usr/bin/env bash
# Installs, with apt-get and only where missing, what logtide's build, tests and demo need on
# Debian 12 / Ubuntu (a fresh machine with only Rust must pass scripts/test.sh after this):
# - build: gcc, pkg-config and libssl-dev (openssl-sys, pulled by mysql_cdc);
# - the database servers and clients the tests and the demo start privately: PostgreSQL
#   (server, pg_recvlogical), MariaDB (server, client, mariadb-binlog);
# - the tests' other tools: nats-server (NATS sink tests), openssl (test certificates),
#   OpenSSH client and server (SSH tunnel tests start a private sshd on their own port; the
#   system's sshd service is not enabled by this), procps (pgrep/pkill in tunnel tests),
#   python3 and npm (other PostgreSQL majors, scripts/install-pg-version.sh);
# - python-mysql-replication, the independent decoder tests/mysql_crosscheck.rs compares
#   logtide's MySQL rows with: a venv `.venv-crosscheck` at the repository's top (python3-venv
#   from apt where `python3 -m venv` cannot work), the versions pinned in
#   tests/crosscheck/requirements.txt installed from PyPI with pip; redone when that file
#   changes.
#
#   scripts/install-deps.sh          everything above
#   scripts/install-deps.sh --demo   only what scripts/demo.sh needs (the two databases)
# It prints what it installs; installing needs root or sudo.
set -euo pipefail
need=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql postgresql-contrib)
command -v psql >/dev/null 2>&1 || need+=(postgresql-client)
command -v mariadbd >/dev/null 2>&1 || need+=(mariadb-server)
command -v mariadb >/dev/null 2>&1 || need+=(mariadb-client)
if [ "${1:-}" != "--demo" ]; then
  command -v mariadb-binlog >/dev/null 2>&1 || need+=(mariadb-client)
  command -v pg_recvlogical >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/pg_recvlogical >/dev/null 2>&1 || need+=(postgresql-client)
  command -v cc >/dev/null 2>&1 || need+=(gcc libc6-dev)
  command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
  [ -f /usr/include/openssl/ssl.h ] || need+=(libssl-dev)
  command -v openssl >/dev/null 2>&1 || need+=(openssl)
  command -v nats-server >/dev/null 2>&1 || need+=(nats-server)
  command -v ssh >/dev/null 2>&1 || need+=(openssh-client)
  [ -x /usr/sbin/sshd ] || need+=(openssh-server)
  command -v pkill >/dev/null 2>&1 || need+=(procps)
  command -v npm >/dev/null 2>&1 || need+=(npm)
  if ! command -v python3 >/dev/null 2>&1; then
    need+=(python3 python3-venv)
  elif ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    # Debian's python3 has the venv module but not ensurepip without python3-venv.
    need+=(python3-venv)
  fi
fi
if [ ${#need[@]} -gt 0 ]; then
  # De-duplicate (mariadb-client can be asked for twice).
  mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "install-deps: need root or sudo to install: ${need[*]}" >&2; exit 1; }
    SUDO="sudo"
  fi
  echo "install-deps: installing with apt-get: ${need[*]}" >&2
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  # policy-rc.d-like effect: packages must not start system services we do not need; the
  # tests start their own private servers. (Debian starts postgresql/mariadb services on
  # install; that is harmless, they listen on their default ports.)
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
if [ "${1:-}" != "--demo" ]; then
  root="$(cd "$(dirname "$0")/.." && pwd)"
  venv="$root/.venv-crosscheck"
  req="$root/tests/crosscheck/requirements.txt"
  if ! cmp -s "$req" "$venv/requirements.txt" 2>/dev/null \
    || ! "$venv/bin/python" -c 'import pymysqlreplication' >/dev/null 2>&1; then
    echo "install-deps: python-mysql-replication into $venv ($req)" >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
    cp "$req" "$venv/requirements.txt"
  fi
fi
