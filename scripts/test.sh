#!/usr/bin/env bash
# The whole test suite on a fresh Debian machine: installs what it needs (MariaDB and Chromium
# included, when run as root), builds .venv with the [dev] extra, runs pytest. Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

have_mariadb() { command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ]; }
have_chromium() { command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
  || command -v google-chrome >/dev/null 2>&1 || [ -n "${PIKO_TEST_CHROMIUM:-}" ]; }
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  need=()
  have_mariadb || need+=(mariadb-server mariadb-client)
  have_chromium || need+=(chromium)  # the status page's browser test (tests/browser.py)
  python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
  if [ ${#need[@]} -gt 0 ]; then
    echo "test.sh: installing ${need[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
fi
have_mariadb || echo "test.sh: no MariaDB server here: MySQL tests will be skipped (run as root to install it)" >&2
have_chromium || echo "test.sh: no Chromium here: the browser test will be skipped (run as root to install it)" >&2

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.piko-dev-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e '.[dev]'
  touch "$stamp"
fi
exec .venv/bin/python -m pytest -q "$@"
