"""asymret — asymmetric image retrieval.

The public API, in data-flow order::

    import asymret as ar
    data = ar.load_dataset("fashion-mnist")
    model = ar.create_encoder("convnet-xs", embedding_dim=64); ar.train_encoder(model, data.select(split="train"), ar.TrainConfig())
    store = ar.EmbeddingStore("runs/embeddings"); emb = store.get(model, data.select(split="test"))
    psi = ar.CMCETransform(head=query.classifier).fit(gallery_emb, query_emb)
    index = ar.GalleryIndex(space); index.add(emb); index.search(queries, k=10)
"""
__version__ = "0.1.0"

from .manifest import SpaceMismatchError  # noqa: E402
from .space import Embeddings, Space  # noqa: E402
from .data import ImageDataset, ImageLoadError, load_dataset  # noqa: E402
from .encoders import CosineClassifier, Encoder, create_encoder, list_backbones, load_encoder, register_backbone, train_encoder  # noqa: E402
from .training import TrainConfig  # noqa: E402
from .store import EmbeddingStore  # noqa: E402
from .compat import CMCETransform  # noqa: E402
from .compat.losses import create_loss, list_losses  # noqa: E402
from .compat.query_train import QUERY_METHODS, train_compatible_query, train_query_model  # noqa: E402
from .gallery import CMCEEnsemble, ensemble_mean, pairwise_uncertainty, rejection_mask  # noqa: E402
from .index import GalleryIndex  # noqa: E402
from .eval.metrics import evaluate_embeddings, retrieval_metrics, risk_coverage, tar_at_far  # noqa: E402

__all__ = [
    "CMCEEnsemble", "CMCETransform", "CosineClassifier", "EmbeddingStore", "Embeddings", "Encoder", "GalleryIndex",
    "ImageDataset", "ImageLoadError", "QUERY_METHODS", "Space", "SpaceMismatchError", "TrainConfig", "create_encoder",
    "create_loss", "ensemble_mean", "evaluate_embeddings", "list_backbones", "list_losses", "load_dataset", "load_encoder",
    "pairwise_uncertainty", "register_backbone", "rejection_mask", "retrieval_metrics", "risk_coverage", "tar_at_far",
    "train_compatible_query", "train_encoder", "train_query_model",
]
