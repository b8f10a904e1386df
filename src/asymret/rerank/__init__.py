"""Re-ranking a global shortlist with local descriptors (between the index and the evaluation).

- :mod:`.local`: local descriptors from any encoder's feature map (detector score, top-k, metadata), stored in the
  embedding store like embeddings;
- :mod:`.codec`: their compact database form — PCA to a small dimension, float16 or ITQ-binarised — with an exact
  bytes-per-image account;
- :mod:`.shortlist`: the global shortlist, its reordering by fused scores, its metrics, the fusion chosen on
  validation;
- :mod:`.ames`: the AMES-style pair-wise transformer re-ranker.
"""
from .ames import AMESConfig, AMESReranker, PairSide, PairTransformer
from .codec import DescriptorCodec, EncodedDescriptors
from .local import LocalDescriptors, LocalSpec, feature_map, local_descriptors, local_space, stored_local
from .shortlist import Shortlist, choose_fusion, fuse, global_shortlist

__all__ = ["AMESConfig", "AMESReranker", "PairSide", "PairTransformer", "DescriptorCodec", "EncodedDescriptors", "LocalDescriptors",
           "LocalSpec", "feature_map", "local_descriptors", "local_space", "stored_local", "Shortlist", "choose_fusion", "fuse",
           "global_shortlist"]
