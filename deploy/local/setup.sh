#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment at .venv/ and check for Java 17.
#
# Idempotent: when .venv already holds exactly what requirements.lock and
# pyproject.toml ask for, it only re-checks Java and returns in about a second.
# Source it to get JAVA_HOME exported; run it to just prepare the machine.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="$ROOT/.venv"
STAMP="$VENV/.livefeat-installed"

say() { printf '[livefeat setup] %s\n' "$*" >&2; }
die() { printf '[livefeat setup] ERROR: %s\n' "$*" >&2; exit 1; }

# --- Python 3.11 -------------------------------------------------------------
find_python() {
  local cand
  for cand in "${LIVEFEAT_PYTHON:-}" python3.11 python3; do
    [ -n "$cand" ] || continue
    if command -v "$cand" >/dev/null 2>&1 &&
       "$cand" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' 2>/dev/null; then
      command -v "$cand"; return 0
    fi
  done
  return 1
}

# --- Java 17 (Flink 2.0 runs on 11, 17 or 21; the project is tested on 17) ----
java_major() {
  "$1" -version 2>&1 | awk -F'"' '/version/ {split($2, v, "."); print (v[1] == "1" ? v[2] : v[1]); exit}'
}

find_java_home() {
  local cand
  for cand in "${JAVA_HOME:-}" /usr/lib/jvm/java-17-openjdk-* /usr/lib/jvm/*17* \
              /opt/homebrew/opt/openjdk@17 /usr/local/opt/openjdk@17; do
    [ -n "$cand" ] && [ -x "$cand/bin/java" ] || continue
    if [ "$(java_major "$cand/bin/java")" = "17" ]; then echo "$cand"; return 0; fi
  done
  if command -v java >/dev/null 2>&1 && [ "$(java_major java)" = "17" ]; then
    dirname "$(dirname "$(readlink -f "$(command -v java)")")"; return 0
  fi
  return 1
}

JAVA_HOME_FOUND="$(find_java_home)" || die "Java 17 not found (Flink needs it).
  Debian/Ubuntu: sudo apt-get install -y openjdk-17-jdk-headless
  macOS:         brew install openjdk@17
  Then set JAVA_HOME to the JDK 17 directory, or leave it unset if it is under /usr/lib/jvm."
export JAVA_HOME="$JAVA_HOME_FOUND"

PY="$(find_python)" || die "Python 3.11 not found. Install it (e.g. apt-get install python3.11 python3.11-venv, or pyenv install 3.11) or set LIVEFEAT_PYTHON to its path."

# --- virtual environment -----------------------------------------------------
want="$(cat "$ROOT/requirements.lock" "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x "$VENV/bin/livefeat" ]; then
  say "environment up to date ($VENV), JAVA_HOME=$JAVA_HOME"
else
  say "creating the environment in $VENV (first time: about 2 minutes)"
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$ROOT/requirements.lock"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -e "$ROOT"
  "$VENV/bin/python" -m pip check >/dev/null || die "pip check found conflicts in $VENV; delete it and run again"
  echo "$want" > "$STAMP"
  say "environment ready, JAVA_HOME=$JAVA_HOME"
fi
