"""What the validation-split studies (ablate_cmce.py, gap_study.py) share: the split and the run's metadata."""
from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timezone

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


def run_meta(args: argparse.Namespace, seeds: tuple[int, ...], start: float) -> dict:
    """Command, date, machine, seeds and wall time of a study run."""
    return {"command": command_line(args),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine_description(),
            "seeds": list(seeds),
            **({"validation": f"{args.val_size} training-split images no model was trained on"} if hasattr(args, "val_size") else {}),
            "wall_seconds": time.perf_counter() - start}
