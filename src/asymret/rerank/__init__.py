"""Re-ranking a global shortlist with local descriptors (between the index and the evaluation).

- :mod:`.local`: local descriptors from any encoder's feature map (detector score, top-k, metadata), stored in the
  embedding store like embeddings;
- :mod:`.codec`: their compact database form — PCA to a small dimension, float16 or ITQ-binarised — with an exact
  bytes-per-image account.
"""
from .codec import DescriptorCodec, EncodedDescriptors
from .local import LocalDescriptors, LocalSpec, feature_map, local_descriptors, local_space, stored_local

__all__ = ["DescriptorCodec", "EncodedDescriptors", "LocalDescriptors", "LocalSpec", "feature_map", "local_descriptors",
           "local_space", "stored_local"]
