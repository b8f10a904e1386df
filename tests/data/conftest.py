"""Fixture writers: tiny datasets in exactly each benchmark's official on-disk layout."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image

CORRUPT_BYTES = b"this is not a jpeg \x00\x01\x02 garbage" * 4


def write_image(path: Path, seed: int, size: tuple[int, int] = (9, 7), corrupt: bool = False) -> None:
    """A tiny real image (format from the suffix), or garbage bytes under the same name if ``corrupt``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if corrupt:
        path.write_bytes(CORRUPT_BYTES)
        return
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


# ------------------------------------------------------------------------------------------ image folder
def write_image_folder(root: Path, classes: dict[str, int], corrupt: str | None = None) -> Path:
    """``root/<class>/img<k>.png|jpg`` with ``classes[name]`` images each; ``corrupt`` = relpath to spoil."""
    seed = 0
    for name, count in classes.items():
        for k in range(count):
            suffix = ".png" if k % 2 else ".jpg"
            rel = f"{name}/img{k}{suffix}"
            write_image(root / rel, seed, corrupt=(rel == corrupt))
            seed += 1
    return root


# ------------------------------------------------------------------------------------------ CUB-200-2011
CUB_CLASS_IDS = (1, 2, 101, 102)  # two train classes (1..100) and two test classes (101..200)


def cub_class_folder(class_id: int) -> str:
    return f"{class_id:03d}.Bird_{class_id}"


def write_cub(parent: Path, per_class: int = 2, corrupt_index: int | None = None) -> Path:
    """``parent/CUB_200_2011`` with the official text files (classes.txt lists all 200 classes)."""
    root = parent / "CUB_200_2011"
    root.mkdir(parents=True)
    (root / "classes.txt").write_text("".join(f"{c} {cub_class_folder(c)}\n" for c in range(1, 201)))
    images, labels, split = [], [], []
    image_id = 0
    for class_id in CUB_CLASS_IDS:
        for k in range(per_class):
            image_id += 1
            folder = cub_class_folder(class_id)
            rel = f"{folder}/Bird_{class_id}_{k:04d}_{image_id}.jpg"
            write_image(root / "images" / rel, image_id, corrupt=(image_id - 1 == corrupt_index))
            images.append(f"{image_id} {rel}\n")
            labels.append(f"{image_id} {class_id}\n")
            split.append(f"{image_id} {k % 2}\n")
    (root / "images.txt").write_text("".join(images))
    (root / "image_class_labels.txt").write_text("".join(labels))
    (root / "train_test_split.txt").write_text("".join(split))  # official file; unused by the protocol
    return root


# ------------------------------------------------------------------------------------------ Cars196
CARS_CLASS_IDS = (1, 98, 99, 196)


