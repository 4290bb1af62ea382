#!/usr/bin/env bash
# Runs the whole test suite: lint, types, docs, then pytest (SQLite and PostgreSQL),
# in parallel and then the tests that must run alone.
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

# The suite runs under Debian's eatmydata (fsync and friends become no-ops): the tests
# check behaviour, and a killed process loses nothing the operating system already holds;
# power loss is checked by tests/chaos/test_powerloss.py through a VFS that does not need
# the disk. TETHER_TEST_DURABLE=1 runs with every flush (and the test databases'
# synchronous_commit on, see tests/conftest.py).
if [ ! -x /usr/bin/eatmydata ] && command -v apt-get >/dev/null 2>&1; then
  echo "== installing eatmydata (the suite skips fsync)"
  (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q eatmydata) \
    >/dev/null || echo "could not install eatmydata: the suite runs with every fsync"
fi
nosync=()
case "${TETHER_TEST_DURABLE:-}" in
  1|true|yes) ;;
  *) if [ -x /usr/bin/eatmydata ]; then nosync=(/usr/bin/eatmydata); fi ;;
esac

# Let Python keep compiled modules (some environments set PYTHONDONTWRITEBYTECODE): without
# them every pytest process rewrites the asserts of ~600 modules again (~9 s each) and every
# worker process a test spawns compiles Tether from source.
unset PYTHONDONTWRITEBYTECODE

echo "== ruff"; .venv/bin/ruff check src tests bench
echo "== mypy"; .venv/bin/mypy
echo "== import contracts"; .venv/bin/lint-imports --no-cache
# (Not --quiet: it hides the warnings from --strict, which then has none to fail on.)
echo "== docs (API reference from docstrings, warnings are errors)"
if ! docs_log=$(.venv/bin/mkdocs build --strict 2>&1); then echo "$docs_log"; exit 1; fi
# pytest in two parts: every test not marked `serial` on TETHER_TEST_WORKERS processes
# (pytest-xdist, idle processes take queued tests from busy ones; each test has its own
# files, ports and databases), then the `serial`
# tests one at a time (they restart the shared PostgreSQL, or check a bound that other
# tests' load on the machine would break).
# Arguments pass through to both parts; a `-m EXPR` of the caller is combined with
# each part's marker expression. A part that selects nothing is fine, not both.
workers="${TETHER_TEST_WORKERS:-4}"
expr=""
args=()
while [ "$#" -gt 0 ]; do
  case "$1" in
    -m) expr="$2"; shift 2 ;;
    -m*) expr="${1#-m}"; shift ;;
    *) args+=("$1"); shift ;;
  esac
done
both() { if [ -n "$expr" ]; then echo "($expr) and $1"; else echo "$1"; fi; }
set +e
echo "== pytest (parallel: $workers processes)"
${nosync[@]+"${nosync[@]}"} .venv/bin/pytest -n "$workers" --dist worksteal -m "$(both "not serial")" ${args[@]+"${args[@]}"}
parallel=$?
echo "== pytest (serial)"
# Without paths among the arguments, the serial part collects only the files that mark
# tests `serial` (collecting the whole suite to pick 4 tests costs ~8 s); a `serial`
# mark is always written in the test's own file.
where=()
positional=0
for a in ${args[@]+"${args[@]}"}; do case "$a" in -*) ;; *) positional=1 ;; esac; done
if [ "$positional" = 0 ]; then
  mapfile -t where < <(grep -rlE --include='test_*.py' 'mark\.serial' tests | sort)
fi
${nosync[@]+"${nosync[@]}"} .venv/bin/pytest -m "$(both "serial")" ${args[@]+"${args[@]}"} ${where[@]+"${where[@]}"} -n 0
serial=$?
set -e
if [ "$parallel" = 5 ] && [ "$serial" = 5 ]; then echo "no tests ran"; exit 1; fi
for code in "$parallel" "$serial"; do
  if [ "$code" != 0 ] && [ "$code" != 5 ]; then exit "$code"; fi
done
exit 0
