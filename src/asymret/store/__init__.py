"""Embedding store: sharded, resumable, manifest-carrying embeddings on disk, keyed on what the pixels are."""
from .embeddings import EmbeddingStore, ExtractionReport
from .freshness import CorruptStoreError, StaleEmbeddingsError

__all__ = ["CorruptStoreError", "EmbeddingStore", "ExtractionReport", "StaleEmbeddingsError"]
