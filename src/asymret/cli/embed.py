"""Embedding and indexing commands: ``embed``, ``build-index``, ``upgrade-query``."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .common import (
    DatasetOpt,
    DeviceOpt,
    PrecisionOpt,
    RootOpt,
    RuntimeOpt,
    SizeOpt,
    SplitOpt,
    StoreOpt,
    WorkersOpt,
    app,
    check_device,
    fail,
    load_data,
    load_encoder_at,
    load_query_model_at,
    open_store,
    out,
    setup,
)


@app.command("embed")
def embed_cmd(
    model: Path = typer.Option(..., "--model", "-m", help="encoder folder"),
    dataset: str = DatasetOpt, root: Optional[str] = RootOpt, split: Optional[str] = SplitOpt, size: Optional[int] = SizeOpt,
    store: Path = StoreOpt,
    output: str = typer.Option("embedding", "--output", help="embedding or pooled (backbone features)"),
    shards: Optional[str] = typer.Option(None, "--shards", help="compute only these shards, e.g. 0,1,2 (for many machines)"),
    shard_size: int = typer.Option(4096, "--shard-size"),
    runtime: str = RuntimeOpt,
    engine: str = typer.Option("local", "--engine", help="local (this process) or ray (Ray Data actors, one per core: "
                               "the same shards and manifest)"),
    address: Optional[str] = typer.Option(None, "--address", help="with --engine ray: an existing cluster (e.g. "
                                          "ray://head:10001 or auto); default: a local Ray on this machine's cores"),
    device: str = DeviceOpt, precision: str = PrecisionOpt, workers: Optional[int] = WorkersOpt,
    change_detection: str = typer.Option("stat", "--change-detection", help="how an image file edited since it was embedded "
                                         "is noticed (and re-embedded): stat (size and modification time) or content (a "
                                         "hash of its bytes, every file read)"),
) -> None:
    """Embed a dataset into the store (batched, sharded, resumable; reused when asked again, images edited since
    re-embedded)."""
    setup()
    check_device(device, precision)
    encoder = load_encoder_at(model)
    data = load_data(dataset, root, split, size)
    embedding_store = open_store(store, shard_size=shard_size, runtime=runtime, device=device, precision=precision, workers=workers,
                                 change_detection=change_detection)
    wanted = [int(s) for s in shards.split(",")] if shards else None
    try:
        report = embedding_store.extract(encoder, data, output=output, shards=wanted, engine=engine, address=address)
    except ImportError as error:
        fail(f"--engine ray needs the 'scale' extra (pip install -e '.[scale]'): {error}")
    directory = embedding_store.directory(encoder, data, output)
    changed = f"{len(report.changed_ids)} changed images re-embedded, " if report.changed_ids else ""
    out.print(f"{data.name}: {len(data)} images, {report.computed_shards} shards computed, {report.reused_shards} reused, "
              f"{changed}{len(report.failed_ids)} unreadable images skipped → {directory}")


def _index_spec(index_spec: Optional[str], backend: str, factory: str, milvus_index: str) -> str:
    """``--index-spec``, or the spec the older flags say (``--backend faiss --factory F``, ``--backend milvus
    --milvus-index T``)."""
    if index_spec is not None:
        return index_spec
    if backend == "faiss":
        return f"faiss:{factory}"
    if backend == "milvus":
        return f"milvus:{milvus_index}"
    fail(f"--backend must be faiss or milvus, not {backend!r} (or give --index-spec, e.g. exact)")


@app.command("build-index")
def build_index_cmd(
    query_model: Path = typer.Option(..., "--query-model", "-q", help="query model folder (torch, or exported by export-query): "
                                     "names the index's space"),
    output: Path = typer.Option(..., "--out", "-o", help="index folder"),
    gallery_model: List[Path] = typer.Option([], "--gallery-model", "-g", help="gallery encoder(s), in the order of --transform"),
    transform: List[Path] = typer.Option([], "--transform", "-t", help="ψ folder(s), one per gallery model"),
    dataset: str = DatasetOpt, root: Optional[str] = RootOpt, split: str = typer.Option("test", "--split"),
    size: Optional[int] = SizeOpt, store: Path = StoreOpt,
    index_spec: Optional[str] = typer.Option(None, "--index-spec", help="backend and its parameter in one string: faiss:Flat, "
                                             "faiss:IVF256,PQ16, exact, milvus:HNSW (instead of --backend with --factory "
                                             "or --milvus-index)"),
    factory: str = typer.Option("Flat", "--factory", help="FAISS index factory string (Flat = exact inner product)"),
    runtime: str = RuntimeOpt,
    backend: str = typer.Option("faiss", "--backend", help="faiss (in-process, saved in the folder) or milvus"),
    milvus_uri: Optional[str] = typer.Option(None, "--milvus-uri", help="with --backend milvus: a server/cluster "
                                             "(http://host:19530); default Milvus Lite in the index folder"),
    collection: str = typer.Option("asymret_gallery", "--collection", help="with --backend milvus: the collection's name (each build writes "
                                   "<name>_v<version>; the folder's previous one is dropped once the new one is saved)"),
    milvus_index: str = typer.Option("FLAT", "--milvus-index", help="with --backend milvus: FLAT (exact), HNSW or IVF_FLAT"),
    exact_rerank: int = typer.Option(0, "--exact-rerank", min=0, help="FAISS: rescore each query's top R·k of a compressed "
                                     "index with the float vectors (kept on disk beside it); 0 = off"),
    target_recall: Optional[float] = typer.Option(None, "--target-recall", min=0.0, max=1.0, help="FAISS IVF/HNSW: the smallest "
                                                  "nprobe/efSearch reaching this recall@10 against exact search, measured on "
                                                  "1,000 gallery vectors as queries"),
    device: str = DeviceOpt, precision: str = PrecisionOpt, workers: Optional[int] = WorkersOpt,
) -> None:
    """Embed the gallery with every gallery model, map it into the query space, average, and index it.

    With no --gallery-model the query model itself embeds the gallery (the symmetric setting); one --gallery-model
    without --transform must embed into the query space already (e.g. the gallery model a query model was
    compatibility-trained against); with --transform alone the gallery models' embeddings are read from the store
    (adding or dropping a gallery model re-embeds nothing).
    """
    setup()
    from ..compat import CMCETransform
    from ..index.backends import supported_options
    from ..index.build import assemble_gallery, build_index
    from ..index.milvus import LITE_FILE

    if gallery_model and transform and len(gallery_model) != len(transform):
        fail(f"{len(gallery_model)} --gallery-model but {len(transform)} --transform: give one ψ per gallery model "
             "(or only --transform, to read the gallery models' embeddings from the store)")
    if len(gallery_model) > 1 and not transform:
        fail("several --gallery-model without --transform: an ensemble needs one ψ per gallery model")
    spec = _index_spec(index_spec, backend, factory, milvus_index)
    check_device(device, precision)
    q_model = load_query_model_at(query_model, device)
    data = load_data(dataset, root, split, size, role="gallery")
    gallery, uncertainty, space = assemble_gallery(open_store(store, runtime=runtime, device=device, precision=precision, workers=workers),
                                                   data, q_model, [load_encoder_at(g) for g in gallery_model],
                                                   [CMCETransform.load(t, device=device) for t in transform])
    options = supported_options(spec, {"exact_rerank": exact_rerank, "uri": milvus_uri or output / LITE_FILE, "collection": collection})
    index, tuning = build_index(spec, gallery, uncertainty, target_recall=target_recall, **options)
    index.save(output)
    out.print(f"indexed {len(index)} gallery images ({index.summary}{_tuned(tuning)}, {space.dim}-d, query space {space.fingerprint}) → {output}")


def _tuned(choice: Optional[dict]) -> str:
    """The recall tuning's choice, for the summary line ('' when nothing was tuned)."""
    if choice is None:
        return ""
    if choice["parameter"] is None:
        return f", recall@10 {choice['recall']:.3f} (no search parameter to tune)"
    below = "" if choice["reached"] else f" — below the target {choice['target']}"
    return f", {choice['parameter']}={choice['value']}: recall@10 {choice['recall']:.3f} on {choice['queries']:,} gallery vectors{below}"


