#!/usr/bin/env bash
# Installs what the tests need and runs the whole suite (slow end-to-end tests included).
set -euo pipefail
cd "$(dirname "$0")/.."
bash setup/install.sh --test
"${PYTHON:-python3}" -m ruff check .
exec "${PYTHON:-python3}" -m pytest -q --durations=15 "$@"
