#!/usr/bin/env bash
# Set up and run the whole pipeline on the embedded synthetic world.
#   bash run.sh            # default run -> out/report.md and its figures out/*.png
#   bash run.sh --quick    # tiny settings, under a minute
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
# torch first: without it, a bare `torch` requirement pulls a multi-GB CUDA build; the pinned
# CPU wheel is what these machines carry. Have a GPU? Install a CUDA torch yourself first.
$PY -c "import torch" 2>/dev/null || $PY -m pip install -q torch==2.13.0
$PY -m pip install -q -r requirements.txt
# optional extra: the report's figures. Without it the pipeline still runs, and says so.
$PY -m pip install -q -r requirements-plot.txt || echo "matplotlib not installed: the report will have no figures"
exec $PY pipeline.py "$@"