@app.command("upgrade-query")
def upgrade_query_cmd(
    query_model: Path = typer.Option(..., "--query-model", "-q", help="the NEW query model folder, torch or exported by "
                                     "export-query (the kl and dual-ce losses of a ψ need a torch one's classifier)"),
    transform: List[Path] = typer.Option(..., "--transform", "-t", help="the current ψ folder(s), one per gallery model"),
    output: Path = typer.Option(..., "--out", "-o", help="folder for the new index"),
    transforms_out: Path = typer.Option(..., "--transforms-out", help="folder for the new ψ's (one sub-folder each)"),
    dataset: str = DatasetOpt, root: Optional[str] = RootOpt,
    train_split: str = typer.Option("train", "--train-split", help="split the ψ's are fitted on"),
    train_size: Optional[int] = typer.Option(None, "--train-size", help="sample this many training images"),
    split: str = typer.Option("test", "--split", help="split whose gallery images are indexed"),
    size: Optional[int] = SizeOpt, store: Path = StoreOpt,
    factory: str = typer.Option("Flat", "--factory", help="FAISS index factory string"),
    runtime: str = RuntimeOpt,
    device: str = DeviceOpt, precision: str = PrecisionOpt, workers: Optional[int] = WorkersOpt,
) -> None:
    """Serve a new query model from the same gallery without re-embedding it: new ψ's are fitted on the gallery
    models' embeddings kept in the store and the index is rebuilt from them — no gallery model runs (or is needed)."""
    setup()
    check_device(device, precision)
    from ..compat import CMCETransform
    from ..pipeline.upgrade import upgrade_query

    q_model = load_query_model_at(query_model, device)
    train = load_data(dataset, root, train_split, train_size)
    gallery = load_data(dataset, root, split, size, role="gallery")
    report = upgrade_query(open_store(store, runtime=runtime, device=device, precision=precision, workers=workers),
                           [CMCETransform.load(t, device=device) for t in transform], q_model, train, gallery,
                           factory=factory, transforms_out=transforms_out, index_out=output)
    timings = ", ".join(f"{name.replace('_', ' ')} {value:.1f} s" for name, value in report.seconds.items())
    out.print(f"upgraded to {q_model.name}: {len(report.transforms)} ψ refitted → {transforms_out}; "
              f"indexed {len(report.index)} gallery images from the store → {output} ({timings})")
