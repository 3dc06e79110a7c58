"""Fresh Python processes for the tests of what persists across them (the compilation cache,
the store of compiled programs): one environment, one way to start a child and read the JSON
line it prints last."""

import json
import os
import subprocess
import sys

from ctxppl._cache import ENV_DIR


def child_env(root, **extra):
    """This environment without the user's ctxppl/JAX cache settings, with ``root`` as
    ctxppl's cache folder and the CPU backend."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CTXPPL_", "JAX_COMPILATION_CACHE", "JAX_PERSISTENT_CACHE"))}
    env.update({ENV_DIR: str(root), "JAX_PLATFORMS": "cpu"}, **extra)
    return env


def start(code, root, argv, **extra):
    """``python -c code *argv`` in the background, with :func:`child_env`."""
    return subprocess.Popen([sys.executable, "-c", code, *argv], env=child_env(root, **extra),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def result(proc):
    """The JSON object a child printed last (it must exit 0 within 300 s)."""
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])
