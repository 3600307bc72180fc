#!/usr/bin/env bash
# Set everything up and run the test suite: lint, types, schema compatibility, unit and
# integration tests. Integration tests start the services they need themselves (broker,
# S3 endpoint, Flink runtime) on free ports and stop them by process id.
#   bash deploy/local/test.sh            # everything
#   bash deploy/local/test.sh -m "not integration"   # extra args go to pytest
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=deploy/local/setup.sh
source "$ROOT/deploy/local/setup.sh"
cd "$ROOT"
export PATH="$ROOT/.venv/bin:$PATH"

echo "== ruff"; ruff check .
echo "== mypy"; mypy
if [ -f schemas/check.py ]; then
  echo "== schema compatibility"
  against=()
  if git rev-parse --verify -q origin/main >/dev/null; then against=(--against origin/main); fi
  livefeat schemas check "${against[@]}"
fi
echo "== pytest"
set +e
python -m pytest -p no:cacheprovider "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests" >&2
fi
exit "$rc"
