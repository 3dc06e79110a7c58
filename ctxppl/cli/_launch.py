"""``ctxppl launch -n N script.py [args]``: the same script as N local processes of one run.

For a quick multi-process try on one machine: N copies of the script start with
``CTXPPL_COORDINATOR`` (a free port on 127.0.0.1), ``CTXPPL_NUM_PROCESSES`` and
``CTXPPL_PROCESS_ID`` set, which ``ctx.distributed.initialize()`` reads, and one
``PYTHONHASHSEED`` for all. Nothing is
scheduled here: on a cluster the cluster manager starts the processes (``srun``, a
Kubernetes indexed Job, ...) and ``initialize`` reads the same settings from there.

Each output line is prefixed with ``[pI]``. When a process fails the others get
``--grace`` seconds to stop by themselves (JAX fails them at their next collective or
heartbeat), then they are terminated; the launcher exits with the first failure's code.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

from ctxppl.infer._distributed import ENV

__all__ = ["run_launch", "free_port", "launch_env"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch_env(base: dict[str, str], port: int, num: int, rank: int,
               cpu_devices: int | None = None, heartbeat_timeout: int | None = None,
               collective_timeout: int | None = None) -> dict[str, str]:
    """The environment of process ``rank`` of ``num`` (what :func:`run_launch` sets).

    Examples:
        >>> env = launch_env({}, 1234, 2, 1)
        >>> env["CTXPPL_COORDINATOR"], env["CTXPPL_NUM_PROCESSES"], env["CTXPPL_PROCESS_ID"]
        ('127.0.0.1:1234', '2', '1')
    """
    env = dict(base)
    env[ENV["coordinator"]] = f"127.0.0.1:{port}"
    env[ENV["num_processes"]] = str(num)
    env[ENV["process_id"]] = str(rank)
    env["PYTHONUNBUFFERED"] = "1"
    # every process must hash strings alike (see ctx.distributed.initialize)
    env.setdefault("PYTHONHASHSEED", "0")
    if heartbeat_timeout is not None:
        env[ENV["heartbeat"]] = str(heartbeat_timeout)
    if collective_timeout is not None:
        env[ENV["collective"]] = str(collective_timeout)
    if cpu_devices is not None:
        flags = [f for f in env.get("XLA_FLAGS", "").split()
                 if not f.startswith("--xla_force_host_platform_device_count")]
        env["XLA_FLAGS"] = " ".join(flags + [
            f"--xla_force_host_platform_device_count={cpu_devices}"])
    return env


def _pump(stream: Any, prefix: str, out: Any, lock: threading.Lock) -> None:
    for line in iter(stream.readline, b""):
        text = line.decode(errors="replace")
        with lock:
            out.write(prefix + text if text.endswith("\n") else prefix + text + "\n")
            out.flush()
    stream.close()


def _stop(procs: list[subprocess.Popen], wait: float = 5.0) -> None:
    """Terminate the processes still running (by pid), then kill what did not stop."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    end = time.monotonic() + wait
    for p in procs:
        try:
            p.wait(max(0.0, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def run_launch(args: Any) -> int:
    """Run ``args.target`` as ``args.num_processes`` local processes; return the exit code."""
    from ctxppl.cli._data import UsageError

    n = args.num_processes
    if n < 1:
        raise UsageError(f"`-n` must be a positive number of processes; got {n}.")
    if args.cpu_devices is not None and args.cpu_devices < 1:
        raise UsageError(f"`--cpu-devices` must be positive; got {args.cpu_devices}.")
    if args.module:
        cmd = [sys.executable, "-m", args.target, *args.args]
    else:
        if not os.path.isfile(args.target):
            raise UsageError(f"`SCRIPT`: no such file: {args.target!r}.")
        cmd = [sys.executable, args.target, *args.args]
    port = args.port or free_port()
    procs: list[subprocess.Popen] = []
    pumps: list[threading.Thread] = []
    lock = threading.Lock()
    try:
        for rank in range(n):
            env = launch_env(dict(os.environ), port, n, rank, args.cpu_devices,
                             args.heartbeat_timeout, args.collective_timeout)
            p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            procs.append(p)
            for stream, out in ((p.stdout, sys.stdout), (p.stderr, sys.stderr)):
                t = threading.Thread(target=_pump, args=(stream, f"[p{rank}] ", out, lock),
                                     daemon=True)
                t.start()
                pumps.append(t)
        deadline = None if args.timeout is None else time.monotonic() + args.timeout
        failed: tuple[int, int] | None = None
        stop_at = None
        while None in [p.poll() for p in procs]:  # poll every process, each time
            now = time.monotonic()
            if failed is None:
                bad = [(i, p.returncode) for i, p in enumerate(procs)
                       if p.returncode not in (None, 0)]
                if bad:
                    failed = bad[0]
                    stop_at = now + args.grace
                    print(f"ctxppl launch: process {failed[0]} exited with code {failed[1]}; "
                          f"the others stop within {args.grace:g} s", file=sys.stderr)
            if stop_at is not None and now > stop_at:
                left = [i for i, p in enumerate(procs) if p.poll() is None]
                print(f"ctxppl launch: process(es) {left} still running after --grace "
                      f"{args.grace:g} s; terminating them", file=sys.stderr)
                _stop(procs)
                break
            if deadline is not None and now > deadline:
                print(f"ctxppl launch: --timeout {args.timeout:g} s reached; stopping all "
                      "processes", file=sys.stderr)
                _stop(procs)
                return 1
            time.sleep(0.05)
    except KeyboardInterrupt:
        _stop(procs)
        return 130
    finally:
        for t in pumps:
            t.join(timeout=2.0)
    if failed is None:  # they all ended between two polls
        bad = [(i, p.returncode) for i, p in enumerate(procs) if p.returncode != 0]
        if not bad:
            return 0
        failed = bad[0]
        print(f"ctxppl launch: process {failed[0]} exited with code {failed[1]}",
              file=sys.stderr)
    return failed[1] if failed[1] > 0 else 1
