"""Making embedding spaces compatible: CMCE transformations and query-model compatibility training."""
from .transform import CMCETransform, TransformationNet, build_cmce_loss

__all__ = ["CMCETransform", "TransformationNet", "build_cmce_loss"]
