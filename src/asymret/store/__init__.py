"""Embedding store: sharded, resumable, manifest-carrying embeddings on disk."""
from .embeddings import EmbeddingStore, ExtractionReport

__all__ = ["EmbeddingStore", "ExtractionReport"]
