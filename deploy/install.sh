#!/usr/bin/env bash
# Set up Crucible in a virtual environment (default .venv) on a fresh machine.
#
#   bash deploy/install.sh            # runtime: torch, ray, mlflow, scikit-optimize, neat-python
#   bash deploy/install.sh --test     # + pytest, ruff
#   bash deploy/install.sh --bench    # + Ray Tune, Optuna (the peers in benchmarks/)
#
# PyTorch: where no NVIDIA GPU is present this installs the CPU build torch==2.13.0.
# On a GPU machine it installs the CUDA build from PyPI instead; to choose a CUDA version:
#   .venv/bin/pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${CRUCIBLE_VENV:-.venv}"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3
extras=""
for arg in "$@"; do
  case "$arg" in
    --test) extras="${extras:+$extras,}test" ;;
    --bench) extras="${extras:+$extras,}bench" ;;
    *) echo "install.sh: unknown option $arg (allowed: --test, --bench)" >&2; exit 2 ;;
  esac
done
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "install.sh: NVIDIA GPU found; installing the CUDA build of torch 2.13.0 from PyPI"
    "${pip[@]}" "torch==2.13.0"
  else
    echo "install.sh: no GPU found; installing the CPU build torch==2.13.0"
    echo "            (for CUDA later: $VENV/bin/pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126)"
    "${pip[@]}" "torch==2.13.0"
  fi
fi
"${pip[@]}" -e ".${extras:+[$extras]}"
echo "install.sh: done ($("$VENV/bin/python" -c 'import torch, ray, mlflow; print("torch", torch.__version__, "ray", ray.__version__, "mlflow", mlflow.__version__)'))"
