"""Any timm architecture with a local weights file (never a hub download)."""
import numpy as np
import pytest
import torch

timm = pytest.importorskip("timm")

from asymret.encoders import create_encoder, load_encoder  # noqa: E402


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False, num_classes=10)
    path = tmp_path_factory.mktemp("timm") / "resnet18.pth"
    torch.save({"state_dict": model.state_dict()}, path)  # a common checkpoint layout, classifier head included
    return path, model


def test_timm_encoder_loads_local_weights(weights_file, tmp_path):
    path, reference = weights_file
    encoder = create_encoder("timm:resnet18", weights=str(path), input_size=64, embedding_dim=32)
    loaded = encoder.backbone.model.conv1.weight
    assert torch.equal(loaded, reference.conv1.weight), "the local weights were not loaded"
    assert encoder.preprocess.input_size == 64 and encoder.preprocess.channels == 3
    images = [np.random.default_rng(i).integers(0, 255, (40, 50, 3), dtype=np.uint8) for i in range(3)]
    embeddings = encoder.embed_images(images)
    assert embeddings.shape == (3, 32)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    assert encoder.forward_features(encoder.preprocess(images)).ndim == 4  # a feature map for local descriptors
    encoder.save(tmp_path / "enc")
    np.testing.assert_allclose(load_encoder(tmp_path / "enc").embed_images(images), embeddings, atol=1e-5)


def test_timm_never_downloads():
    with pytest.raises(ValueError, match="never downloads"):
        create_encoder("timm:resnet18", pretrained=True)


def test_timm_rejects_weights_of_another_architecture(tmp_path):
    other = timm.create_model("resnet34", pretrained=False, num_classes=0)
    path = tmp_path / "resnet34.pth"
    torch.save(other.state_dict(), path)
    with pytest.raises((ValueError, RuntimeError)):
        create_encoder("timm:resnet18", weights=str(path))
