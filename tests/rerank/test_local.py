"""Local descriptors: extraction (budgets, order, metadata, layers), storage in the store, the codec's bytes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from asymret.core.space import SpaceMismatchError
from asymret.encoders import create_encoder
from asymret.rerank import DescriptorCodec, LocalDescriptors, LocalSpec, local_descriptors, stored_local
from asymret.store import EmbeddingStore


@pytest.fixture(scope="module")
def encoder():
    # convnet-s at 28 px: a 7×7 map of 64 channels (stride 4); its first stage is 28×28×16
    return create_encoder("convnet-s", embedding_dim=16, input_size=28, name="tiny-convnet", seed=0).eval()


def _batch(encoder, dataset, count=6):
    from asymret.data.batches import load_batch

    images, _, _ = load_batch(dataset, np.arange(count))
    return encoder.preprocess(images)


def test_rows_hold_the_top_positions_by_norm_with_metadata(encoder, tiny_dataset):
    batch = _batch(encoder, tiny_dataset)
    spec = LocalSpec(budget=10)
    with torch.no_grad():
        rows = local_descriptors(encoder, batch, spec)
        fmap = encoder.forward_features(batch)
    assert rows.shape == (6, 10 * (4 + 64))
    per = rows.reshape(6, 10, 68).numpy()
    weights, vectors = per[:, :, 2], per[:, :, 4:]
    assert np.all(per[:, :, 3] == 1.0)  # 49 positions ≥ 10: every row valid
    assert np.all(np.diff(weights, axis=1) <= 1e-6)  # sorted by detector weight, largest first
    np.testing.assert_allclose(weights, np.linalg.norm(vectors, axis=2), rtol=1e-5)
    norms = fmap.flatten(2).norm(dim=1).numpy()  # (6, 49)
    np.testing.assert_allclose(weights, -np.sort(-norms, axis=1)[:, :10], rtol=1e-5)
    # a descriptor is the feature vector at its stored (x, y)
    x, y = per[0, 0, 0], per[0, 0, 1]
    col, row = int(x * 7 - 0.5 + 1e-4), int(y * 7 - 0.5 + 1e-4)
    np.testing.assert_allclose(vectors[0, 0], fmap[0, :, row, col].numpy(), rtol=1e-5)


def test_budget_above_the_map_size_pads_invalid_rows(encoder, tiny_dataset):
    with torch.no_grad():
        rows = local_descriptors(encoder, _batch(encoder, tiny_dataset, 2), LocalSpec(budget=60)).reshape(2, 60, 68).numpy()
    assert rows[:, :49, 3].min() == 1.0 and rows[:, 49:, 3].max() == 0.0
    assert np.all(rows[:, 49:] == 0.0)


def test_a_named_layer_gives_its_own_feature_map_and_a_wrong_name_is_refused(encoder, tiny_dataset):
    with torch.no_grad():
        rows = local_descriptors(encoder, _batch(encoder, tiny_dataset, 2), LocalSpec(budget=5, layer="backbone.features.0"))
    assert rows.shape == (2, 5 * (4 + 16))  # the first stage: 16 channels
    with pytest.raises(ValueError, match="no module"):
        local_descriptors(encoder, _batch(encoder, tiny_dataset, 2), LocalSpec(budget=5, layer="backbone.nowhere"))
    assert LocalSpec.from_output(LocalSpec(7, "backbone.features.0").output) == LocalSpec(7, "backbone.features.0")
    with pytest.raises(ValueError):
        LocalSpec(budget=0)


def test_descriptors_go_through_the_store_with_their_own_space(tmp_path, encoder, tiny_dataset):
    store = EmbeddingStore(tmp_path / "store", shard_size=64)
    spec = LocalSpec(budget=8)
    test = tiny_dataset.select(split="test")
    local = stored_local(store, encoder, test, spec)
    assert isinstance(local, LocalDescriptors) and len(local) == len(test)
    assert local.vectors.shape == (len(test), 8, 64) and local.valid.all()
    np.testing.assert_array_equal(local.labels, test.labels)
    again = stored_local(store, encoder, test, spec)  # read back, not recomputed
    np.testing.assert_array_equal(again.vectors, local.vectors)
    other = stored_local(store, encoder, test, LocalSpec(budget=4))
    assert other.space.fingerprint != local.space.fingerprint  # another budget is another space
    np.testing.assert_allclose(other.vectors, local.vectors[:, :4], rtol=1e-6)  # ... holding the same top positions
    assert local.space.fingerprint != store.get(encoder, test).space.fingerprint
    smaller = local.take(3)
    assert smaller.vectors.shape == (len(test), 3, 64)


@pytest.fixture(scope="module")
def train_local(tmp_path_factory, encoder, tiny_dataset):
    store = EmbeddingStore(tmp_path_factory.mktemp("store"))
    return (stored_local(store, encoder, tiny_dataset.select(split="train"), LocalSpec(budget=20)),
            stored_local(store, encoder, tiny_dataset.select(split="test"), LocalSpec(budget=20)))


def test_binary_codec_stores_the_bytes_it_promises(train_local):
    train, test = train_local
    codec = DescriptorCodec(dim=32, binary=True).fit(train)
    encoded = codec.encode(test.take(20))
    assert encoded.codes.dtype == np.uint8 and encoded.codes.shape == (len(test), 20, 4)  # 32 bits = 4 bytes
    assert codec.bytes_per_image(20, metadata=False) == 80
    assert encoded.nbytes_per_image() == codec.bytes_per_image(20)  # the account is what is actually held
    # 50 database descriptors of 128 bits: AMES's budget, within 1 KB
    assert DescriptorCodec(dim=128, binary=True).bytes_per_image(50, metadata=False) == 800
    decoded = encoded.decode()
    projected = codec.project(test.take(20))
    np.testing.assert_array_equal(decoded > 0, projected > 0)  # the stored bits are the projection's signs
    np.testing.assert_allclose(np.linalg.norm(decoded, axis=2), 1.0, rtol=1e-6)


def test_float_codec_round_trip_and_binary_codes_keep_the_neighbours(train_local):
    train, test = train_local
    floats = DescriptorCodec(dim=32).fit(train)
    projected = floats.project(test)
    np.testing.assert_allclose(floats.encode(test).decode(), projected, atol=2e-3)  # float16 storage
    # Hamming similarity of the binarised descriptors follows the float cosine (ITQ keeps the geometry)
    binary = DescriptorCodec(dim=32, binary=True).fit(train)
    a, b = projected[:, 0], projected[:, 1:].reshape(-1, 32)[: len(projected)]
    bits_a, bits_b = binary.encode(test).decode()[:, 0], binary.encode(test).decode()[:, 1:].reshape(-1, 32)[: len(projected)]
    cos = np.sum(a * b, axis=1)
    hamming = np.sum(bits_a * bits_b, axis=1)
    assert np.corrcoef(cos, hamming)[0, 1] > 0.5


def test_codec_saves_loads_and_refuses_foreign_descriptors(tmp_path, train_local, encoder, tiny_dataset):
    train, test = train_local
    codec = DescriptorCodec(dim=16, binary=True, seed=3).fit(train)
    loaded = DescriptorCodec.load(codec.save(tmp_path / "codec"))
    np.testing.assert_array_equal(loaded.encode(test).codes, codec.encode(test).codes)
    assert loaded.fingerprint() == codec.fingerprint()
    refit = DescriptorCodec(dim=16, binary=True, seed=3).fit(train)
    np.testing.assert_array_equal(refit.encode(test).codes, codec.encode(test).codes)  # a seeded fit is reproducible
    other = create_encoder("convnet-s", embedding_dim=16, input_size=28, name="other", seed=1).eval()
    foreign = stored_local(EmbeddingStore(tmp_path / "s2"), other, tiny_dataset.select(split="test"), LocalSpec(budget=20))
    with pytest.raises(SpaceMismatchError):
        codec.encode(foreign)
    (tmp_path / "codec" / "codec.faiss").write_bytes((tmp_path / "codec" / "codec.faiss").read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(Exception):
        DescriptorCodec.load(tmp_path / "codec")


def test_a_descriptor_map_brings_another_models_descriptors_next_to_the_query_models(tmp_path, encoder, tiny_dataset):
    from asymret.rerank import DescriptorMap, maxsim

    other = create_encoder("convnet-m", embedding_dim=16, input_size=28, name="other", seed=2).eval()  # 7×7 too
    store = EmbeddingStore(tmp_path / "store")
    spec = LocalSpec(budget=20)
    train, test = tiny_dataset.select(split="train"), tiny_dataset.select(split="test")
    mapping = DescriptorMap().fit(stored_local(store, other, train, spec), stored_local(store, encoder, train, spec))
    assert mapping.pairs_ > 160  # common positions of the same images
    q = stored_local(store, encoder, test, spec)
    mapped = mapping.transform(stored_local(store, other, test, spec)).align(q.ids)
    assert mapped.space.fingerprint == q.space.fingerprint and mapped.vectors.shape == (len(test), 20, 64)

    def score(a, b):
        return maxsim(torch.from_numpy(a.vectors), torch.from_numpy(a.valid), torch.from_numpy(b.vectors), torch.from_numpy(b.valid)).numpy()

    same_image = score(q, mapped)
    shifted = mapped.align(np.roll(q.ids, 1))  # each query against another image's mapped descriptors
    assert same_image.mean() > score(q, shifted).mean() + 0.02
    with pytest.raises(SpaceMismatchError):
        mapping.transform(q)
    loaded = DescriptorMap.load(mapping.save(tmp_path / "map"))  # plain arrays + manifest, no pickle
    np.testing.assert_array_equal(loaded.transform(stored_local(store, other, test, spec)).vectors,
                                  mapping.transform(stored_local(store, other, test, spec)).vectors)
    (tmp_path / "map" / "intercept.npy").write_bytes((tmp_path / "map" / "coef.npy").read_bytes())  # a swapped file
    with pytest.raises(ValueError, match="do not match"):
        DescriptorMap.load(tmp_path / "map")
