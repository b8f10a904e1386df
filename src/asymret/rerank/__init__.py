"""Re-ranking a global shortlist with local descriptors (between the index and the evaluation).

- :mod:`.local`: local descriptors (extracted from any encoder's feature map by :mod:`asymret.encoders.local`,
  stored in the embedding store like embeddings) as the re-rankers take them;
- :mod:`.codec`: their compact database form — PCA to a small dimension, float16 or ITQ-binarised — with an exact
  bytes-per-image account;
- :mod:`.shortlist`: the global shortlist and its reordering by fused scores (measured, and the fusion chosen on
  validation, by :mod:`asymret.eval.rerank`);
- :mod:`.mapping`: one model's descriptors mapped into another's space (the asymmetric case);
- :mod:`.base`: what every re-ranker shares (the sides it reads, fusion, re-ranking a shortlist, persistence) and
  the registry of learned re-rankers (:data:`~.base.RERANKERS`, filled by the classes themselves) that
  :func:`load_reranker` reads;
- :mod:`.blocks`: the building blocks the learned re-rankers share (transformer block, MaxSim and its prior);
- :mod:`.ames`: the AMES-style pair-wise transformer re-ranker, and the training-free MaxSim baseline;
- :mod:`.locore`: the LOCORE-style list-wise re-ranker with sliding windows;
- :mod:`.deployed`: a re-ranking written ready to serve and loaded by the service (``asymret run --deploy``);
- :mod:`.search`: re-ranking a search: ``RerankedIndex(index, Reranking(...), shortlist=N).search(queries, k)``
  (also ``index.search(..., rerank=Reranking(...), shortlist=N)``).
"""
from .ames import AMESConfig, AMESReranker, MaxSimReranker, PairTransformer
from .base import RERANKERS, LearnedReranker, PairSide, Reranker, load_reranker
from .blocks import maxsim
from .locore import ListTransformer, LOCOREConfig, LOCOREReranker, sliding_windows
from .codec import DescriptorCodec, EncodedDescriptors
from ..encoders.local import LocalSpec, feature_map, local_descriptors, local_space
from .local import LocalDescriptors, stored_local
from .mapping import DescriptorMap
from .search import RerankedIndex, Reranking
from .deployed import DeployedReranking, RerankDeployable, write_rerank_deployment
from .shortlist import Shortlist, fuse, global_shortlist

__all__ = ["DeployedReranking", "RerankDeployable", "write_rerank_deployment", "Reranking", "RerankedIndex", "Reranker", "LearnedReranker", "RERANKERS", "load_reranker", "LOCOREConfig", "LOCOREReranker", "ListTransformer", "sliding_windows",
           "DescriptorMap", "AMESConfig", "AMESReranker", "MaxSimReranker", "maxsim", "PairSide", "PairTransformer", "DescriptorCodec", "EncodedDescriptors", "LocalDescriptors",
           "LocalSpec", "feature_map", "local_descriptors", "local_space", "stored_local", "Shortlist", "fuse", "global_shortlist"]
