"""Shared benchmark helpers: peer runner calls, timing, writing docs/benchmarks.md sections."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import jax

ROOT = Path(__file__).resolve().parent.parent
PEER_PY = ROOT / "bench" / ".venv-contextualized" / "bin" / "python"
RUNNER = ROOT / "bench" / "peers" / "contextualized_runner.py"


def ensure_peer() -> None:
    if not PEER_PY.exists():
        subprocess.run(["bash", str(ROOT / "bench" / "peers" / "setup_contextualized.sh")],
                       check=True)


def run_peer(npz: str, setting: str, seed: int, threads: int = 1) -> dict:
    """One contextualized-ml fit in its own venv; returns the runner's JSON."""
    ensure_peer()
    out = subprocess.run([str(PEER_PY), str(RUNNER), npz, "--setting", setting, "--seed",
                          str(seed), "--threads", str(threads)], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def machine() -> str:
    return (f"{platform.machine()}, {os.cpu_count()} cores, Python "
            f"{platform.python_version()}, jax {jax.__version__}, "
            f"{time.strftime('%Y-%m-%d')}")


def write_section(name: str, body: str) -> None:
    """Replace the ``<!-- bench:name -->`` section of docs/benchmarks.md (create if missing)."""
    path = ROOT / "docs" / "benchmarks.md"
    text = path.read_text() if path.exists() else (
        "# Benchmarks\n\nEvery table below was written by the command shown with it "
        "(`make bench` runs them all). Machines are shared and noisy: compare the ratios "
        "measured in one run, not absolute seconds across runs.\n")
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text:
        pre, rest = text.split(start, 1)
        post = rest.split(end, 1)[1]
        text = pre + block + post
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def command() -> str:
    return "python " + " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:])
