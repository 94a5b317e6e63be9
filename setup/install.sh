#!/usr/bin/env bash
# Installs the toolkit into the current Python (a venv or conda env is recommended outside CI).
#   bash setup/install.sh          # library + notebook widget
#   bash setup/install.sh --test   # + test tools, and Debian's chromium for the browser test
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
# torch first: a bare "torch" requirement would pull a multi-GB CUDA build on a machine without it.
if ! "$PY" -c 'import torch' 2>/dev/null; then
    "$PY" -m pip install -q "torch==${TORCH_VERSION:-2.13.0}"
fi
if [ "${1:-}" = "--test" ]; then
    "$PY" -m pip install -q -e ".[notebook,test]"
    if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
            || echo "install.sh: could not install chromium; the browser test will be skipped" >&2
    fi
else
    "$PY" -m pip install -q -e ".[notebook]"
fi
"$PY" -m ipykernel install --user --name python3 >/dev/null 2>&1 || true
