"""The one registry helper, and the registries built on it."""
from __future__ import annotations

import pytest

from asymret.core.registry import Registry, normalize_name


def test_names_are_normalised_once():
    registry: Registry[int] = Registry("widget")
    registry.register("Fancy_Widget", 1, aliases=("fw",))
    assert normalize_name(" Fancy_Widget ") == "fancy-widget"
    assert registry["fancy-widget"] == registry["FANCY_WIDGET"] == registry["fw"] == 1
    assert "fancy widget" in registry and "other" not in registry
    assert registry.names() == ["fancy-widget"] and len(registry) == 1


def test_duplicates_are_refused():
    registry: Registry[int] = Registry("widget")
    registry.register("a", 1, aliases=("x",))
    with pytest.raises(ValueError, match="already registered"):
        registry.register("A", 2)
    with pytest.raises(ValueError, match="alias 'x' is already taken"):
        registry.register("b", 3, aliases=("x",))
    with pytest.raises(ValueError, match="already registered"):
        registry.register("x", 4)  # an alias's name is taken too


def test_unknown_name_lists_the_known_ones_and_suggests():
    registry: Registry[int] = Registry("widget")
    for name in ("alpha", "beta", "gamma"):
        registry.register(name, 0)
    with pytest.raises(ValueError, match=r"unknown widget 'betta' — did you mean 'beta'\? Known: alpha, beta, gamma"):
        registry.get_entry("betta")
    with pytest.raises(KeyError):
        registry["nothing-like-it"]


def test_create_refuses_unknown_keyword_arguments():
    registry: Registry = Registry("factory")

    @registry.register("plain")
    def plain(size: int = 1, *, colour: str = "red") -> tuple:
        return size, colour

    registry.register("open", lambda **kwargs: kwargs)
    assert registry.create("plain", size=3, colour="blue") == (3, "blue")
    with pytest.raises(TypeError, match="does not take sise; it takes: colour, size"):
        registry.create("plain", sise=3)
    assert registry.create("open", anything=1) == {"anything": 1}  # a factory taking **kwargs decides itself


def test_backbone_factories_refuse_what_they_cannot_do():
    from asymret.encoders import create_encoder

    with pytest.raises(ValueError, match="convnet-xs has no pretrained weights"):
        create_encoder("convnet-xs", pretrained=True)
    encoder = create_encoder("convnet-xs", embedding_dim=8)
    assert encoder.config["pretrained"] is False
    with pytest.raises(ValueError, match="efficientnet_lite0 takes 3-channel images"):
        create_encoder("efficientnet_lite0", in_chans=1)


@pytest.mark.parametrize("module, registry_name, expected", [
    ("asymret.encoders.backbones", "BACKBONES", {"convnet-xs", "efficientnet-lite0", "resnet-tiny"}),
    ("asymret.compat.losses", "LOSSES", {"csd", "distill-cos", "dual-ce"}),
    ("asymret.compat.query_train", "QUERY_METHODS", {"bct", "raml", "monotonic"}),
    ("asymret.data.loaders", "DATASET_LOADERS", {"folder", "fashion-mnist", "cub200"}),
    ("asymret.pipeline.experiment", "PROFILES", {"default", "tiny", "full"}),
])
def test_every_registry_is_a_registry(module, registry_name, expected):
    import importlib

    registry = getattr(importlib.import_module(module), registry_name)
    assert isinstance(registry, Registry)
    assert expected <= set(registry)
