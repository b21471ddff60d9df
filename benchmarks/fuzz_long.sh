#!/bin/sh
# The fuzz suite of issue 12 with a longer budget: N examples per parser (default 5000).
# make test runs the same properties with a small fixed budget; this searches further.
# Usage: benchmarks/fuzz_long.sh [N]
set -eu
cd "$(dirname "$0")/.."
AMALIA_FUZZ_EXAMPLES="${1:-5000}" exec python3 -m pytest -q tests/test_fuzz_parsers.py
