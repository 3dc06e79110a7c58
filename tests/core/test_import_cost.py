"""What ``import ctxppl`` loads: every fresh process (a script, ``ctxppl fit``, a fresh-process
``ctx.mixed`` fit) pays for it, so modules that are slow to import and needed only by some
functions are imported inside those functions."""

import json
import subprocess
import sys

# scipy.stats (~0.7 s), the plotting and posterior-file stack: each needed by a few functions
HEAVY = ("scipy.stats", "matplotlib", "arviz", "pandas", "sklearn")


def test_import_ctxppl_leaves_heavy_modules_unloaded():
    code = ("import json, sys, ctxppl\n"
            f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=300)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
