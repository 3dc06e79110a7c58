"""The ``ctxppl`` command line: one module per command.

``_main`` holds the parser and the dispatch; ``_fit``, ``_predict``, ``_mixed`` and ``_demo``
run the commands; ``_data`` reads and checks CSV input; ``_output`` writes the fit folder;
``_plots`` draws its PNGs.
"""

from ctxppl.cli._main import EXIT_FAILURE as EXIT_FAILURE
from ctxppl.cli._main import EXIT_OK as EXIT_OK
from ctxppl.cli._main import EXIT_USAGE as EXIT_USAGE
from ctxppl.cli._main import build_parser as build_parser
from ctxppl.cli._main import main as main

__all__ = ["main", "build_parser", "EXIT_OK", "EXIT_FAILURE", "EXIT_USAGE"]
