#!/usr/bin/env bash
# Install everything the test suite needs (Dovecot, Chromium, the Python packages in a
# virtualenv) and run the whole suite on every core (pytest-xdist). Extra arguments go to
# pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
command -v dovecot >/dev/null 2>&1 || [ -x /usr/sbin/dovecot ] || missing+=(dovecot-imapd)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
[ -x /usr/sbin/postfix ] || missing+=(postfix)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
python3 -c "import ensurepip, venv" >/dev/null 2>&1 || missing+=(python3-venv)
compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null || missing+=(postgresql)
if [ "${#missing[@]}" -gt 0 ]; then
    # Postfix for the MTA tests: installed unconfigured and stopped (each test runs its own).
    echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
    # PostgreSQL for the store tests: the server binaries only, no cluster of the
    # distribution's (tests/pg.py runs its own in a temp dir).
    $SUDO mkdir -p /etc/postgresql-common
    [ -e /etc/postgresql-common/createcluster.conf ] || \
        echo "create_main_cluster = false" | $SUDO tee /etc/postgresql-common/createcluster.conf >/dev/null
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -q -n auto "$@"
