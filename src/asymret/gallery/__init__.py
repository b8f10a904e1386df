"""The gallery side of CMCE: ensemble of transformed embeddings, uncertainty, rejection."""
from .ensemble import CMCEEnsemble, ensemble_mean, pairwise_uncertainty, rejection_mask

__all__ = ["CMCEEnsemble", "ensemble_mean", "pairwise_uncertainty", "rejection_mask"]
