"""Experiments that chain the steps (the demo, the benchmarks' runs): their config, what they build, what they measure."""
from .artifacts import ExperimentArtifacts, SeedModels
from .experiment import PROFILES, Experiment, ExperimentConfig, ModelSpec

__all__ = ["PROFILES", "Experiment", "ExperimentArtifacts", "ExperimentConfig", "ModelSpec", "SeedModels"]
