"""Embedding store: sharded, resumable, manifest-carrying embeddings on disk."""
from .embeddings import EmbeddingStore, ExtractionReport, load_batch

__all__ = ["EmbeddingStore", "ExtractionReport", "load_batch"]
