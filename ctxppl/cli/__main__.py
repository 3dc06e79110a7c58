"""``python -m ctxppl.cli``: the ``ctxppl`` command."""

import sys

from ctxppl.cli._main import main

sys.exit(main())
