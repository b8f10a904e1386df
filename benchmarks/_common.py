"""What the benchmarks and studies share: the validation split, the run's metadata and command line, the options
and opening of a run config's models, the served index's options."""
from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from asymret.data import ImageDataset
from asymret.core.machine import machine_description
from asymret.pipeline import Experiment

VALIDATION_SEED, HELDOUT_SEED = 101, 102


def validation_split(experiment: Experiment, size: int) -> ImageDataset:
    """``size`` training-split images no model saw (the same images for every study)."""
    return experiment.unused_training_images().sample(size, seed=VALIDATION_SEED)


def heldout_split(experiment: Experiment, validation: ImageDataset, size: int) -> ImageDataset:
    """``size`` further unseen training-split images, disjoint from ``validation``."""
    return experiment.unused_training_images(exclude=validation).sample(size, seed=HELDOUT_SEED)


def command_line(args: argparse.Namespace) -> str:
    """The command that reruns this benchmark with these arguments, every option spelled out."""
    script = sys.argv[0].split("/")[-1]
    return f"python benchmarks/{script} " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items())


def source_fingerprint() -> str:
    """A hash of the installed asymret's source and presets: which code measured a study's stored rows."""
    import hashlib

    import asymret

    package = Path(asymret.__file__).parent
    digest = hashlib.sha256()
    for path in sorted([*package.rglob("*.py"), *package.rglob("*.toml")]):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


class MeasuredBy:
    """Which asymret source measured each stored row of a study (``meta.code``: row key → source fingerprint).

    A study resumes an interrupted run from its output file; a row another asymret measured (before a fix of what a
    model learns, a new recipe) is measured again, never silently kept — one line says how many there are."""

    def __init__(self, out: Path, stored: dict[str, str], keys: list[str]) -> None:
        self.code = source_fingerprint()
        self.rows = dict(stored)
        self.stale = {key for key in keys if stored.get(key) != self.code}
        if self.stale:
            print(f"{out}: {len(self.stale)} stored row(s) were measured by another asymret source (now {self.code}): "
                  "this run measures again those it covers", flush=True)

    def measure(self, key: str) -> bool:
        """Record that this run measures row ``key``; True when its stored runs are another asymret's (empty them)."""
        self.rows[key] = self.code
        if key in self.stale:
            self.stale.discard(key)
            return True
        return False


def run_meta(args: argparse.Namespace, seeds: tuple[int, ...], start: float) -> dict:
    """Command, date, machine, seeds and wall time of a study run."""
    return {"command": command_line(args),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine_description(),
            "seeds": list(seeds),
            **({"validation": f"{args.val_size} training-split images no model was trained on"} if hasattr(args, "val_size") else {}),
            "wall_seconds": time.perf_counter() - start}


def run_arguments(parser: argparse.ArgumentParser, seed: bool = True, gallery_model: bool = False) -> None:
    """The options of a benchmark measured on a run config's trained models: ``--config``, ``--workdir`` (the run's
    cache), ``--seed``, ``--gallery-model``."""
    parser.add_argument("--config", default="glyphs-quick")
    parser.add_argument("--workdir", type=Path, default=Path("runs/glyphs-quick"))
    if seed:
        parser.add_argument("--seed", type=int, default=0)
    if gallery_model:
        parser.add_argument("--gallery-model", default="gallery:lite0-ft")


def open_run(args: argparse.Namespace):
    """``(run config, experiment)`` of ``--config`` cached in ``--workdir``."""
    import torch

    from asymret.pipeline.runner import experiment_of, load_run_config

    torch.set_num_threads(max(1, torch.get_num_threads()))
    run_config = load_run_config(args.config)
    return run_config, experiment_of(run_config, args.workdir)


def serving_arguments(parser: argparse.ArgumentParser) -> None:
    """The served index and query model (the demo's, exported by ``asymret export-query``) and the gallery's images."""
    parser.add_argument("--index", type=Path, default=Path("runs/demo/default/index/seed0"))
    parser.add_argument("--query-model", type=Path, default=Path("runs/demo/query-onnx"))
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--split", default="test")
