"""Deployment commands: ``export-query`` (ONNX, INT8) and ``serve`` (HTTP)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from .common import DatasetOpt, DeviceOpt, RootOpt, app, check_device, fail, load_data, load_encoder_at, out, setup


@app.command("export-query")
def export_query_cmd(
    query_model: Path = typer.Option(..., "--query-model", "-q", help="the query encoder folder to export"),
    output: Path = typer.Option(..., "--out", "-o", help="folder for the ONNX model (model.onnx + manifest.json)"),
    dataset: str = DatasetOpt, root: Optional[str] = RootOpt, split: str = typer.Option("test", "--split", help="images the parity is checked on"),
    size: int = typer.Option(256, "--size", min=1, help="how many images check the parity (and calibrate INT8)"),
    int8: Optional[Path] = typer.Option(None, "--int8", help="also write a static INT8 model (QDQ) to this folder, calibrated on --calibration-split"),
    per_channel: bool = typer.Option(False, "--per-channel", help="INT8 weights per output channel (default per tensor)"),
    calibration_split: str = typer.Option("train", "--calibration-split", help="images INT8 activations are calibrated on"),
) -> None:
    """Export the query encoder to ONNX (dynamic batch; preprocessing stated in the manifest), verified against
    torch on real images; optionally static INT8. The exported model keeps the query space: `asymret search -q`
    takes its folder like a torch query model's, and an index refuses any other space."""
    setup()
    from ..core.manifest import read_manifest
    from ..encoders.onnx import export_onnx, quantize_int8

    q_enc = load_encoder_at(query_model)  # the torch model is what is exported
    data = load_data(dataset, root, split, None)
    data = data.sample(min(size, len(data)), seed=0, stratified=False)
    images = [data.load(i) for i in range(len(data))]
    export_onnx(q_enc, output, verify_images=images)
    parity = read_manifest(output)["parity"]
    out.print(f"exported {q_enc.name} → {output}/model.onnx (space {q_enc.space().fingerprint}); "
              f"onnxruntime vs torch on {parity['images']} images: max |Δ| {parity['max_abs_diff']:.2e}")
    if int8 is not None:
        calibration = load_data(dataset, root, calibration_split, None)
        calibration = calibration.sample(min(size, len(calibration)), seed=0, stratified=False)
        quantize_int8(output, int8, [calibration.load(i) for i in range(len(calibration))], per_channel=per_channel, verify_images=images)
        parity = read_manifest(int8)["parity"]
        out.print(f"INT8 ({'per channel' if per_channel else 'per tensor'}) → {int8}/model.onnx; vs the float model on "
                  f"{parity['images']} images: max |Δ| {parity['max_abs_diff_to_float']:.2e}, mean cosine {parity['mean_cosine_to_float']:.5f}")


@app.command("serve")
def serve_cmd(
    index_dir: Optional[Path] = typer.Option(None, "--index", "-i", help="index folder to serve (hot-swappable through /admin/index)"),
    query_model: Optional[Path] = typer.Option(None, "--query-model", "-q", help="query model folder (torch, or exported by export-query: run by onnxruntime)"),
    deploy: Optional[Path] = typer.Option(None, "--deploy", help="a deployment folder written by asymret run --deploy (its index, query model and re-ranking, if it re-ranks)"),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="the gallery's dataset (as for build-index): thumbnails on the page; default none"),
    root: Optional[str] = RootOpt, split: str = typer.Option("test", "--split", help="the gallery's split"),
    results: Optional[Path] = typer.Option(None, "--results", help="an evaluation run's folder (results.json, plots) for /results"),
    worst_queries: int = typer.Option(0, "--worst-queries", min=0, help="with --dataset: this many labelled queries searched for /results' worst queries"),
    host: str = typer.Option("127.0.0.1", "--host"), port: int = typer.Option(8000, "--port"),
    max_upload_mb: float = typer.Option(10.0, "--max-upload-mb", min=0.001),
    max_k: int = typer.Option(100, "--max-k", min=1),
    max_queries: int = typer.Option(256, "--max-queries", min=1, help="query vectors in one JSON request"),
    max_results: int = typer.Option(10_000, "--max-results", min=1, help="k × queries in one request"),
    max_image_pixels: int = typer.Option(4096 * 4096, "--max-image-pixels", min=1, help="uploads over this many pixels get 413"),
    request_timeout: float = typer.Option(30.0, "--request-timeout", min=0.1, help="seconds a client has to send a whole request"),
    max_connections: int = typer.Option(256, "--max-connections", min=1, help="more concurrent connections are answered 503"),
    device: str = DeviceOpt,
) -> None:
    """Serve the index over HTTP: POST /search (an image or an embedding + its space), a web page at /, health
    checks, index hot swap (admin endpoints: set ASYMRET_ADMIN_TOKEN)."""
    setup()
    check_device(device)
    try:
        from ..service import ServiceConfig, create_app
        from ..service.limits import ServerLimits, bind_listener, run_service
    except ImportError as error:
        fail(f"asymret serve needs the 'serve' extra (pip install -e '.[serve]'): {error}")
    if deploy is not None:
        from ..pipeline.deploy import deployment_paths

        if index_dir or query_model:
            fail("--deploy names the index and the query model: drop --index/--query-model")
        try:
            index_dir, query_model, rerank = deployment_paths(deploy)
        except (FileNotFoundError, ValueError) as error:
            fail(f"cannot serve {deploy}: {error}")
    elif index_dir is None or query_model is None:
        fail("asymret serve needs --index and --query-model, or --deploy DIR")
    else:
        rerank = None
    try:  # the port first: a busy one is one line, before anything loads or is announced
        listener = bind_listener(host, port)
    except OSError as error:
        fail(str(error))
    gallery = queries = None
    if dataset:
        gallery = load_data(dataset, root, split, None)
        if worst_queries:
            queries = gallery.select(role="query").sample(worst_queries, seed=0)
    config = ServiceConfig(index=str(index_dir), query_model=str(query_model), gallery=gallery, queries=queries,
                           results=str(results) if results else None, admin_token=os.environ.get("ASYMRET_ADMIN_TOKEN") or None,
                           max_upload_bytes=int(max_upload_mb * 1024 * 1024), max_k=max_k, max_queries=max_queries,
                           max_results=max_results, max_image_pixels=max_image_pixels, device=device,
                           rerank=str(rerank) if rerank else None)
    try:
        application = create_app(config)
    except (FileNotFoundError, ValueError) as error:  # SpaceMismatchError is a ValueError: a foreign index
        fail(f"cannot serve: {error}")
    reranks = f", image queries re-ranked ({rerank})" if rerank else ""
    out.print(f"serving {index_dir}{reranks} at http://{host}:{port}/ (admin endpoints {'on' if config.admin_token else 'off: set ASYMRET_ADMIN_TOKEN'})")
    run_service(application, listener, ServerLimits(request_timeout=request_timeout, max_connections=max_connections))
