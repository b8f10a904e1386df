"""Load test of ``asymret serve`` on loopback: latency and throughput under concurrent image and embedding queries,
health checks while loaded and while the index is hot-swapped.

``asymret serve`` runs as its own process (as deployed); this script is the load generator (threads with one
HTTP connection each — client and server share the machine's cores, so the figures are a lower bound for a
separate client).  For each query kind (``image``: a PNG upload, the query model runs server-side; ``embedding``:
a vector + the space fingerprint) and each concurrency (1/8/32): ``--requests`` requests or ``--seconds``,
whichever ends first; p50/p99 latency and requests/s, with a probe hitting ``/healthz`` every 50 ms (its p99 and
failures).  Then the hot swap: under concurrency-8 embedding load the index is replaced through
``/admin/index`` (the same folder: a full reload) ``--swaps`` times; every request must succeed, and the answers'
index versions must only go up.

    python benchmarks/bench_serve.py --index runs/demo/default/index/seed0 \\
        --query-model runs/demo/query-onnx --dataset fashion-mnist --out docs/bench_serve.json
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from _common import command_line, serving_arguments
from asymret.core.manifest import atomic_write_json
from asymret.data import load_dataset
from asymret.encoders.onnx import load_query_model
from asymret.eval.report import run_metadata
from asymret.service.server import free_port
from asymret.service.state import png_bytes


class HealthProbe:
    """``GET /healthz`` every ``interval`` seconds on its own connection: latencies and failures."""

    def __init__(self, url: str, interval: float = 0.05) -> None:
        self.url, self.interval = url, interval
        self.latencies: list[float] = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as http:
            while not self._stop.is_set():
                began = time.perf_counter()
                try:
                    ok = http.get("/healthz").status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.latencies.append(time.perf_counter() - began)
                self.failures += not ok
                self._stop.wait(self.interval)

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join(10)
        return {"checks": len(self.latencies), "failures": self.failures, **_percentiles(self.latencies)}


def _percentiles(latencies: list[float]) -> dict:
    if not latencies:
        return {}
    values = np.asarray(latencies) * 1000
    return {"p50_ms": float(np.percentile(values, 50)), "p99_ms": float(np.percentile(values, 99)), "max_ms": float(values.max())}


def load(url: str, make_request, concurrency: int, requests: int, seconds: float) -> dict:
    """``concurrency`` threads sending ``make_request(http, i)`` until ``requests`` are done or ``seconds`` pass."""
    latencies: list[float] = []
    failures: list[str] = []
    versions: list[list[int]] = [[] for _ in range(concurrency)]
    counter = iter(range(requests))
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def worker(slot: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            while time.perf_counter() < deadline:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                began = time.perf_counter()
                response = make_request(http, i)
                elapsed = time.perf_counter() - began
                with lock:
                    latencies.append(elapsed)
                    if response.status_code == 200:
                        versions[slot].append(response.json()["index_version"])
                    else:
                        failures.append(f"{response.status_code}: {response.text[:200]}")

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(concurrency)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    return {"concurrency": concurrency, "requests": len(latencies), "failures": len(failures), "first_failures": failures[:3],
            "requests_per_second": len(latencies) / wall, **_percentiles(latencies),
            "versions_monotonic": all(v == sorted(v) for v in versions), "versions_seen": sorted({x for v in versions for x in v})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    serving_arguments(parser)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--swaps", type=int, default=3)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("docs/bench_serve.json"))
    args = parser.parse_args()
    start = time.perf_counter()
    dataset = load_dataset(args.dataset).select(split=args.split, role="query").sample(64, seed=0, stratified=False)
    pixels = [dataset.load(i) for i in range(len(dataset))]
    images = [png_bytes(p) for p in pixels]
    model = load_query_model(args.query_model)
    embeddings = model.embed_images(pixels).tolist()
    fingerprint = model.space().fingerprint
    token = secrets.token_hex(16)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([str(Path(sys.executable).parent / "asymret"), "serve", "-i", str(args.index), "-q", str(args.query_model),
                               "--port", str(port), "--max-k", str(max(100, args.k))], env={**os.environ, "ASYMRET_ADMIN_TOKEN": token})
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("asymret serve did not start")
            time.sleep(0.2)
        info = httpx.get(url + "/info").json()
        kinds = {
            "image": lambda http, i: http.post("/search", files={"image": (f"q{i}.png", images[i % len(images)], "image/png")}, data={"k": str(args.k)}),
            "embedding": lambda http, i: http.post("/search", json={"embedding": embeddings[i % len(embeddings)], "fingerprint": fingerprint, "k": args.k}),
        }
        results = []
        for kind, make_request in kinds.items():
            load(url, make_request, 1, 20, 10)  # warm-up
            for concurrency in (int(c) for c in args.concurrency.split(",")):
                probe = HealthProbe(url)
                measured = load(url, make_request, concurrency, args.requests, args.seconds)
                measured.update(kind=kind, health=probe.stop())
                print(json.dumps({k: v for k, v in measured.items() if k != "first_failures"}), flush=True)
                results.append(measured)
        # hot swap under load: reload the index --swaps times while concurrency-8 embedding queries run
        probe = HealthProbe(url)
        swapper_done = threading.Event()

        def swapper() -> None:
            with httpx.Client(base_url=url, timeout=60, headers={"authorization": f"Bearer {token}"}) as http:
                for _ in range(args.swaps):
                    time.sleep(1.0)
                    assert http.post("/admin/index", json={"path": str(args.index)}).status_code == 202
                    while http.get("/admin/status").json()["loading"]:
                        time.sleep(0.05)
            swapper_done.set()

        threading.Thread(target=swapper, daemon=True).start()
        swap = load(url, kinds["embedding"], 8, 10**9, args.swaps * 1.0 + 4.0)
        swapper_done.wait(60)
        swap.update(kind="embedding during hot swaps", swaps=args.swaps, health=probe.stop())
        print(json.dumps({k: v for k, v in swap.items() if k != "first_failures"}), flush=True)
    finally:
        server.terminate()
        server.wait(30)
    meta = run_metadata(command_line(args), [0], start, index_items=info["index"]["items"], dim=info["space"]["dim"],
                        query_model=info["query_model"], client="httpx threads, one connection each, same machine")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, {"meta": meta, "load": results, "hot_swap": swap})


if __name__ == "__main__":
    main()
