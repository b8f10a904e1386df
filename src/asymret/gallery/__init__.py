"""The gallery side of CMCE: ensemble of transformed embeddings, uncertainty, rejection."""
from ..core.uncertainty import ensemble_mean, pairwise_uncertainty, rejection_mask
from .ensemble import CMCEEnsemble

__all__ = ["CMCEEnsemble", "ensemble_mean", "pairwise_uncertainty", "rejection_mask"]
