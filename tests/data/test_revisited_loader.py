"""Revisited Oxford/Paris loader (official revisitop layout) and the safe ground-truth unpickler."""
from __future__ import annotations

import os
import pickle
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from asymret.data import (
    DatasetFormatError,
    FileSource,
    ImageLoadError,
    UnsafePickleError,
    load_revisited,
    safe_load_pickle,
)
from asymret.data.dataset import CroppedSource



# ------------------------------------------------------------------------------------------ loader
@pytest.mark.parametrize("python2", [True, False], ids=["python2-pickle", "python3-protocol2"])
def test_loads_official_layout(tmp_path: Path, python2: bool, revisited_kit: dict) -> None:
    kit = revisited_kit
    root = kit["write"](tmp_path / "datasets", python2=python2)
    bench = load_revisited(root, "roxford5k")

    db = bench.database
    assert db.ids.tolist() == kit["imlist"]  # row i = imlist[i], the index the ground truth uses
    assert db.keys.tolist() == [f"{n}.jpg" for n in kit["imlist"]]
    assert db.is_gallery.all() and not db.is_query.any()
    assert db.load(2).shape == (kit["image_size"][1], kit["image_size"][0], 3)  # full image, uncropped

    queries = bench.queries
    assert queries.ids.tolist() == [f"query/{n}" for n in kit["qimlist"]]
    assert queries.is_query.all() and not queries.is_gallery.any()
    assert not set(queries.ids) & set(db.ids)  # queries are not part of the database

    truth = bench.ground_truth
    assert len(truth) == 2 and truth.num_database == 6
    assert truth.queries[0].easy.tolist() == [0, 2]
    assert truth.queries[0].hard.tolist() == [1]
    assert truth.queries[0].junk.tolist() == [3]
    assert truth.queries[0].bbx == (1.4, 2.5, 7.6, 6.5)
    assert truth.queries[1].easy.tolist() == [] and truth.queries[1].hard.tolist() == [4]
    assert truth.queries[1].bbx == (0.0, 0.0, 5.0, 5.0)


def test_queries_are_cropped_like_pil(tmp_path: Path, revisited_kit: dict) -> None:
    kit = revisited_kit
    root = kit["write"](tmp_path / "datasets")
    bench = load_revisited(root, "roxford5k")
    jpg = root / "roxford5k" / "jpg"
    for row, (name, entry) in enumerate(zip(kit["qimlist"], kit["gnd"]())):
        with Image.open(jpg / f"{name}.jpg") as image:
            expected = np.asarray(image.convert("RGB").crop(tuple(float(v) for v in entry["bbx"])))
        assert np.array_equal(bench.queries.load(row), expected)
    # bbx (1.4, 2.5, 7.6, 6.5) rounds half-to-even like PIL: x 1..8, y 2..6 -> 4 rows x 7 columns
    assert bench.queries.load(0).shape == (4, 7, 3)
    full = FileSource(jpg).load(kit["qimlist"][0] + ".jpg")
    assert np.array_equal(bench.queries.load(0), full[2:6, 1:8])


def test_crop_outside_image_is_zero_padded_and_empty_crop_refused() -> None:
    class Constant(FileSource):
        def load(self, key):  # 3x4 image of 9s
            return np.full((3, 4, 1), 9, dtype=np.uint8)

    source = CroppedSource(Constant("."), [("a", (2, 1, 6, 3)), ("a", (1, 1, 1.4, 3))])
    crop = source.load(0)
    # columns 2,3 inside the 4-wide image, 4,5 outside (zeros, as PIL's crop pads)
    assert crop[:, :, 0].tolist() == [[9, 9, 0, 0], [9, 9, 0, 0]]
    with pytest.raises(ImageLoadError, match="empty"):
        source.load(1)  # x 1..1.4 rounds to an empty box


