#!/usr/bin/env bash
# Install what the tests need, then run them (offline, CPU, ~5 minutes on 2 cores).
#   bash test.sh                 # the whole suite
#   bash test.sh tests/test_ppo.py -k gae
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
export PIP_DISABLE_PIP_VERSION_CHECK=1
# torch first: a bare `torch` requirement would pull a multi-GB CUDA build
$PY -c "import torch" 2>/dev/null || $PY -m pip install -q torch==2.13.0
$PY -m pip install -q -r requirements.txt -r requirements-dev.txt
exec $PY -m pytest -q "${@:-tests}"
