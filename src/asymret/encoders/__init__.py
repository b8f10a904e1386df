"""Encoders: images → L2-normalised embeddings; a registry of backbones and one ``create_encoder``."""
from .backbones import list_backbones, register_backbone
from .encoder import Encoder, create_encoder, load_encoder
from .heads import CosineClassifier
from .preprocess import Preprocess
from .train import train_encoder

__all__ = ["CosineClassifier", "Encoder", "Preprocess", "create_encoder", "list_backbones", "load_encoder",
           "register_backbone", "train_encoder"]
