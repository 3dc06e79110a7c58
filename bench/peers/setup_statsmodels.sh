#!/usr/bin/env bash
# Peer venv for benchmarks: statsmodels (classical varying-coefficient / OLS
# baselines). Idempotent.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$(cd "$here/.." && pwd)/.venv-stats"
py="$(command -v python3)"
probe='import statsmodels.api, pandas'

if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "$probe" 2>/dev/null; then
    echo "statsmodels venv ready: $venv"
    exit 0
fi

"$py" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install statsmodels pandas
"$venv/bin/python" -c "$probe; import statsmodels; print('statsmodels', statsmodels.__version__, 'OK')"
