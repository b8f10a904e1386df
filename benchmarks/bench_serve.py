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

``--mixed``: valid and hostile requests at once (issue 23).  8 clients send valid queries (embeddings, then
uploaded images) while one client per hostile kind loops on its attack — 20,000 vectors with k=100 (capped), a
9400×9400 PNG (over the pixel limit), a 4000×4000 PNG (under it: decoded, in the heavy lane), a 300 MB chunked
body (refused while streaming), JSON nested 100,000 deep, ``"ids": 5``, and 32 connections trickling their headers
(closed by the request deadline).  Reported: the valid requests' p50/p99 alone and under attack, every hostile
answer's status, the server's resident memory (now and peak).  ``--fixture DIR`` builds a stand-in when there is
no demo run: an untrained convnet-xs query model (the demo's architecture, 28 px, 64-d), exported to ONNX, and
an index of 2,000 Fashion-MNIST test images — latency, not accuracy, is measured.

    python benchmarks/bench_serve.py --index runs/demo/default/index/seed0 \\
        --query-model runs/demo/query-onnx --dataset fashion-mnist --out docs/bench_serve.json
    nice -n 19 python benchmarks/bench_serve.py --mixed --fixture /tmp/serve-fixture --out docs/bench_serve_mixed.json
"""
from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import secrets
import socket
import subprocess
import sys
import tempfile
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

HOSTILE_SLOW_CONNECTIONS = 32
#: --attacks: short name → the hostile kind's label in the report
ATTACKS = {"vectors": "20,000 vectors k=100", "bomb": "9400x9400 PNG", "heavy": "4000x4000 PNG (allowed)", "chunked": "300 MB chunked body",
           "deep": "JSON nested 100,000 deep", "ids": '"ids": 5', "slow": "slow-header connections"}


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
    parser.add_argument("--mixed", action="store_true", help="valid + hostile requests at concurrency 8 (instead of the load test)")
    parser.add_argument("--fixture", type=Path, default=None, help="build (or reuse) a stand-in index + ONNX query model here")
    parser.add_argument("--request-timeout", type=float, default=5.0, help="the server's --request-timeout (--mixed)")
    parser.add_argument("--valid", default="embedding,image", help="the valid query kinds (--mixed)")
    parser.add_argument("--attacks", default=",".join(ATTACKS), help="the hostile kinds (--mixed), of: " + ",".join(ATTACKS))
    args = parser.parse_args()
    start = time.perf_counter()
    load_at_start = os.getloadavg()  # the machine is shared: its load goes into the results
    if args.fixture is not None:
        args.index, args.query_model = build_fixture(args.fixture, args.dataset, args.split)
    dataset = load_dataset(args.dataset).select(split=args.split, role="query").sample(64, seed=0, stratified=False)
    pixels = [dataset.load(i) for i in range(len(dataset))]
    images = [png_bytes(p) for p in pixels]
    model = load_query_model(args.query_model)
    embeddings = model.embed_images(pixels).tolist()
    fingerprint = model.space().fingerprint
    token = secrets.token_hex(16)
    server_log = tempfile.TemporaryFile() if args.mixed else None  # what the server logs under attack (read at the end)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([str(Path(sys.executable).parent / "asymret"), "serve", "-i", str(args.index), "-q", str(args.query_model),
                               "--port", str(port), "--max-k", str(max(100, args.k)), "--request-timeout", str(args.request_timeout)],
                              env={**os.environ, "ASYMRET_ADMIN_TOKEN": token}, stderr=server_log)
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
        if args.mixed:
            results = {"mixed": mixed_load(url, server.pid, images, embeddings, fingerprint, args),
                       "server_limits": {k: info[k] for k in info if k.startswith("max_")}}
        else:
            results = plain_load(url, token, images, embeddings, fingerprint, args)
    finally:
        server.terminate()
        server.wait(30)
    if server_log is not None:  # what the server logged under attack: one line per event, no traceback
        server_log.seek(0)
        logged = server_log.read().decode(errors="replace").splitlines()
        results["server_log"] = {"lines": len(logged), "tracebacks": sum("Traceback" in line for line in logged),
                                 "dropped_requests": sum("dropped its" in line for line in logged),
                                 "closed_by_request_deadline": sum(": no whole" in line for line in logged),
                                 "first_lines": logged[:5]}
        print(json.dumps(results["server_log"]), flush=True)
    finish(args, start, info, {**results, "load_average_at_start": load_at_start})


def plain_load(url: str, token: str, images: list[bytes], embeddings: list, fingerprint: str, args) -> dict:
    """Image and embedding queries at each concurrency, then concurrency-8 embedding queries through hot swaps."""
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
    return {"load": results, "hot_swap": swap}


def finish(args, start: float, info: dict, results: dict) -> None:
    meta = run_metadata(command_line(args), [0], start, index_items=info["index"]["items"], dim=info["space"]["dim"],
                        query_model=info["query_model"], client="httpx threads, one connection each, same machine",
                        load_average_at_end=os.getloadavg())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, {"meta": meta, **results})


def build_fixture(folder: Path, dataset_name: str, split: str) -> tuple[Path, Path]:
    """An untrained convnet-xs query model (ONNX) and an index of 2,000 gallery images, built once into ``folder``."""
    from asymret.core.space import Embeddings
    from asymret.encoders import create_encoder
    from asymret.encoders.onnx import export_onnx
    from asymret.index import GalleryIndex

    index_dir, onnx_dir = folder / "index", folder / "query-onnx"
    if (index_dir / "manifest.json").is_file() and (onnx_dir / "manifest.json").is_file():
        return index_dir, onnx_dir
    gallery = load_dataset(dataset_name).select(split=split, role="gallery").sample(2000, seed=0, stratified=False)
    images = [gallery.load(i) for i in range(len(gallery))]
    encoder = create_encoder("convnet-xs", embedding_dim=64, input_size=28, seed=0)
    export_onnx(encoder, onnx_dir, verify_images=images[:8])
    index = GalleryIndex(encoder.space())
    uncertainty = np.random.default_rng(0).uniform(0.1, 1.0, len(gallery)).astype(np.float32)
    index.add(Embeddings(encoder.embed_images(images), gallery.ids, encoder.space()), uncertainty)
    index.save(index_dir)
    return index_dir, onnx_dir


def big_png(side: int) -> bytes:
    """A ``side``² RGB PNG that compresses well (a smooth gradient): a small upload of many pixels."""
    from PIL import Image

    ramp = np.linspace(0, 255, side, dtype=np.float32)
    pixels = np.stack([np.broadcast_to(ramp[None, :], (side, side)), np.broadcast_to(ramp[:, None], (side, side)),
                       np.full((side, side), 128, np.float32)], axis=2).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=9)
    return buffer.getvalue()


def server_memory_mb(pid: int) -> dict:
    """The server process's resident memory now and its peak (VmRSS, VmHWM), MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            fields[line.split(":")[0]] = int(line.split()[1]) / 1024
    return {"rss_mb": fields.get("VmRSS"), "peak_rss_mb": fields.get("VmHWM")}


def hostile_requests(fingerprint: str, dim: int, chosen: list[str]) -> dict:
    """Each chosen hostile kind: ``(http) -> response``."""
    vector = [1.0] + [0.0] * (dim - 1)
    amplification = json.dumps({"embedding": [vector] * 20_000, "fingerprint": fingerprint, "k": 100}).encode()
    deep = b"[" * 100_000 + b"]" * 100_000
    bomb = big_png(9400) if "bomb" in chosen else b""
    heavy = big_png(4000) if "heavy" in chosen else b""

    def chunked_300mb():
        block = b" " * 65536
        yield b'{"embedding": ['
        for _ in range(300 * 16):
            yield block

    requests = {
        "20,000 vectors k=100": lambda http: http.post("/search", content=amplification, headers={"content-type": "application/json"}),
        "9400x9400 PNG": lambda http: http.post("/search", files={"image": ("bomb.png", bomb, "image/png")}),
        "4000x4000 PNG (allowed)": lambda http: http.post("/search", files={"image": ("heavy.png", heavy, "image/png")}),
        "300 MB chunked body": lambda http: http.post("/search", content=chunked_300mb(), headers={"content-type": "application/json"}),
        "JSON nested 100,000 deep": lambda http: http.post("/search", content=deep, headers={"content-type": "application/json"}),
        '"ids": 5': lambda http: http.post("/search", json={"embedding": vector, "fingerprint": fingerprint, "ids": 5}),
    }
    return {ATTACKS[name]: requests[ATTACKS[name]] for name in chosen if name != "slow"}


class Hostile:
    """One thread per hostile kind, each looping on its request; plus connections that trickle their headers."""

    def __init__(self, url: str, requests: dict, slow_connections: int) -> None:
        self.url, self.requests, self.slow_connections = url, requests, slow_connections
        self._lock = threading.Lock()
        self.outcomes: dict[str, dict[str, int]] = {kind: {} for kind in self.requests}
        self.latencies: dict[str, list[float]] = {kind: [] for kind in self.requests}
        self.slow_closed = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, args=(kind,), daemon=True) for kind in self.requests]
        self._threads += [threading.Thread(target=self._slow_headers, daemon=True) for _ in range(slow_connections)]
        for thread in self._threads:
            thread.start()

    def _loop(self, kind: str) -> None:
        while not self._stop.is_set():
            began = time.perf_counter()
            try:
                with httpx.Client(base_url=self.url, timeout=60) as http:
                    outcome = str(self.requests[kind](http).status_code)
            except httpx.HTTPError as error:  # e.g. the connection closed under a body still being sent
                outcome = type(error).__name__
            with self._lock:
                self.latencies[kind].append(time.perf_counter() - began)
                self.outcomes[kind][outcome] = self.outcomes[kind].get(outcome, 0) + 1

    def _slow_headers(self) -> None:
        """A slowloris: one header byte a second until the server closes the connection."""
        host, port = self.url.rsplit(":", 1)
        while not self._stop.is_set():
            try:
                with socket.create_connection((host.split("//")[1], int(port)), timeout=60) as raw:
                    raw.sendall(b"POST /search HTTP/1.1\r\nHost: x\r\n")
                    while not self._stop.is_set():
                        raw.sendall(b"X")
                        self._stop.wait(1.0)
            except OSError:  # the server closed it (the request deadline): open another
                with self._lock:
                    self.slow_closed += 1

    def stop(self) -> dict:
        self._stop.set()
        for thread in self._threads:
            thread.join(90)
        return {kind: {"answers": self.outcomes[kind], **_percentiles(self.latencies[kind])} for kind in self.requests} | \
            ({"slow-header connections": {"connections": self.slow_connections, "closed by the server": self.slow_closed}}
             if self.slow_connections else {})


