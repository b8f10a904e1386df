"""Experiments that chain the steps (the demo)."""
from .experiment import PROFILES, Experiment, ExperimentConfig, ModelSpec

__all__ = ["PROFILES", "Experiment", "ExperimentConfig", "ModelSpec"]
