#!/usr/bin/env bash
# Create .venv and install aiflow with everything it needs, torch first (CPU wheel where one is
# available locally) so that no dependency pulls a multi-GB CUDA build. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip_install() {  # pip's own exit status decides (pipefail); only its noise about local indexes is filtered
  .venv/bin/python -m pip install -q "$@" 2>&1 | { grep -v "^WARNING: Location" || true; }
}
pip_install --upgrade pip
pip_install -c requirements/constraints.txt "torch==2.13.0"
pip_install -c requirements/constraints.txt -e ".[dev]"
.venv/bin/python -c "import torch, aiflow_cli; assert torch.__version__.startswith('2.13.0'), torch.__version__"
echo "aiflow installed in .venv ($(.venv/bin/aiflow --version))"