def test_root_may_be_the_dataset_folder_and_rparis(tmp_path: Path, revisited_kit: dict) -> None:
    kit = revisited_kit
    root = kit["write"](tmp_path / "datasets", name="rparis6k")
    direct = load_revisited(root / "rparis6k", "RParis6k")
    assert direct.name == "rparis6k" and len(direct.database) == 6 and len(direct.queries) == 2
    with pytest.raises(FileNotFoundError, match="gnd_roxford5k.pkl"):
        load_revisited(root, "roxford5k")
    with pytest.raises(ValueError, match="unknown revisited dataset 'oxford5k'"):
        load_revisited(root, "oxford5k")


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda g: g[0].update(easy=[0, 6]), r"gnd\[0\]\['easy'\]: index 6 outside the database \(0..5\)"),
        (lambda g: g[1].pop("bbx"), r"gnd\[1\] has no 'bbx'"),
        (lambda g: g[0].update(bbx=[5, 0, 2, 4]), r"gnd\[0\]\['bbx'\] = .* is empty"),
        (lambda g: g[0].update(junk=[1.5]), r"gnd\[0\]\['junk'\] must hold integer image indices"),
        (lambda g: g.pop(), "gnd has 1 entries for 2 queries"),
    ],
)
def test_malformed_ground_truth_is_one_clear_error(tmp_path: Path, change, message: str, revisited_kit: dict) -> None:
    kit = revisited_kit
    gnd = kit["gnd"]()
    change(gnd)
    root = kit["write"](tmp_path / "datasets", gnd=gnd)
    with pytest.raises(DatasetFormatError, match=message):
        load_revisited(root)


# ------------------------------------------------------------------------------------------ safe unpickler
class _RunsShellCommand:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Evals:
    def __reduce__(self):
        return (eval, ("__import__('os').getcwd()",))


class _Popens:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (subprocess.Popen, (["touch", str(self.marker)],))


def test_refuses_os_system_and_never_runs_it(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "gnd_evil.pkl"
    evil.write_bytes(pickle.dumps({"imlist": [], "gnd": [_RunsShellCommand(marker)]}, protocol=2))
    with pytest.raises(UnsafePickleError, match=r"'(posix|os|nt)\.system'"):
        safe_load_pickle(evil)
    assert not marker.exists()
    # the payload is live: the plain unpickler does run it (so the assertion above is meaningful)
    pickle.loads(evil.read_bytes())
    assert marker.exists()


@pytest.mark.parametrize("make, forbidden", [(lambda m: _Evals(), "builtins.eval"), (_Popens, "subprocess.Popen")])
def test_refuses_other_code_globals(tmp_path: Path, make, forbidden: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "gnd.pkl"
    path.write_bytes(pickle.dumps([make(marker)], protocol=2))
    with pytest.raises(UnsafePickleError, match=f"refusing to unpickle global '{forbidden}'"):
        safe_load_pickle(path)
    assert not marker.exists()


def test_loader_refuses_malicious_ground_truth_file(tmp_path: Path, revisited_kit: dict) -> None:
    kit = revisited_kit
    root = kit["write"](tmp_path / "datasets")
    marker = tmp_path / "pwned"
    cfg = {"imlist": kit["imlist"], "qimlist": kit["qimlist"], "gnd": [_RunsShellCommand(marker)]}
    (root / "roxford5k" / "gnd_roxford5k.pkl").write_bytes(pickle.dumps(cfg, protocol=2))
    with pytest.raises(UnsafePickleError, match="gnd_roxford5k.pkl"):
        load_revisited(root)
    assert not marker.exists()


def test_codecs_encode_only_for_latin1(tmp_path: Path) -> None:
    # protocol 2 writes bytes as _codecs.encode(text, 'latin1'); any other codec is refused
    path = tmp_path / "x.pkl"
    path.write_bytes(b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00aX\x05\x00\x00\x00rot13\x86R.")
    with pytest.raises(UnsafePickleError, match="rot13"):
        safe_load_pickle(path)
    path.write_bytes(pickle.dumps(b"\x00\xffraw", protocol=2))
    assert safe_load_pickle(path) == b"\x00\xffraw"


def test_loads_python2_pickle_with_numpy_arrays_and_scalars(tmp_path: Path, revisited_kit: dict) -> None:
    kit = revisited_kit
    path = tmp_path / "py2.pkl"
    data = np.array([3, 200, -7], dtype=np.int64)  # byte 200 (0xc8) is not ASCII: needs the latin-1 retry
    path.write_bytes(kit["python2_pickle"]({"name": "all_souls_000013", "idx": data, "bbx": np.array([1.5, 2.0])}))
    loaded = safe_load_pickle(path)
    assert loaded["name"] == "all_souls_000013"
    assert loaded["idx"].dtype == np.int64 and loaded["idx"].tolist() == [3, 200, -7]
    assert loaded["bbx"].tolist() == [1.5, 2.0]
    path.write_bytes(pickle.dumps({"s": np.float64(2.5), "i": np.int32(4), "set": {1, 2}}, protocol=2))
    assert safe_load_pickle(path) == {"s": 2.5, "i": 4, "set": {1, 2}}
