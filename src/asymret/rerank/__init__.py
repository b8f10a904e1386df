"""Re-ranking a global shortlist with local descriptors (between the index and the evaluation).

- :mod:`.local`: local descriptors (extracted from any encoder's feature map by :mod:`asymret.encoders.local`,
  stored in the embedding store like embeddings) as the re-rankers take them;
- :mod:`.codec`: their compact database form — PCA to a small dimension, float16 or ITQ-binarised — with an exact
  bytes-per-image account;
- :mod:`.shortlist`: the global shortlist and its reordering by fused scores (measured, and the fusion chosen on
  validation, by :mod:`asymret.eval.rerank`);
- :mod:`.mapping`: one model's descriptors mapped into another's space (the asymmetric case);
- :mod:`.base`: what every re-ranker shares (the sides it reads, fusion, re-ranking a shortlist, persistence);
- :mod:`.ames`: the AMES-style pair-wise transformer re-ranker, and the training-free MaxSim baseline;
- :mod:`.locore`: the LOCORE-style list-wise re-ranker with sliding windows;
- :mod:`.search`: re-ranking inside ``index.search(..., rerank=Reranking(...), shortlist=N)``.
"""
from .ames import AMESConfig, AMESReranker, MaxSimReranker, PairTransformer, maxsim
from .base import LearnedReranker, PairSide, Reranker, load_reranker
from .locore import ListTransformer, LOCOREConfig, LOCOREReranker, sliding_windows
from .codec import DescriptorCodec, EncodedDescriptors
from ..encoders.local import LocalSpec, feature_map, local_descriptors, local_space
from .local import LocalDescriptors, stored_local
from .mapping import DescriptorMap
from .search import Reranking
from .shortlist import Shortlist, fuse, global_shortlist

__all__ = ["Reranking", "Reranker", "LearnedReranker", "load_reranker", "LOCOREConfig", "LOCOREReranker", "ListTransformer", "sliding_windows",
           "DescriptorMap", "AMESConfig", "AMESReranker", "MaxSimReranker", "maxsim", "PairSide", "PairTransformer", "DescriptorCodec", "EncodedDescriptors", "LocalDescriptors",
           "LocalSpec", "feature_map", "local_descriptors", "local_space", "stored_local", "Shortlist", "fuse", "global_shortlist"]
