#!/usr/bin/env bash
# Peer for bench/mixed.py: R and lme4 from Debian's packages (r-base-core, r-cran-lme4).
# Idempotent; where apt-get is unavailable (not root, not Debian) it says so and exits 0,
# and bench/mixed.py leaves the lme4 columns empty with the same message.
set -uo pipefail
probe() { Rscript -e 'suppressMessages(library(lme4)); cat("lme4", as.character(packageVersion("lme4")), "OK\n")' 2>/dev/null; }
if command -v Rscript >/dev/null 2>&1 && probe; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "lme4 peer skipped: no apt-get on this machine (install R and lme4 to compare with lme4)"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "lme4 peer skipped: apt-get needs root (run: apt-get install -y r-base-core r-cran-lme4)"
    exit 0
fi
if ! (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        r-base-core r-cran-lme4 >/dev/null); then
    echo "lme4 peer skipped: apt-get install r-base-core r-cran-lme4 failed"
    exit 0
fi
probe || echo "lme4 peer skipped: R installed but library(lme4) fails"
exit 0
