"""Wall time of ``asymret demo`` from an empty work directory, with the CPU it ran on (model and SIMD flags).

    python benchmarks/bench_demo.py --out docs/bench_demo.json --results-out docs/results   # default profile, 3 seeds
    python benchmarks/bench_demo.py --profile tiny --out /tmp/bench_demo.json

The demo itself records per-step timings (training, ψ fitting) in its results.json; this keeps them with the
total wall time, so that times on different machines can be compared by what they depend on.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from asymret.core.machine import machine_description
from asymret.core.manifest import atomic_write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="default")
    parser.add_argument("--out", default="docs/bench_demo.json")
    parser.add_argument("--results-out", default=None, help="keep the demo's results here (e.g. docs/results)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="asymret-bench-demo-") as work:
        results = args.results_out or f"{work}/out"
        command = [sys.executable, "-m", "asymret.cli", "demo", "--profile", args.profile,
                   "--workdir", f"{work}/work", "--out", results]
        start = time.perf_counter()
        subprocess.run(command, check=True)
        wall = time.perf_counter() - start
        meta = json.loads(Path(results, "results.json").read_text())["meta"]
    record = {
        "command": f"python benchmarks/bench_demo.py --profile {args.profile} --out {args.out}"
                   + (f" --results-out {args.results_out}" if args.results_out else ""),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_description(),
        "profile": args.profile,
        "seeds": meta.get("seeds"),
        "wall_seconds_including_startup": wall,
        "demo_wall_seconds": meta.get("wall_seconds"),
        "timings": meta.get("timings", {}),
    }
    atomic_write_json(args.out, record)
    print(f"demo ({args.profile}) {wall:.0f} s on {record['machine']['cpu_model']} "
          f"[{' '.join(record['machine']['cpu_flags']) or 'no AVX flags'}] → {args.out}")


if __name__ == "__main__":
    main()
