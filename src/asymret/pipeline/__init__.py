"""Experiments that chain the steps (the demo)."""
from .experiment import PROFILES, Experiment, ExperimentConfig, ModelSpec, SeedModels, measure

__all__ = ["PROFILES", "Experiment", "ExperimentConfig", "ModelSpec", "SeedModels", "measure"]
