"""The query encoder exported to ONNX: dynamic batch, the same embeddings and space, tampering refused."""
from __future__ import annotations

import numpy as np
import pytest

from asymret.encoders import create_encoder
from asymret.encoders.onnx import OnnxEncoder, export_onnx, load_query_model


def test_export_keeps_embeddings_and_space_at_any_batch_and_refuses_an_edited_file(tmp_path, tiny_arrays):
    encoder = create_encoder("convnet-xs", embedding_dim=16, input_size=28, seed=0)
    images = [image if image.ndim == 3 else image[..., None] for image in tiny_arrays["images"][:7]]
    export_onnx(encoder, tmp_path / "q", verify_images=images)
    exported = load_query_model(tmp_path / "q")
    assert isinstance(exported, OnnxEncoder) and exported.space() == encoder.space()
    reference = encoder.embed_images(images)
    for batch in (1, 3, 7):  # the batch axis is dynamic
        np.testing.assert_allclose(exported.embed_images(images, batch_size=batch), reference, atol=1e-5)
    assert load_query_model(encoder.save(tmp_path / "torch")).fingerprint() == encoder.fingerprint()  # a torch folder stays torch
    data = bytearray((tmp_path / "q" / "model.onnx").read_bytes())
    data[-8] ^= 0xFF
    (tmp_path / "q" / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="does not match its manifest"):
        OnnxEncoder.load(tmp_path / "q")
