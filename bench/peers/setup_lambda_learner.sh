#!/usr/bin/env bash
# Peer venv for benchmarks: LinkedIn's lambda-learner 0.1.0 (GLMix-style
# per-entity logistic/linear models on scipy). Idempotent.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$(cd "$here/.." && pwd)/.venv-lambda"
py="$(command -v python3.11 || command -v python3)"
probe='import linkedin.learner'

if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "$probe" 2>/dev/null; then
    echo "lambda-learner venv ready: $venv"
    exit 0
fi

"$py" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install lambda-learner==0.1.0 numpy scipy scikit-learn
"$venv/bin/python" -c "$probe; print('lambda-learner OK')"
