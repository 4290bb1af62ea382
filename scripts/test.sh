#!/usr/bin/env bash
# Runs the whole test suite: lint, types, then pytest (SQLite and PostgreSQL).
source "$(dirname "$0")/_env.sh" "dev"

# PostgreSQL tests need the local server; start it if it is down.
if command -v pg_isready >/dev/null 2>&1 && ! pg_isready -q -h 127.0.0.1 -p 5432; then
  if command -v pg_ctlcluster >/dev/null 2>&1; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
    for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
  fi
fi

# The web UI's browser tests drive Debian's headless Chromium (nothing is downloaded by
# Playwright itself); install it when it is missing.
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  echo "== installing chromium (browser tests)"
  (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium) \
    >/dev/null || echo "could not install chromium: the browser tests will fail"
fi

# The chaos suite's clock-jump scenario preloads Debian's libfaketime into worker
# processes; install it when it is missing.
if [ ! -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ] && command -v apt-get >/dev/null 2>&1; then
  echo "== installing faketime (chaos clock-jump scenario)"
  (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q faketime) \
    >/dev/null || echo "could not install faketime: the clock-jump scenario will be skipped"
fi

echo "== ruff"; .venv/bin/ruff check src tests bench
echo "== mypy"; .venv/bin/mypy
echo "== import contracts"; .venv/bin/lint-imports --no-cache
echo "== docs (API reference from docstrings, warnings are errors)"; .venv/bin/mkdocs build --strict --quiet
echo "== pytest"
set +e
.venv/bin/pytest "$@"
code=$?
set -e
if [ "$code" = 5 ]; then echo "no tests ran"; exit 1; fi
exit "$code"
