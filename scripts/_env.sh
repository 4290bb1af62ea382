# Shared by scripts/demo.sh and scripts/test.sh: a project virtualenv with the
# project installed; reinstalled only when pyproject.toml changes.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
EXTRAS="${1:-}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
STAMP=".venv/.tether-installed${EXTRAS:+-$EXTRAS}"
WANT="$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e ".${EXTRAS:+[$EXTRAS]}"
  echo "$WANT" > "$STAMP"
fi
