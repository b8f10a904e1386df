"""From an experiment to a served index in one step: the configuration to deploy, chosen on validation classes
only, and a folder ``asymret serve --deploy DIR`` takes.

Every deployable row of an experiment (the query model alone, KD, each single ψ, the plain and the robust
ensemble, and each re-ranking row: a global search re-ranked with local descriptors) records
``validation_recall@1`` — R@1 on training classes held out of every model, never the test classes.
:func:`choose_deployment` names the row with the best mean over seeds (ties: the cheaper query side, then the
earlier row) and reports its test figures beside it; :func:`write_deployment` writes that row's first seed as
``DIR/index`` (its gallery, its uncertainty), ``DIR/query`` (the query model exported to ONNX, parity measured),
for a re-ranking row ``DIR/rerank`` (:mod:`asymret.rerank.deployed`: the re-ranker, the codec, the gallery's
descriptors and the query side's local layer in ONNX) and ``DIR/manifest.json`` (kind ``deployment``: what was
chosen, on what, at what cost).
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np

from ..core.manifest import read_manifest, write_manifest
from ..eval.report import ResultRow, mean_std
from ..index import GalleryIndex, load_index

__all__ = ["VALIDATION_METRIC", "Deployable", "DeploymentPaths", "choose_deployment", "write_deployment", "deployment_paths"]

VALIDATION_METRIC = "validation_recall@1"


@dataclass
class Deployable:
    """What serving one row takes: its query model, its gallery's embeddings (and their uncertainty) and, for a
    re-ranking row, the re-ranking (:class:`~asymret.rerank.deployed.RerankDeployable`)."""

    query_model: Any
    gallery: Any
    uncertainty: np.ndarray | None = None
    rerank: Any = None


class DeploymentPaths(NamedTuple):
    """A deployment folder's parts: the index, the query model and the re-ranking (None when it does not re-rank)."""

    index: Path
    query: Path
    rerank: Path | None


def choose_deployment(rows: Sequence[ResultRow], flops: dict[str, dict] | None = None) -> dict[str, Any]:
    """The row to deploy: the best mean ``validation_recall@1``; its test R@1 and query-side cost beside it."""
    candidates = [row for row in rows if row.metrics.get(VALIDATION_METRIC)]
    if not candidates:
        raise ValueError("no row has a validation R@1: set validation_classes so that choices can be made on unseen classes")
    costs = {name: info.get("flops", 0.0) for name, info in (flops or {}).items()}

    def rank(item: tuple[int, ResultRow]) -> tuple[float, float, int]:
        position, row = item
        return (-mean_std(row.metrics[VALIDATION_METRIC])[0], costs.get(row.query_model, 0.0), position)

    _, chosen = min(enumerate(candidates), key=rank)
    test, test_std = mean_std(chosen.metrics["recall@1"]) if "recall@1" in chosen.metrics else (float("nan"), 0.0)
    validation, validation_std = mean_std(chosen.metrics[VALIDATION_METRIC])
    # a re-ranking row's cost beside its figures (each a value per seed: the shortlist and bytes are the same in every seed)
    rerank = {key: float(np.mean(chosen.extra[key])) for key in ("shortlist", "bytes_per_image", "rerank_ms_per_query") if key in chosen.extra}
    return {
        "setting": chosen.setting, "query_model": chosen.query_model, "gallery_model": chosen.gallery_model,
        **({"rerank": rerank} if rerank else {}),
        "validation_recall@1": validation, "validation_recall@1_std": validation_std,
        "test_recall@1": test, "test_recall@1_std": test_std,
        "query_mflops": costs.get(chosen.query_model, 0.0) / 1e6 if chosen.query_model in costs else None,
        "candidates": {row.setting: mean_std(row.metrics[VALIDATION_METRIC])[0] for row in candidates},
    }


def deployment_paths(directory: str | os.PathLike) -> DeploymentPaths:
    """The index, query model and re-ranking folders of a deployment folder (checked to be one)."""
    directory = Path(directory)
    read_manifest(directory, kind="deployment")
    rerank = directory / "rerank"
    return DeploymentPaths(directory / "index", directory / "query", rerank if rerank.is_dir() else None)


def write_deployment(experiment: Any, choice: dict[str, Any], directory: str | os.PathLike) -> Path:
    """``choice`` (from :func:`choose_deployment`) written for the experiment's first seed: the index, the exported
    query model and a manifest.  The folder is rebuilt whole (a re-run replaces it)."""
    from ..encoders.onnx import export_onnx

    setting = choice["setting"]
    if setting not in experiment.deployables:
        raise ValueError(f"the experiment has no deployable row {setting!r} (was it run in this process?)")
    deployable: Deployable = experiment.deployables[setting]()
    query_model, gallery, uncertainty = deployable.query_model, deployable.gallery, deployable.uncertainty
    directory = Path(directory)
    staging = directory.with_name(directory.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    index = GalleryIndex(gallery.space)
    index.add(gallery, uncertainty)
    index.save(staging / "index")
    load_index(staging / "index", expect_space=query_model.space())  # the query model and the index share a space
    sample = [experiment.test_queries.load(i) for i in range(min(16, len(experiment.test_queries)))]
    export_onnx(query_model, staging / "query", verify_images=sample)
    if deployable.rerank is not None:
        from ..rerank.deployed import write_rerank_deployment

        write_rerank_deployment(deployable.rerank, query_model, staging / "rerank", verify_images=sample)
    seed = experiment.config.seeds[0]
    write_manifest(staging, "deployment", {
        "choice": {key: value for key, value in choice.items() if key != "candidates"}, "candidates": choice["candidates"],
        "seed": seed, "dataset": experiment.dataset.name, "gallery_items": len(gallery),
        "rejection_available": uncertainty is not None and bool(np.ptp(uncertainty) > 0), "reranks": deployable.rerank is not None,
        "chosen_on": "validation classes (held out of every model's training), never the test classes",
    })
    if directory.exists():
        shutil.rmtree(directory)
    staging.rename(directory)
    return directory
