#!/usr/bin/env bash
# Set everything up and run the main job end to end on the embedded stack:
# start the broker and S3 endpoint, publish reference traffic, run the reference pipeline,
# print what it produced, and stop the services it started (by process id).
#   bash deploy/local/demo.sh [--events N] [--seed S]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
EVENTS=20000
SEED=7
while [ $# -gt 0 ]; do
  case "$1" in
    --events) EVENTS="$2"; shift 2 ;;
    --seed) SEED="$2"; shift 2 ;;
    *) echo "unknown option $1 (use --events N, --seed S)" >&2; exit 2 ;;
  esac
done
# shellcheck source=deploy/local/setup.sh
source "$ROOT/deploy/local/setup.sh"
cd "$ROOT"
LF="$ROOT/.venv/bin/livefeat"

# The embedded broker keeps topics in memory, so every `stack up` starts from offset 0:
# clear the previous demo's stores, or the run would mix two generations of the same offsets.
if ! "$LF" stack status >/dev/null 2>&1; then
  echo "clearing the previous demo run's offline store, online store and checkpoints (.livefeat/)"
  rm -rf .livefeat/offline .livefeat/online.db .livefeat/registry.db .livefeat/checkpoints
fi
"$LF" stack up
trap '"$LF" stack down' EXIT
"$LF" generate --events "$EVENTS" --seed "$SEED" --out-of-order 0.02 --late 0.002 \
  --bad-undecodable 0.001 --bad-unknown-fingerprint 0.001 --bad-invalid 0.002
"$LF" run marketplace --bounded
# What the online store now serves for one user: a generated fraud account if there is one,
# else the user whose features changed last.
USER_ID="$("$ROOT/.venv/bin/python" - <<'PY'
import json
from pipelines.sinks.parquet import read_dataset
fraud = json.load(open(".livefeat/generate-manifest.json"))["fraud_user_ids"]
if fraud:
    print(fraud[0])
else:
    rows = read_dataset(".livefeat/offline", "features/user_features").sort_by("event_timestamp")
    print(rows.column("user_id")[-1])
PY
)"
echo "online features of user $USER_ID (Feast, SQLite online store):"
"$LF" features get user_features --entity "user_id=$USER_ID"
