#!/usr/bin/env bash
# Installs the toolkit into the current Python (a venv or conda env is recommended outside CI).
#   bash setup/install.sh          # library + notebook widget
#   bash setup/install.sh --test   # + test tools, and Debian's chromium for the browser test
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
# torch first, the CPU build from PyTorch's own index: PyPI's Linux torch wheel is the multi-GB CUDA build.
# TORCH_INDEX_URL= (empty) installs PyPI's default build instead (CUDA on Linux); an existing torch is kept.
TORCH_INDEX_URL=${TORCH_INDEX_URL-https://download.pytorch.org/whl/cpu}
if ! "$PY" -c 'import torch' 2>/dev/null; then
    echo "install.sh: installing torch==${TORCH_VERSION:-2.13.0} from ${TORCH_INDEX_URL:-PyPI (CUDA build on Linux)}"
    # --retries 1: where the index cannot be reached, pip falls back to its configured find-links quickly
    "$PY" -m pip install -q --retries 1 "torch==${TORCH_VERSION:-2.13.0}" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
else
    echo "install.sh: keeping the installed torch $("$PY" -c 'import torch; print(torch.__version__)')"
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
# A Jupyter kernel of its own, named 'rewrite': the user's 'python3' kernel is left as it was.
if "$PY" -m ipykernel install --user --name rewrite --display-name 'Python (rewrite)' >/dev/null 2>&1; then
    echo "install.sh: installed the Jupyter kernel 'rewrite' (\"Python (rewrite)\", $("$PY" -c 'import sys; print(sys.executable)')); other kernels are unchanged"
else
    echo "install.sh: no Jupyter kernel installed (ipykernel missing?); the library and command line work without it" >&2
fi
