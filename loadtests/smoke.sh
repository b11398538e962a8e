#!/usr/bin/env bash
# The Locust smoke run inside `make test`: ~20 s of a sale opening against a private server
# (own port, random KAI_KEY_PREFIX, private database created, migrated and dropped), then the
# thresholds of loadtests/thresholds.toml [smoke] and the oversell check. Non-zero on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY_VENV:-.venv/bin/python}
if [ ! -x "$PY" ]; then PY=python3; fi
exec "$PY" loadtests/run.py --profile smoke "$@"
