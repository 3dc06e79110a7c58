"""The ``ctxppl`` command line.

Commands: ``demo`` (the seed tutorial), ``fit`` (a CSV -> per-sample parameters, posterior,
summary, plots), ``predict`` (a fitted folder + new rows), ``mixed`` (an lme4 formula),
``launch`` (a script as N local processes of one ``jax.distributed`` run).

Exit codes scripts can rely on: **0** success, **1** failure while running (a fit that
diverged, an unexpected error), **2** bad usage or input (unknown option, missing file,
unknown / non-numeric / missing-value columns, a model that does not suit the outcome).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

__all__ = ["main", "build_parser", "EXIT_OK", "EXIT_FAILURE", "EXIT_USAGE"]

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2

_FIT_EPILOG = """\
examples:
  ctxppl fit data.csv --context age,bmi --predictors dose_a,dose_b --outcome response --out fit/
  ctxppl fit data.csv --context age --predictors x1,x2 --outcome label --model classification \\
      --method svi --out fit_svi/
  ctxppl fit data.csv --context age --predictors g1,g2,g3 --model markov --out net/
  ctxppl fit data.csv --context site --predictors x --outcome y --model mixed --out mixed/
  ctxppl predict fit/ new.csv

exit codes: 0 ok, 1 failure while fitting, 2 bad usage or input.
"""


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--quiet", "-q", action="store_true",
                   help="no progress bars, status lines or tables")


def _outputs(p: argparse.ArgumentParser) -> None:
    """The optional (slower) outputs of ``fit`` and ``mixed --out``."""
    g = p.add_argument_group(
        "optional outputs", "the tables, metrics and saved model are always written; these "
        "cost about a second each (matplotlib, ArviZ + netCDF) and are one flag away")
    g.add_argument("--plots", action=argparse.BooleanOptionalAction, default=False,
                   help="write the PNG plots (default: no plots)")
    g.add_argument("--posterior", action=argparse.BooleanOptionalAction, default=None,
                   help="write the posterior as ArviZ netCDF (posterior.nc) (default: yes for "
                   "posterior methods -- svi, nuts, laplace --, no for map)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``ctxppl`` command.

    Examples:
        >>> args = build_parser().parse_args(["fit", "d.csv", "--context", "c",
        ...                                   "--predictors", "x", "--outcome", "y"])
        >>> args.model, args.method, args.out
        ('regression', 'map', 'ctxppl_out')
    """
    from ctxppl.cli._data import METHODS, MODELS

    p = argparse.ArgumentParser(
        prog="ctxppl", description="Contextualized probabilistic programming (a NumPyro "
        "plugin): every sample gets its own model parameters from its context.",
        epilog="exit codes: 0 ok, 1 failure while running, 2 bad usage or input.")
    from ctxppl import __version__

    p.add_argument("--version", action="version", version=f"ctxppl {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="reproduce the 'Death to Cluster Models' tutorial")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--out", default="demo_out", help="folder for effects.png")
    demo.add_argument("--no-calibrated", action="store_true",
                      help="skip the calibrated-uncertainty row (HSGP encoder, marginal)")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")

    fit = sub.add_parser(
        "fit", help="fit a contextualized / mixed model to a CSV file",
        description="Fit a model in which every row gets its own parameters from its context "
        "columns, and write per-row parameters, a summary, metrics and the saved model into "
        "--out (with --posterior the ArviZ netCDF, with --plots PNG plots).",
        epilog=_FIT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    fit.add_argument("data", metavar="DATA.csv", help="input CSV with a header row")
    fit.add_argument("--context", metavar="C1,C2", help="context columns (numeric); for "
                     "--model mixed the grouping column(s)")
    fit.add_argument("--predictors", metavar="X1,X2", default=None,
                     help="predictor columns (numeric); the network's nodes for markov / "
                     "bayesian-network")
    fit.add_argument("--outcome", metavar="Y", default=None,
                     help="outcome column (regression, classification, mixed)")
    fit.add_argument("--model", choices=MODELS, default="regression",
                     help="regression: numeric --outcome, per-row coefficients of the "
                     "--predictors; classification: class-label --outcome (logistic / "
                     "softmax); markov / bayesian-network: a per-row network among the "
                     "--predictors (no --outcome); mixed: an lme4 mixed model with --context "
                     "as grouping column(s) (default: regression)")
    fit.add_argument("--method", choices=METHODS, default="map",
                     help="map: point estimates (fastest); svi / nuts: posterior with 90%% "
                     "intervals")
    fit.add_argument("--out", metavar="DIR", default="ctxppl_out",
                     help="output folder (created; default ctxppl_out)")
    fit.add_argument("--id", metavar="COL", default=None,
                     help="column of unique row ids (default: 0-based row number)")
    g = fit.add_argument_group("model options")
    g.add_argument("--encoder", choices=("mlp", "ngam", "linear"), default="mlp",
                   help="network from context to parameters: mlp (a neural net, --width x "
                   "--depth), ngam (one small net per context column, added: interpretable "
                   "per-column effects), linear (parameters linear in the context) (default: "
                   "mlp)")
    g.add_argument("--width", type=int, default=25, help="encoder hidden units (25)")
    g.add_argument("--depth", type=int, default=2, help="encoder hidden layers (2)")
    g.add_argument("--archetypes", type=int, default=None, help="number of archetypes")
    g.add_argument("--epochs", type=int, default=None,
                   help="passes over the data (default: 1000 full-batch Adam steps)")
    g.add_argument("--learning-rate", type=float, default=1e-2,
                   help="Adam step size (default 0.01)")
    g.add_argument("--num-samples", type=int, default=200,
                   help="posterior draws for svi / nuts (200; nuts warms up as long)")
    g.add_argument("--bootstraps", type=int, default=1,
                   help="bootstrap fits (all fitted at once); >1 gives intervals for map")
    g.add_argument("--uncertainty", action="store_true",
                   help="calibrated per-row 90%% intervals: every coefficient a Gaussian "
                   "process of the context, weights integrated out (ctx.fit(method="
                   "'marginal')); narrow near the data, wide away from them. Slower than "
                   "map; not with --method, --bootstraps or --model mixed")
    g.add_argument("--random-slopes", action="store_true",
                   help="--model mixed: per-group slopes of every predictor, not only "
                   "intercepts")
    _outputs(fit)
    _common(fit)

    pr = sub.add_parser("predict", help="predict new rows with a folder written by `fit`",
                        description="Per-row parameters and predictions for new rows, from "
                        "the output folder of `ctxppl fit`.")
    pr.add_argument("dir", metavar="DIR", help="the --out folder of `ctxppl fit`")
    pr.add_argument("new", metavar="NEW.csv", help="new rows (the fit's context columns, and "
                    "its predictors for regression / classification)")
    pr.add_argument("--out", metavar="FILE", default=None,
                    help="output CSV (default DIR/predictions.csv)")
    pr.add_argument("--id", metavar="COL", default=None,
                    help="row-id column of NEW.csv (default: the fit's --id, else row number)")
    _common(pr)

    mx = sub.add_parser("mixed", help="fit an lme4-style mixed model, e.g. 'y ~ x + (1|g)'",
                        description="Fit a mixed-effects model given by an lme4 formula "
                        "(ctx.mixed) and print its summary; with --out also write tables and "
                        "per-row coefficients (with --posterior the ArviZ netCDF, with --plots "
                        "caterpillar plots).",
                        epilog="example: ctxppl mixed 'Reaction ~ Days + (Days | Subject)' "
                        "sleepstudy.csv --out sleep/")
    mx.add_argument("formula", metavar="FORMULA", help="e.g. 'y ~ x + (1 | g)'")
    mx.add_argument("data", metavar="DATA.csv")
    mx.add_argument("--family", default="gaussian",
                    choices=("gaussian", "bernoulli", "binomial", "poisson",
                             "negative_binomial"))
    mx.add_argument("--method", choices=("map", "laplace", "svi", "nuts"), default="map",
                    help="map: REML/ML (marginal engine, default); laplace / svi / nuts: "
                    "Bayesian program engine")
    mx.add_argument("--num-samples", type=int, default=500)
    mx.add_argument("--out", metavar="DIR", default=None, help="also write results here")
    mx.add_argument("--id", metavar="COL", default=None, help="column of unique row ids")
    _outputs(mx)
    _common(mx)

    la = sub.add_parser(
        "launch", help="run a script as N local processes of one jax.distributed run",
        description="Start N copies of SCRIPT on this machine as the processes of one "
        "multi-process JAX run (coordinator on a free 127.0.0.1 port). The script calls "
        "ctx.distributed.initialize() first; on a cluster, srun / Kubernetes start the "
        "processes instead and the same script runs unchanged.",
        epilog="example: ctxppl launch -n 2 train.py --epochs 3\n"
        "exit code: 0 when every process succeeded, else the first failing process's code.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    la.add_argument("-n", "--num-processes", type=int, required=True, metavar="N",
                    help="number of processes")
    la.add_argument("-m", "--module", action="store_true",
                    help="TARGET is a module to run as `python -m TARGET`")
    la.add_argument("--cpu-devices", type=int, default=None, metavar="K",
                    help="CPU devices per process (sets "
                    "--xla_force_host_platform_device_count)")
    la.add_argument("--port", type=int, default=None, help="coordinator port (default: free)")
    la.add_argument("--heartbeat-timeout", type=int, default=None, metavar="S",
                    help="seconds before a silent process counts as dead (default: JAX's)")
    la.add_argument("--collective-timeout", type=int, default=None, metavar="S",
                    help="seconds a CPU collective waits for its peers (default: XLA's)")
    la.add_argument("--grace", type=float, default=30.0, metavar="S",
                    help="after a process fails, seconds the others get to stop (30)")
    la.add_argument("--timeout", type=float, default=None, metavar="S",
                    help="stop every process after S seconds (exit 1)")
    la.add_argument("target", metavar="SCRIPT", help="the Python script (or module with -m)")
    la.add_argument("args", nargs=argparse.REMAINDER, help="arguments of the script")
    return p


def _positive(args: argparse.Namespace) -> None:
    from ctxppl.cli._data import UsageError

    for name in ("width", "depth", "archetypes", "epochs", "num_samples", "bootstraps"):
        v = getattr(args, name, None)
        if v is not None and v < 1:
            raise UsageError(f"`--{name.replace('_', '-')}` must be a positive integer; got {v}.")
    lr = getattr(args, "learning_rate", None)
    if lr is not None and not lr > 0:
        raise UsageError(f"`--learning-rate` must be > 0; got {lr}.")
    if getattr(args, "uncertainty", False):
        for flag, bad in (("--method", args.method != "map"),
                          ("--bootstraps", args.bootstraps > 1),
                          ("--model", args.model == "mixed")):
            if bad:
                value = {"--method": args.method, "--bootstraps": args.bootstraps,
                         "--model": args.model}[flag]
                raise UsageError(f"`--uncertainty` fits one Gaussian-process model by "
                                 f"ctx.fit(method='marginal'), whose intervals need no "
                                 f"bootstraps or posterior method; it cannot be combined "
                                 f"with `{flag} {value}`.")
    if getattr(args, "method", None) == "nuts" and getattr(args, "bootstraps", 1) > 1:
        raise UsageError("`--method nuts` cannot be combined with `--bootstraps` > 1 (NUTS "
                         "already gives a posterior).")


def _run(args: argparse.Namespace) -> int:
    if args.command == "demo":
        from ctxppl.cli._demo import run_demo

        run_demo(seed=args.seed, out=args.out, progress=not args.quiet,
                 calibrated=not args.no_calibrated)
        return EXIT_OK
    if args.command == "launch":
        from ctxppl.cli._launch import run_launch

        return run_launch(args)
    _positive(args)
    if args.command == "fit":
        from ctxppl.cli._fit import run_fit

        run_fit(args)
    elif args.command == "predict":
        from ctxppl.cli._predict import run_predict

        out = run_predict(args)
        if not args.quiet:
            print(out)
    elif args.command == "mixed":
        from ctxppl.cli._mixed import run_mixed

        run_mixed(args)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ctxppl`` command; returns the exit code.

    Examples:
        >>> from ctxppl.cli import build_parser
        >>> build_parser().parse_args(["demo", "--seed", "3"]).seed
        3
        >>> main(["fit", "no-such-file.csv", "--context", "c", "--predictors", "x",
        ...       "--outcome", "y", "--quiet"])
        2
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: 2 for usage errors, 0 for --help / --version
        return int(e.code or 0)
    from ctxppl.cli._data import UsageError

    try:
        return _run(args)
    except UsageError as e:
        print(f"ctxppl {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"ctxppl {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - any other failure is a runtime failure (exit 1)
        print(f"ctxppl {args.command}: failed: {type(e).__name__}: {e}", file=sys.stderr)
        if os.environ.get("CTXPPL_DEBUG"):
            traceback.print_exc()
        else:
            print("(set CTXPPL_DEBUG=1 for the traceback)", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
