"""The ``ctxppl`` command line. Exit codes: 0 ok, 1 failure while running, 2 bad usage/input."""

from __future__ import annotations

import argparse
import sys

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ctxppl", description="Contextualized probabilistic "
                                "programming (a NumPyro plugin).")
    sub = p.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="reproduce the 'Death to Cluster Models' tutorial")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--out", default="demo_out", help="folder for effects.png")
    demo.add_argument("--no-nuts", action="store_true", help="skip the (slower) NUTS row")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ctxppl`` command.

    Examples:
        >>> from ctxppl._cli import build_parser
        >>> build_parser().parse_args(["demo", "--seed", "3"]).seed
        3
    """
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from ctxppl._demo import run_demo

        run_demo(seed=args.seed, out=args.out, progress=not args.quiet, nuts=not args.no_nuts)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
