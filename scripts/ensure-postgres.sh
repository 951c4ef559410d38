#!/usr/bin/env bash
# The PostgreSQL instance test (relops_pipeline_tests/test_postgres_instance.py) starts its own
# server from the distribution's binaries. Install them from Debian packages when they are
# missing (as root, or through sudo); when that is not possible, say so and let the test fail
# with its message.
set -uo pipefail
if compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || command -v initdb >/dev/null; then
  exit 0
fi
if [ "$(id -u)" -eq 0 ]; then as_root=(); elif sudo -n true 2>/dev/null; then as_root=(sudo -n); else
  echo "ensure-postgres: PostgreSQL's server binaries are missing and this user cannot install them" \
       "(apt-get install postgresql as root); the PostgreSQL test will fail" >&2
  exit 0
fi
command -v apt-get >/dev/null || { echo "ensure-postgres: no apt-get here; install PostgreSQL's server by hand" >&2; exit 0; }
echo "installing PostgreSQL server packages (apt-get install postgresql)"
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  -o Dpkg::Use-Pty=0 postgresql >/dev/null
# The package may create and start a default cluster on port 5432; the test needs none.
if command -v pg_lsclusters >/dev/null; then
  pg_lsclusters --no-header | awk '$4 == "online" {print $1, $2}' | while read -r version cluster; do
    "${as_root[@]}" pg_ctlcluster "$version" "$cluster" stop
  done
fi
exit 0
