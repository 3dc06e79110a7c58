r"""The one optimisation loop behind MAP, Laplace and SVI, entirely inside ``jax.jit``.

An inference routine is a :class:`Stepper`: pure ``init(key) -> state`` and
``step(state, key) -> (state, loss)`` (optax/blackjax style). :func:`optimize` runs it as a
``while_loop`` over *windows* of ``window`` steps (each window a ``lax.scan``), so that the
convergence test, the validation loss and the progress callback run once per window -- also
under ``vmap``, where a per-step ``cond`` would turn into a select computed every step.

Failure handling: a non-finite loss freezes the state at the last step whose loss was finite
and sets ``status = NONFINITE``; the caller reports it (never silent NaN parameters).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["Stepper", "LoopOptions", "optimize", "STATUS", "progress_bar"]

# status codes returned by the loop
RUNNING, CONVERGED, MAX_STEPS, NONFINITE, EARLY_STOPPED = 0, 1, 2, 3, 4
STATUS = {
    CONVERGED: "converged: relative change of the windowed mean loss below `tol`",
    MAX_STEPS: "reached `num_steps` without meeting `tol`",
    NONFINITE: "stopped: the loss became NaN/inf; parameters are those of the last finite step",
    EARLY_STOPPED: "early-stopped: validation loss stopped improving (best parameters kept)",
}


class Stepper(NamedTuple):
    """A pure inference routine: ``init(key) -> state``, ``step(state, key) -> (state, loss)``.

    ``val_loss(state) -> scalar`` (optional) scores a state on held-out members.
    """

    init: Callable[[jax.Array], Any]
    step: Callable[[Any, jax.Array], tuple[Any, jax.Array]]
    val_loss: Callable[[Any], jax.Array] | None = None


class LoopOptions(NamedTuple):
    """Hashable loop settings (static under jit)."""

    num_steps: int = 5000
    tol: float = 1e-6
    window: int = 100
    patience: int = 5
    progress: bool = True


# ---- progress bars: host-side tqdm bars addressed by a token passed as a traced int -------
_BARS: dict[int, Any] = {}
_BARS_LOCK = threading.Lock()
_TOKENS = itertools.count(1)


class progress_bar:
    """Context manager opening a tqdm bar that jitted code updates by token."""

    def __init__(self, total: int, desc: str, enabled: bool = True):
        self.total, self.desc, self.enabled = total, desc, enabled
        self.token = 0

    def __enter__(self) -> int:
        if not self.enabled:
            return 0
        from tqdm.auto import tqdm

        with _BARS_LOCK:
            self.token = next(_TOKENS)
            _BARS[self.token] = tqdm(total=self.total, desc=self.desc, leave=False)
        return self.token

    def __exit__(self, *exc: Any) -> None:
        if self.enabled:
            jax.effects_barrier()  # let pending progress callbacks land first
            with _BARS_LOCK:
                bar = _BARS.pop(self.token, None)
            if bar is not None:
                bar.refresh()
                bar.close()


def _update_bar(token: Any, done: Any, loss: Any) -> None:
    import numpy as np

    bar = _BARS.get(int(np.max(token)))
    if bar is not None:
        n = int(np.max(done))
        if n > bar.n:
            bar.update(n - bar.n)
        loss = np.asarray(loss)
        if loss.size and np.isfinite(loss).any():
            bar.set_postfix_str(f"loss {float(np.nanmean(loss)):.4g}", refresh=False)


def _select(pred: jax.Array, a: Any, b: Any) -> Any:
    # lax.select, not jnp.where: no nested jit per leaf and step (a third of the program's
    # equations), so the program traces and lowers faster in every fresh process
    # (``pred`` is a scalar: lax.select broadcasts it, also under vmap)
    return jax.tree_util.tree_map(lambda x, y: lax.select(pred, x, y), a, b)


def optimize(stepper: Stepper, key: jax.Array, opts: LoopOptions,
             token: jax.Array | int = 0) -> tuple[Any, dict[str, jax.Array]]:
    """Run ``stepper`` to convergence, ``num_steps``, a non-finite loss or early stopping.

    Returns the final (or best-validation) state and a dict with ``loss_history`` (NaN after
    the stop), ``num_steps`` taken, ``status`` code, ``val_history`` (per window).
    """
    window = max(1, min(opts.window, opts.num_steps))
    n_windows = -(-opts.num_steps // window)
    init_key, loop_key = jax.random.split(key)
    state0 = stepper.init(init_key)
    has_val = stepper.val_loss is not None
    loss_dtype = jnp.result_type(float)

    def run_window(carry):
        w, state, good, best, best_val, bad, status, hist, vhist = carry

        def one(c, i):
            state, good, stopped = c
            t = w * window + i
            new, loss = stepper.step(state, jax.random.fold_in(loop_key, t))
            ok = jnp.isfinite(loss) & ~stopped
            good = _select(ok, state, good)
            state = _select(ok, new, state)
            stopped = stopped | ~jnp.isfinite(loss)
            return (state, good, stopped), jnp.where(ok, loss, jnp.nan).astype(loss_dtype)

        (state, good, stopped), losses = lax.scan(
            one, (state, good, jnp.asarray(False)), jnp.arange(window))
        hist = lax.dynamic_update_slice(hist, losses, (w * window,))
        status = jnp.where(stopped, NONFINITE, status)
        if has_val:
            v = stepper.val_loss(state).astype(loss_dtype)
            vhist = vhist.at[w].set(v)
            improved = v < best_val
            best = _select(improved, state, best)
            best_val = jnp.where(improved, v, best_val)
            bad = jnp.where(improved, 0, bad + 1)
            status = jnp.where((status == RUNNING) & (bad >= opts.patience), EARLY_STOPPED,
                               status)
        elif opts.tol > 0:
            lo = jnp.maximum(w - 1, 0) * window
            prev = jnp.nanmean(lax.dynamic_slice(hist, (lo,), (window,)))
            cur = jnp.nanmean(losses)
            conv = (w >= 1) & (jnp.abs(prev - cur) <= opts.tol * jnp.maximum(jnp.abs(prev), 1.0))
            status = jnp.where((status == RUNNING) & conv, CONVERGED, status)
        if opts.progress:
            jax.debug.callback(_update_bar, token, (w + 1) * window, losses[-1])
        return (w + 1, state, good, best, best_val, bad, status, hist, vhist)

    def cond(carry):
        w, status = carry[0], carry[6]
        return (w < n_windows) & (status == RUNNING)

    hist0 = jnp.full((n_windows * window,), jnp.nan, loss_dtype)
    vhist0 = jnp.full((n_windows,), jnp.nan, loss_dtype)
    carry0 = (jnp.asarray(0), state0, state0, state0, jnp.asarray(jnp.inf, loss_dtype),
              jnp.asarray(0), jnp.asarray(RUNNING), hist0, vhist0)
    w, state, good, best, _, _, status, hist, vhist = lax.while_loop(cond, run_window, carry0)
    status = jnp.where(status == RUNNING, MAX_STEPS, status)
    final = _select(status == NONFINITE, good, state)
    if has_val:  # the best state by validation loss, unless the run broke down
        final = _select(status == NONFINITE, good, best)
    steps = jnp.sum(jnp.isfinite(hist)).astype(jnp.int32)
    info = {"loss_history": hist[: opts.num_steps], "num_steps": steps, "status": status,
            "val_history": vhist}
    return final, info
