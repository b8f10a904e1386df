"""Fingerprints, atomic writes, manifests, spaces and space-checked embeddings."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from asymret.core.manifest import (
    MANIFEST_NAME,
    SpaceMismatchError,
    atomic_save_npy,
    atomic_write_bytes,
    atomic_write_json,
    hash_arrays,
    read_manifest,
    stable_hash,
    write_manifest,
)
from asymret.core.space import Embeddings, Space, l2_normalize


# ------------------------------------------------------------------------------------------ stable_hash
def test_stable_hash_is_deterministic_and_key_order_independent():
    a = {"arch": "convnet-s", "dim": 128, "nested": {"x": [1, 2, 3], "y": "z"}}
    b = {"nested": {"y": "z", "x": [1, 2, 3]}, "dim": 128, "arch": "convnet-s"}
    assert stable_hash(a) == stable_hash(b)
    assert len(stable_hash(a)) == 16 and len(stable_hash(a, 32)) == 32
    assert stable_hash(a, 32).startswith(stable_hash(a))
    # a known value: a change of serialisation would silently invalidate every stored artifact
    assert stable_hash({"b": 1, "a": [1, 2]}) == stable_hash({"a": [1, 2], "b": 1})
    import hashlib

    expected = hashlib.sha256(b'{"a":[1,2],"b":1}').hexdigest()[:16]
    assert stable_hash({"b": 1, "a": [1, 2]}) == expected


def test_stable_hash_distinguishes_values_and_list_order():
    base = {"a": 1, "b": [1, 2]}
    assert stable_hash(base) != stable_hash({"a": 2, "b": [1, 2]})
    assert stable_hash(base) != stable_hash({"a": 1, "b": [2, 1]})
    assert stable_hash(base) != stable_hash({"a": 1, "b": [1, 2], "c": None})


def test_stable_hash_numpy_values_hash_like_python_values():
    assert stable_hash({"n": np.int64(3), "f": np.float32(0.5), "arr": np.array([1, 2])}) == stable_hash(
        {"n": 3, "f": 0.5, "arr": [1, 2]}
    )
    assert stable_hash({"s": {3, 1, 2}}) == stable_hash({"s": [1, 2, 3]})
    assert stable_hash({"p": Path("/a/b")}) == stable_hash({"p": "/a/b"})
    with pytest.raises(TypeError):
        stable_hash({"x": object()})


def test_hash_arrays_sees_dtype_shape_and_bytes():
    a = np.arange(6, dtype=np.float32)
    assert hash_arrays([a]) == hash_arrays([a.copy()])
    assert hash_arrays([a]) != hash_arrays([a.reshape(2, 3)])
    assert hash_arrays([a]) != hash_arrays([a.astype(np.float64)])
    b = a.copy()
    b[3] += 1e-3
    assert hash_arrays([a]) != hash_arrays([b])
    torch = pytest.importorskip("torch")
    assert hash_arrays([torch.arange(6, dtype=torch.float32)]) == hash_arrays([a])


# ------------------------------------------------------------------------------------------ atomic writes
def test_atomic_writes_leave_no_temp_files(tmp_path):
    target = tmp_path / "sub" / "file.bin"
    atomic_write_bytes(target, b"first")
    atomic_write_bytes(target, b"second")
    atomic_write_json(tmp_path / "sub" / "x.json", {"b": 1, "a": 2})
    atomic_save_npy(tmp_path / "sub" / "v.npy", np.eye(3, dtype=np.float32))
    assert target.read_bytes() == b"second"
    assert json.loads((tmp_path / "sub" / "x.json").read_text()) == {"a": 2, "b": 1}
    np.testing.assert_array_equal(np.load(tmp_path / "sub" / "v.npy"), np.eye(3, dtype=np.float32))
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["file.bin", "v.npy", "x.json"]


def test_atomic_write_failure_keeps_old_file_and_cleans_up(tmp_path):
    target = tmp_path / "data.json"
    atomic_write_json(target, {"v": 1})
    with pytest.raises(TypeError):
        atomic_write_json(target, {"v": object()})  # fails while serialising: nothing touched
    with pytest.raises(TypeError):
        atomic_write_bytes(target, "not bytes")  # fails while writing into the temp file
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["data.json"]


def test_manifest_round_trip_and_kind_check(tmp_path):
    written = write_manifest(tmp_path, "encoder", {"fingerprint": "abc", "dim": 4})
    read = read_manifest(tmp_path, kind="encoder")
    assert read == json.loads(json.dumps(written))
    assert read["kind"] == "encoder" and "versions" in read and read["format_version"] >= 1
    with pytest.raises(ValueError, match="expected 'transformation'"):
        read_manifest(tmp_path, kind="transformation")
    with pytest.raises(FileNotFoundError):
        read_manifest(tmp_path / "missing")
    assert (tmp_path / MANIFEST_NAME).is_file()


# ------------------------------------------------------------------------------------------ Space
def test_space_dict_round_trip():
    space = Space("f00d", 8, True, "model", provenance=(("psi", "beef"),))
    again = Space.from_dict(json.loads(json.dumps(space.to_dict())))
    assert again == space


def test_check_compatible_accepts_same_space_and_names_every_problem():
    space = Space("aaaa", 16, True, "query-model")
    space.check_compatible(Space("aaaa", 16, True, "other name", provenance=(("psi", "x"),)))
    with pytest.raises(SpaceMismatchError, match=r"fingerprint bbbb \(gallery\) != aaaa \(query-model\)"):
        space.check_compatible(Space("bbbb", 16, True, "gallery"))
    with pytest.raises(SpaceMismatchError, match="dimension 32 != 16"):
        space.check_compatible(Space("aaaa", 32, True))
    with pytest.raises(SpaceMismatchError, match="normalised=False but expected normalised=True"):
        space.check_compatible(Space("aaaa", 16, False))
    with pytest.raises(SpaceMismatchError) as info:
        space.check_compatible(Space("cccc", 8, False), what="the feature bank")
    message = str(info.value)
    assert message.startswith("the feature bank are from another embedding space")
    assert "fingerprint" in message and "dimension 8 != 16" in message and "normalised" in message


# ------------------------------------------------------------------------------------------ Embeddings
def _unit(n, d, seed=0):
    return l2_normalize(np.random.default_rng(seed).normal(size=(n, d)))


def test_embeddings_refuse_wrong_dim_and_non_unit_vectors():
    space = Space("aaaa", 8, True, "m")
    Embeddings(_unit(5, 8), np.arange(5), space)
    with pytest.raises(SpaceMismatchError, match="dimension 6"):
        Embeddings(_unit(5, 6), np.arange(5), space)
    raw = _unit(5, 8) * 2.0
    with pytest.raises(SpaceMismatchError, match="not unit length"):
        Embeddings(raw, np.arange(5), space)
    # an unnormalised space accepts any length
    Embeddings(raw, np.arange(5), Space("aaaa", 8, False, "m:pooled"))
    with pytest.raises(ValueError, match="do not match"):
        Embeddings(_unit(5, 8), np.arange(4), space)
    with pytest.raises(ValueError, match="labels"):
        Embeddings(_unit(5, 8), np.arange(5), space, labels=[0, 1])


def test_embeddings_coerce_types_take_and_align():
    vectors = _unit(4, 3).astype(np.float64)
    emb = Embeddings(vectors, [10, 11, 12, 13], Space("s", 3), labels=[0, 1, 2, 3])
    assert emb.vectors.dtype == np.float32 and emb.ids.tolist() == ["10", "11", "12", "13"]
    aligned = emb.align(np.array(["12", "10"]))
    assert aligned.ids.tolist() == ["12", "10"] and aligned.labels.tolist() == [2, 0]
    np.testing.assert_array_equal(aligned.vectors, emb.vectors[[2, 0]])
    assert aligned.space == emb.space
    with pytest.raises(KeyError, match="99"):
        emb.align(["99"])


def test_nan_and_inf_vectors_are_named_as_such():
    space = Space("n" * 16, 3, True, "unit")
    vectors = l2_normalize(np.eye(3, dtype=np.float32))
    vectors[1, 0] = np.nan
    with pytest.raises(ValueError, match="1 of 3 vectors .* contain NaN or inf .*id '1'"):
        Embeddings(vectors, np.arange(3), space)
    raw = Space("r" * 16, 3, False, "raw")
    with pytest.raises(ValueError, match="NaN or inf"):
        Embeddings(np.array([[np.inf, 0, 0]], np.float32), ["x"], raw)


def test_index_refuses_nan_queries_naming_them():
    from asymret.index import ExactIndex

    space = Space("n" * 16, 3, True, "unit")
    index = ExactIndex(space)
    index.add(Embeddings(l2_normalize(np.eye(3, dtype=np.float32)), ["a", "b", "c"], space))
    with pytest.raises(ValueError, match="1 query vectors contain NaN or inf"):
        index.search(np.array([[np.nan, 0, 0]], np.float32), k=1, space=space)
