"""Searching and measuring: ``search``, ``evaluate``."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape
from rich.table import Table

from .common import (
    DatasetOpt,
    DeviceOpt,
    PrecisionOpt,
    RootOpt,
    RuntimeOpt,
    SizeOpt,
    StoreOpt,
    WorkersOpt,
    app,
    check_device,
    err,
    fail,
    load_data,
    load_query_model_at,
    open_store,
    out,
    setup,
)


@app.command("search")
def search_cmd(
    index_dir: Path = typer.Option(..., "--index", "-i", help="index folder"),
    query_model: Path = typer.Option(..., "--query-model", "-q", help="query encoder folder"),
    images: List[Path] = typer.Argument(..., help="query image files"),
    k: int = typer.Option(5, "-k", min=1, help="results per query"),
    reject_fraction: Optional[float] = typer.Option(None, "--reject-fraction", min=0.0, max=1.0, help="drop this fraction of the most uncertain gallery items"),
    reject_threshold: Optional[float] = typer.Option(None, "--reject-threshold", help="drop gallery items with uncertainty above this"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
    runtime: str = RuntimeOpt,
    store: Path = typer.Option(Path("runs/embeddings"), "--store", help="with --runtime onnx: the store whose _onnx/ folder "
                               "keeps the torch query model's export"),
    device: str = DeviceOpt,
) -> None:
    """Search the index with query images embedded by the query model (a torch encoder or one exported with
    `asymret export-query`, run by onnxruntime)."""
    setup()
    check_device(device)
    from ..core.space import Embeddings
    from ..data import FileSource, ImageLoadError
    from ..index import load_index
    from ..store.query import embed_images

    q_model = load_query_model_at(query_model, device)
    embedding_store = open_store(store, runtime=runtime, device=device)
    try:
        index = load_index(index_dir)
    except (FileNotFoundError, ValueError) as error:
        fail(f"cannot load index {index_dir}: {error}")
    pixels, names = [], []
    for path in images:
        try:
            pixels.append(FileSource(path.parent).load(path.name))
            names.append(str(path))
        except ImageLoadError as error:
            err.print(f"[yellow]skipping {escape(str(path))}: {escape(str(error))}[/]", soft_wrap=True)
    if not pixels:
        fail("no readable query image")
    queries = Embeddings(embed_images(embedding_store, q_model, pixels), names, q_model.space())
    result = index.search(queries, k=k, reject_fraction=reject_fraction, reject_threshold=reject_threshold)
    if as_json:
        print(json.dumps([{"query": q, "results": [{"id": i, "score": float(s)} for i, s in zip(ids, scores) if i]}
                          for q, ids, scores in zip(names, result.ids, result.scores)], indent=2))
        return
    for q, ids, scores in zip(names, result.ids, result.scores):
        table = Table(title=escape(q))
        table.add_column("rank"), table.add_column("gallery id"), table.add_column("score", justify="right")
        for rank, (item, score) in enumerate(zip(ids, scores), 1):
            if item:
                table.add_row(str(rank), escape(item), f"{score:.4f}")
        out.print(table)


@app.command("evaluate")
def evaluate_cmd(
    index_dir: Optional[Path] = typer.Option(None, "--index", "-i", help="index folder"),
    query_model: Optional[Path] = typer.Option(None, "--query-model", "-q", help="query model folder (torch, or exported by "
                                               "export-query: run by onnxruntime)"),
    dataset: str = DatasetOpt, root: Optional[str] = RootOpt, split: str = typer.Option("test", "--split"),
    size: Optional[int] = SizeOpt, store: Path = StoreOpt,
    reject_fraction: Optional[float] = typer.Option(None, "--reject-fraction", min=0.0, max=1.0, help="drop this fraction of the most uncertain gallery items"),
    ks: str = typer.Option("1,2,4,8", "--ks", help="the K of Recall@K"),
    runtime: str = RuntimeOpt,
    config: Optional[str] = typer.Option(None, "--config", help="with --rerank: a run config or preset (glyphs, glyphs-quick, …) whose models are evaluated"),
    rerank: Optional[str] = typer.Option(None, "--rerank", help="with --config: re-rank the global shortlist with maxsim, ames or locore (comma-separated for several)"),
    shortlist: Optional[int] = typer.Option(None, "--shortlist", min=1, help="with --rerank: re-rank the global top-N (default: the config's)"),
    workdir: Optional[Path] = typer.Option(None, "--workdir", help="with --config: cache of models, embeddings and re-rankers (default runs/<name>)"),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="with --config: override the config's seeds, e.g. 0,1,2"),
    output: Optional[Path] = typer.Option(None, "--out", "-o", help="with --config: results folder (default <workdir>/evaluate-rerank)"),
    device: str = DeviceOpt, precision: str = PrecisionOpt, workers: Optional[int] = WorkersOpt,
) -> None:
    """Recall@K, MAP@R and precision@1 of the dataset's queries searched in the index — its own search results,
    so an approximate index reports its own recall (asymmetric if the index is).

    With --config and --rerank: the config's re-ranking rows for that re-ranker (global only vs re-ranked, every
    mode and storage of its \\[rerank] table), from the models cached in --workdir or trained there first — the
    rows of docs/RESULTS.md §5 when run on the same preset and seeds.
    """
    setup()
    check_device(device, precision)
    if rerank or config:
        if not (rerank and config):
            fail("--rerank and --config go together: the run config says which models, descriptors and budgets to re-rank with")
        from .experiments import evaluate_rerank

        evaluate_rerank(config, rerank, shortlist, workdir, seeds, output, root,
                        execution={"device": device, "precision": precision, "workers": workers})
        return
    if index_dir is None or query_model is None:
        fail("give --index and --query-model (or --config with --rerank)")
    from ..eval.metrics import evaluate
    from ..index import load_index
    from ..store.query import query_embeddings

    q_model = load_query_model_at(query_model, device)
    index = load_index(index_dir)
    index.space.check_compatible(q_model.space(), "the query model's embeddings")
    if len(index) == 0:
        fail(f"the index {index_dir} holds no items: nothing to measure (build it again from a gallery with readable images)")
    data = load_data(dataset, root, split, size)
    queries = query_embeddings(open_store(store, runtime=runtime, device=device, precision=precision, workers=workers), q_model,
                               data.select(role="query"))
    if len(queries) == 0:
        fail(f"no readable query image in {data.name}: nothing to measure")
    label_of = dict(zip(data.ids.tolist(), data.labels.tolist()))
    missing = [i for i in index.ids.tolist() if i not in label_of]
    if missing:
        fail(f"{len(missing)} gallery ids of the index are not in {data.name} (e.g. {missing[0]}): evaluate on the data it was built from")
    metrics = evaluate(queries, index=index, gallery_labels=label_of, ks=[int(k) for k in ks.split(",")], reject_fraction=reject_fraction)
    table = Table(title=f"{q_model.name} → {index_dir}")
    table.add_column("metric"), table.add_column("value", justify="right")
    undefined = [name for name, value in metrics.items() if not math.isfinite(float(value))]
    for name, value in metrics.items():  # a metric no query defines is said so, never printed as nan
        text = "n/a" if name in undefined else f"{100 * value:.2f}" if not name.startswith("num_") else str(int(value))
        table.add_row(name, text)
    out.print(table)
    if undefined:
        out.print(f"n/a: no query of {data.name} defines {', '.join(undefined)} (e.g. none has a relevant gallery item)")
