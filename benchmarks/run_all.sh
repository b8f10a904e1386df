#!/usr/bin/env bash
# Run every benchmark and render docs/BENCHMARKS.md. Run it on a quiet machine: the numbers are wall-clock.
#
#   bash benchmarks/run_all.sh              # full sizes (1M-vector search, 2048-image extraction)
#   QUICK=1 OUT=/tmp/bench bash benchmarks/run_all.sh   # small sizes, outputs in /tmp/bench (a smoke test)
#
# Environment: PYTHON (default .venv/bin/python), OUT (default docs), QUICK=1 for small sizes,
# DEMO=1 to also time the demo from an empty work directory (8 min; its results go to docs/results).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
OUT=${OUT:-docs}
mkdir -p "$OUT"

if [ "${QUICK:-0}" = "1" ]; then
  SEARCH_ARGS=(--n 20000 --dim 128 --queries 200 --k 10 --repeats 2)
  EXTRACT_ARGS=(--models convnet-xs,efficientnet_lite0@112 --images 256 --batch-size 128 --repeats 1)
else
  SEARCH_ARGS=(--n 1000000 --dim 128 --queries 1000 --k 10 --repeats 3)
  EXTRACT_ARGS=(--models convnet-xs,efficientnet_lite0@112 --images 2048 --batch-size 128 --repeats 2)
fi

echo "== bench_search ${SEARCH_ARGS[*]}"
"$PYTHON" benchmarks/bench_search.py "${SEARCH_ARGS[@]}" --out "$OUT/bench_search.json"
echo
echo "== bench_extraction ${EXTRACT_ARGS[*]}"
"$PYTHON" benchmarks/bench_extraction.py "${EXTRACT_ARGS[@]}" --out "$OUT/bench_extraction.json"
echo
if [ "${DEMO:-0}" = "1" ]; then
  echo
  echo "== bench_demo"
  "$PYTHON" benchmarks/bench_demo.py --out "$OUT/bench_demo.json" --results-out "$OUT/results"
fi
echo
echo "== render $OUT/BENCHMARKS.md"
"$PYTHON" benchmarks/render_benchmarks.py --search "$OUT/bench_search.json" \
  --extraction "$OUT/bench_extraction.json" --demo "$OUT/bench_demo.json" --out "$OUT/BENCHMARKS.md"
