#!/usr/bin/env bash
# Peer venv for benchmarks: contextualized-ml 0.2.9 (PyTorch) on CPU torch.
# Idempotent: does nothing if the venv already imports `contextualized`.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$(cd "$here/.." && pwd)/.venv-contextualized"
py="$(command -v python3.11 || command -v python3)"

if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import contextualized' 2>/dev/null; then
    echo "contextualized venv ready: $venv"
    exit 0
fi

"$py" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
# torch==2.13.0 is a CPU wheel on local disk; any other version is a multi-GB download.
"$venv/bin/python" -m pip install contextualized-ml==0.2.9 scikit-learn torch==2.13.0
# torchvision fails to import beside CPU torch; contextualized never uses it.
"$venv/bin/python" -m pip uninstall -y torchvision
"$venv/bin/python" -c 'import contextualized, torch; print("contextualized OK, torch", torch.__version__)'