def attack(url: str, attacks: dict, slow_connections: int, stop, reports) -> None:
    """The hostile clients until ``stop`` is set (in a forked process); their report goes to ``reports``."""
    hostile = Hostile(url, attacks, slow_connections)
    stop.wait()
    reports.put(hostile.stop())


def mixed_load(url: str, pid: int, images: list[bytes], embeddings: list, fingerprint: str, args) -> dict:
    """The valid requests' latency at concurrency 8 alone and under the hostile mix, for embeddings and images."""
    kinds = {
        "embedding": lambda http, i: http.post("/search", json={"embedding": embeddings[i % len(embeddings)], "fingerprint": fingerprint, "k": args.k}),
        "image": lambda http, i: http.post("/search", files={"image": (f"q{i}.png", images[i % len(images)], "image/png")}, data={"k": str(args.k)}),
    }
    chosen = [name.strip() for name in args.attacks.split(",") if name.strip()]
    unknown = set(chosen) - set(ATTACKS)
    if unknown:
        raise SystemExit(f"--attacks: unknown {sorted(unknown)}; known: {', '.join(ATTACKS)}")
    attacks = hostile_requests(fingerprint, len(embeddings[0]), chosen)
    slow_connections = HOSTILE_SLOW_CONNECTIONS if "slow" in chosen else 0
    out = {"memory_at_start": server_memory_mb(pid)}
    for kind in args.valid.split(","):
        make_request = kinds[kind]
        load(url, make_request, 1, 20, 10)  # warm-up
        alone = load(url, make_request, 8, args.requests, args.seconds)
        print(json.dumps({"valid": kind, "alone": {k: v for k, v in alone.items() if k != "first_failures"}}), flush=True)
        # the attackers in a process of their own: their threads do not compete with the valid clients' for one GIL
        context = multiprocessing.get_context("fork")
        stop, reports = context.Event(), context.Queue()
        attackers = context.Process(target=attack, args=(url, attacks, slow_connections, stop, reports), daemon=True)
        attackers.start()
        probe = HealthProbe(url)
        time.sleep(1.0)  # the attacks under way
        attacked = load(url, make_request, 8, args.requests, args.seconds)
        stop.set()
        attacked.update(health=probe.stop(), hostile=reports.get(timeout=180), memory=server_memory_mb(pid))
        attackers.join(30)
        print(json.dumps({"valid": kind, "under attack": {k: v for k, v in attacked.items() if k != "first_failures"}}), flush=True)
        out[kind] = {"alone": alone, "under_attack": attacked}
    return out


if __name__ == "__main__":
    main()