def write_cars(root: Path, per_class: int = 2, corrupt_index: int | None = None) -> Path:
    """``root/cars_annos.mat`` (1xN struct array ``annotations`` + 1x196 cell ``class_names``) and ``root/car_ims``."""
    from scipy.io import savemat

    rows = []
    index = 0
    for class_id in CARS_CLASS_IDS:
        for k in range(per_class):
            index += 1
            rel = f"car_ims/{index:06d}.jpg"
            write_image(root / rel, 1000 + index, corrupt=(index - 1 == corrupt_index))
            rows.append((rel, class_id, k % 2))
    fields = ["relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "test"]
    annotations = np.zeros((1, len(rows)), dtype=[(f, "O") for f in fields])
    for i, (rel, class_id, test) in enumerate(rows):
        annotations[0, i]["relative_im_path"] = rel
        annotations[0, i]["bbox_x1"] = np.array([[1]], dtype=np.uint8)
        annotations[0, i]["bbox_y1"] = np.array([[1]], dtype=np.uint8)
        annotations[0, i]["bbox_x2"] = np.array([[8]], dtype=np.uint16)
        annotations[0, i]["bbox_y2"] = np.array([[6]], dtype=np.uint16)
        annotations[0, i]["class"] = np.array([[class_id]], dtype=np.uint8)
        annotations[0, i]["test"] = np.array([[test]], dtype=np.uint8)
    class_names = np.empty((1, 196), dtype=object)
    for c in range(196):
        class_names[0, c] = f"Car Model {c + 1}"
    root.mkdir(parents=True, exist_ok=True)
    savemat(root / "cars_annos.mat", {"annotations": annotations, "class_names": class_names})
    return root


# ------------------------------------------------------------------------------------------ SOP
SOP_TRAIN = ((1, 1, "bicycle_final"), (2, 1, "bicycle_final"), (5, 2, "chair_final"))  # class, super, folder
SOP_TEST = ((11319, 1, "bicycle_final"), (11320, 3, "cabinet_final"))


def write_sop(parent: Path, per_class: int = 2, corrupt_index: int | None = None) -> Path:
    """``parent/Stanford_Online_Products`` with ``Ebay_train.txt``/``Ebay_test.txt`` and ``<super>_final/`` images."""
    root = parent / "Stanford_Online_Products"
    root.mkdir(parents=True)
    index = 0
    for filename, classes in (("Ebay_train.txt", SOP_TRAIN), ("Ebay_test.txt", SOP_TEST)):
        lines = ["image_id class_id super_class_id path\n"]
        image_id = 0
        for class_id, super_id, folder in classes:
            for k in range(per_class):
                image_id += 1
                rel = f"{folder}/{class_id}00{k}_{k}.JPG"
                write_image(root / rel, 2000 + index, corrupt=(index == corrupt_index))
                index += 1
                lines.append(f"{image_id} {class_id} {super_id} {rel}\n")
        (root / filename).write_text("".join(lines))
    (root / "Ebay_info.txt").write_text("image_id class_id super_class_id path\n")
    return root


# ------------------------------------------------------------------------------------------ In-Shop
# (item id, category folder, statuses of its images)
INSHOP_ITEMS = (
    ("id_00000002", "WOMEN/Dresses", ("train", "train")),
    ("id_00000007", "MEN/Denim", ("train", "train", "train")),
    ("id_00000001", "WOMEN/Blouses_Shirts", ("query", "gallery", "gallery")),
    ("id_00000008", "MEN/Tees_Tanks", ("gallery", "query")),
)
INSHOP_VIEWS = ("front", "side", "back", "full")


def write_inshop(root: Path, corrupt_index: int | None = None, eval_subfolder: bool = False) -> Path:
    """``list_eval_partition.txt`` (count line, header, padded rows) and ``img/<gender>/<cat>/<item>/*.jpg``.

    With ``eval_subfolder`` the layout is the benchmark's download tree: ``root/Eval/`` and ``root/Img/img/``.
    """
    image_base = root / "Img" if eval_subfolder else root
    eval_dir = root / "Eval" if eval_subfolder else root
    rows = []
    index = 0
    for item, category, statuses in INSHOP_ITEMS:
        for k, status in enumerate(statuses):
            rel = f"img/{category}/{item}/{k + 1:02d}_{k + 1}_{INSHOP_VIEWS[k]}.jpg"
            write_image(image_base / rel, 3000 + index, corrupt=(index == corrupt_index))
            index += 1
            rows.append(f"{rel:<60} {item}     {status}\n")
    eval_dir.mkdir(parents=True, exist_ok=True)
    text = f"{len(rows)}\nimage_name item_id evaluation_status\n" + "".join(rows)
    (eval_dir / "list_eval_partition.txt").write_text(text)
    return root


# ------------------------------------------------------------------------------------------ Fashion-MNIST
def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    """Big-endian IDX encoding: magic, one uint32 per dimension, then the raw uint8 payload."""
    return struct.pack(f">I{array.ndim}I", magic, *array.shape) + np.ascontiguousarray(array, np.uint8).tobytes()


def write_fashion_mnist(root: Path, n_train: int = 12, n_test: int = 5, size: int = 28) -> tuple[Path, dict]:
    """The four official gzip IDX files with random images/labels; returns (root, the arrays written)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    arrays = {}
    for prefix, count in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(count, size, size), dtype=np.uint8)
        labels = rng.integers(0, 10, size=count, dtype=np.uint8)
        with gzip.open(root / f"{prefix}-images-idx3-ubyte.gz", "wb") as handle:
            handle.write(idx_bytes(images, 2051))
        with gzip.open(root / f"{prefix}-labels-idx1-ubyte.gz", "wb") as handle:
            handle.write(idx_bytes(labels, 2049))
        arrays[prefix] = (images, labels)
    return root, arrays


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture
def image_folder_root(tmp_path: Path) -> Path:
    return write_image_folder(tmp_path / "folder", {"cat": 3, "dog": 2, "ant": 2})


@pytest.fixture
def cub_parent(tmp_path: Path) -> Path:
    write_cub(tmp_path / "cub")
    return tmp_path / "cub"


@pytest.fixture
def cars_root(tmp_path: Path) -> Path:
    return write_cars(tmp_path / "cars196")


@pytest.fixture
def sop_root(tmp_path: Path) -> Path:
    return write_sop(tmp_path / "sop")


@pytest.fixture
def inshop_root(tmp_path: Path) -> Path:
    return write_inshop(tmp_path / "inshop")


@pytest.fixture
def fmnist(tmp_path: Path) -> tuple[Path, dict]:
    return write_fashion_mnist(tmp_path / "fashion-mnist")


@pytest.fixture
def writers() -> dict[str, Callable]:
    """The writer functions, for tests that need a variant (corrupt image, other layout)."""
    return {
        "image": write_image,
        "folder": write_image_folder,
        "cub": write_cub,
        "cars": write_cars,
        "sop": write_sop,
        "inshop": write_inshop,
        "fashion_mnist": write_fashion_mnist,
        "idx_bytes": idx_bytes,
    }


# ------------------------------------------------------------------------------------------ Revisited Oxford/Paris
def python2_pickle(obj) -> bytes:
    """``obj`` pickled the way Python 2 + numpy write protocol 2 (revisitop's gnd files): ``str`` values are
    byte strings (SHORT_BINSTRING/BINSTRING) and arrays reduce through ``numpy.core.multiarray._reconstruct``
    with their raw data as a byte string.  Supports dict, list, tuple, str, bool, int, float, None, ndarray."""
    out = bytearray(b"\x80\x02")

    def string(text: str | bytes) -> None:
        raw = text.encode("latin1") if isinstance(text, str) else text
        out.extend(b"U" + bytes([len(raw)]) + raw if len(raw) < 256 else b"T" + struct.pack("<i", len(raw)) + raw)

    def tuple_of(items) -> None:
        out.extend(b"(")
        for item in items:
            write(item)
        out.extend(b"t")

    def write(value) -> None:
        if value is None:
            out.extend(b"N")
        elif isinstance(value, bool):
            out.extend(b"\x88" if value else b"\x89")
        elif isinstance(value, (int, np.integer)):
            out.extend(b"J" + struct.pack("<i", int(value)))
        elif isinstance(value, (float, np.floating)):
            out.extend(b"G" + struct.pack(">d", float(value)))
        elif isinstance(value, (str, bytes)):
            string(value)
        elif isinstance(value, tuple):
            tuple_of(value)
        elif isinstance(value, list):
            out.extend(b"](")
            for item in value:
                write(item)
            out.extend(b"e")
        elif isinstance(value, dict):
            out.extend(b"}(")
            for key, item in value.items():
                write(key)
                write(item)
            out.extend(b"u")
        elif isinstance(value, np.ndarray):
            array = np.ascontiguousarray(value)
            out.extend(b"cnumpy.core.multiarray\n_reconstruct\n")
            tuple_of([_Global("numpy", "ndarray"), (0,), b"b"])
            out.extend(b"R")
            out.extend(b"(K\x01")  # state: (version 1, shape, dtype, fortran, raw data)
            write(tuple(array.shape))
            out.extend(b"cnumpy\ndtype\n")
            tuple_of([array.dtype.str[1:], False, True])
            out.extend(b"R")
            tuple_of([3, array.dtype.str[0], None, None, None, -1, -1, 0])
            out.extend(b"b")
            write(False)
            string(array.tobytes())
            out.extend(b"tb")
        elif isinstance(value, _Global):
            out.extend(f"c{value.module}\n{value.name}\n".encode())
        else:  # pragma: no cover - fixture misuse
            raise TypeError(f"python2_pickle cannot write {type(value).__name__}")

    write(obj)
    out.extend(b".")
    return bytes(out)


class _Global:
    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name


REVISITED_IMAGE_SIZE = (12, 10)  # width, height of every fixture image
REVISITED_IMLIST = ["all_souls_000001", "all_souls_000002", "ashmolean_000003", "balliol_000004",
                    "bodleian_000005", "christ_church_000006"]
REVISITED_QIMLIST = ["all_souls_000013", "bodleian_000107"]


def revisited_gnd() -> list[dict]:
    """Two queries; bbx as a float64 array (with .5 coordinates: PIL rounds half to even) and as a list."""
    return [
        {"easy": [0, 2], "hard": [1], "junk": [3], "bbx": np.array([1.4, 2.5, 7.6, 6.5])},
        {"easy": np.array([], dtype=np.int64), "hard": np.array([4], dtype=np.int64), "junk": [], "bbx": [0, 0, 5, 5]},
    ]


def write_revisited(root: Path, name: str = "roxford5k", python2: bool = True, gnd: list | None = None) -> Path:
    """``root/<name>/gnd_<name>.pkl`` (protocol 2; Python-2 style by default) and ``root/<name>/jpg/*.jpg``."""
    folder = root / name
    for seed, image_name in enumerate(REVISITED_IMLIST + REVISITED_QIMLIST):
        write_image(folder / "jpg" / f"{image_name}.jpg", 4000 + seed, size=REVISITED_IMAGE_SIZE)
    cfg = {"imlist": REVISITED_IMLIST, "qimlist": REVISITED_QIMLIST, "gnd": revisited_gnd() if gnd is None else gnd}
    if python2:
        payload = python2_pickle(cfg)
    else:
        import pickle

        payload = pickle.dumps(cfg, protocol=2)
    (folder / f"gnd_{name}.pkl").write_bytes(payload)
    return root


@pytest.fixture
def revisited_kit() -> dict:
    """Revisited writers and constants (tests run with --import-mode=importlib, so they cannot import conftest)."""
    return {
        "write": write_revisited,
        "python2_pickle": python2_pickle,
        "gnd": revisited_gnd,
        "imlist": REVISITED_IMLIST,
        "qimlist": REVISITED_QIMLIST,
        "image_size": REVISITED_IMAGE_SIZE,
    }
