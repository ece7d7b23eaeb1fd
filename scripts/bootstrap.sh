#!/usr/bin/env bash
# Installs what Centaure needs on a fresh Debian machine: system packages,
# a virtualenv with the project and its test tools. Idempotent and quiet.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v snmpd >/dev/null || need_apt+=(snmpd)
command -v snmpget >/dev/null || need_apt+=(snmp)
# The web console's browser tests drive Debian's Chromium through its chromedriver.
command -v chromium >/dev/null || need_apt+=(chromium)
command -v chromedriver >/dev/null || need_apt+=(chromium-driver)
# npm fetches the console's charting library (scripts/vendor-uplot.sh).
command -v npm >/dev/null || need_apt+=(npm)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "bootstrap: apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.centaure-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ setup.py -nt "$stamp" ]; then
  echo "bootstrap: pip install -e .[test]"
  .venv/bin/pip install -q --upgrade pip >/dev/null 2>&1 || true
  .venv/bin/pip install -q -e '.[test]' 2>&1 \
    | grep -vE '^(WARNING: Location|  |$)' || true
  touch "$stamp"
fi
scripts/vendor-uplot.sh
