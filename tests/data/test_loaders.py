"""Dataset loaders on tiny fixtures written in each benchmark's official layout (see conftest.py)."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from asymret.data import (
    DATASET_LOADERS,
    DatasetFormatError,
    ImageDataset,
    ImageLoadError,
    load_cars196,
    load_csv_manifest,
    load_cub200,
    load_dataset,
    load_fashion_mnist,
    load_image_folder,
    load_inshop,
    load_sop,
    read_idx,
)

REAL_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def assert_loads(dataset: ImageDataset, index: int = 0, channels: int = 3) -> np.ndarray:
    pixels = dataset.load(index)
    assert pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] == channels
    return pixels


def assert_all_load(dataset: ImageDataset) -> None:
    for i in range(len(dataset)):
        assert_loads(dataset, i)


# ================================================================================================ folder
def test_image_folder_defaults(image_folder_root):
    ds = load_image_folder(image_folder_root)
    assert len(ds) == 7
    assert list(ds.class_names) == ["ant", "cat", "dog"]
    assert ds.ids.tolist()[:2] == ["ant/img0.jpg", "ant/img1.png"]
    assert np.array_equal(ds.ids, ds.keys)
    assert ds.labels.tolist() == [0, 0, 1, 1, 1, 2, 2]
    assert set(ds.splits.tolist()) == {"test"}
    assert ds.is_query.all() and ds.is_gallery.all()
    assert ds.name == "folder"
    assert_loads(ds).shape == (7, 9, 3)
    assert_all_load(ds)


def test_image_folder_split_name_and_class_half(image_folder_root):
    assert set(load_image_folder(image_folder_root, split="gallery").splits.tolist()) == {"gallery"}
    ds = load_image_folder(image_folder_root, split_by="class_half")  # 3 classes -> 1 train, 2 test
    assert ds.splits.tolist() == ["train"] * 2 + ["test"] * 5
    assert not ds.is_query[:2].any() and ds.is_query[2:].all() and ds.is_gallery[2:].all()
    with pytest.raises(ValueError, match="split_by"):
        load_image_folder(image_folder_root, split_by="random")


def test_image_folder_nested_ignored_and_empty(tmp_path, writers):
    root = writers["folder"](tmp_path / "f", {"b": 1, "a": 1})
    writers["image"](root / "b" / "sub" / "deep.png", 5)
    (root / "b" / "notes.txt").write_text("not an image")
    (root / "empty").mkdir()
    (root / ".hidden").mkdir()
    writers["image"](root / ".hidden" / "x.png", 6)
    ds = load_image_folder(root)
    assert ds.ids.tolist() == ["a/img0.jpg", "b/img0.jpg", "b/sub/deep.png"]
    assert list(ds.class_names) == ["a", "b"] and ds.labels.tolist() == [0, 1, 1]


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing folder .*nope"):
        load_image_folder(tmp_path / "nope")
    (tmp_path / "flat").mkdir()
    with pytest.raises(FileNotFoundError, match="no class sub-folders"):
        load_image_folder(tmp_path / "flat")
    (tmp_path / "flat" / "cls").mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        load_image_folder(tmp_path / "flat")


# ================================================================================================ CSV
def _write_csv(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_csv_string_labels_relative_to_csv(tmp_path, writers):
    for rel in ("imgs/a.jpg", "imgs/b.png", "imgs/c.jpg"):
        writers["image"](tmp_path / rel, 1)
    csv_path = _write_csv(
        tmp_path / "m.csv",
        "path,label,split,is_query,is_gallery\n"
        "imgs/a.jpg,zebra,train,0,0\n"
        "\n"
        "imgs/b.png, apple ,test,True,false\n"
        "imgs/c.jpg,zebra,test,1,YES\n",
    )
    ds = load_csv_manifest(csv_path)
    assert ds.name == "m" and len(ds) == 3
    assert list(ds.class_names) == ["apple", "zebra"]
    assert ds.labels.tolist() == [1, 0, 1]
    assert ds.ids.tolist() == ["imgs/a.jpg", "imgs/b.png", "imgs/c.jpg"]
    assert ds.splits.tolist() == ["train", "test", "test"]
    assert ds.is_query.tolist() == [False, True, True]
    assert ds.is_gallery.tolist() == [False, False, True]
    assert_all_load(ds)


def test_csv_int_labels_id_column_and_root(tmp_path, writers):
    writers["image"](tmp_path / "images" / "x.jpg", 2)
    csv_path = _write_csv(
        tmp_path / "meta" / "m.csv",
        "id,path,label,split,is_query,is_gallery,extra\n"
        "q1,x.jpg,7,test,1,0,foo\n"
        "g1,x.jpg,7,test,0,1,bar\n"
        "u1,x.jpg,,test,0,1,\n",
    )
    ds = load_csv_manifest(csv_path, root=tmp_path / "images", check_files=True)
    assert ds.ids.tolist() == ["q1", "g1", "u1"]
    assert ds.labels.tolist() == [7, 7, -1] and ds.class_names is None
    assert_loads(ds, 2)
    via_registry = load_dataset("csv", csv_path, image_root=tmp_path / "images")
    assert via_registry.fingerprint() == ds.fingerprint()


@pytest.mark.parametrize(
    "body, message",
    [
        ("path,label,split,is_query\na.jpg,1,test,1\n", r"m\.csv:1: header is missing column\(s\) is_gallery"),
        ("path,label,split,is_query,is_gallery\na.jpg,1,test,1,1\nb.jpg,1,test,maybe,1\n", r"m\.csv:3: is_query"),
        ("path,label,split,is_query,is_gallery\na.jpg,1,test,1,1\na.jpg,2,test,1,1\n", r"m\.csv:3: duplicate path.*line 2"),
        ("path,label,split,is_query,is_gallery\na.jpg,1,,1,1\n", r"m\.csv:2: empty split"),
        ("path,label,split,is_query,is_gallery\n,1,test,1,1\n", r"m\.csv:2: empty path"),
        ("path,label,split,is_query,is_gallery\na.jpg,1,test,1,1,9\n", r"m\.csv:2: more fields"),
        ("path,label,split,is_query,is_gallery\na.jpg,1,test\n", r"m\.csv:2: missing field 'is_query'"),
        ("path,label,split,is_query,is_gallery\na.jpg,-3,test,1,1\n", r"m\.csv:2: integer labels"),
        ("path,label,split,is_query,is_gallery\n", r"no rows"),
        ("", r"empty file"),
    ],
)
def test_csv_errors_name_the_line(tmp_path, body, message):
    with pytest.raises(DatasetFormatError, match=message):
        load_csv_manifest(_write_csv(tmp_path / "m.csv", body))


def test_csv_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing file .*absent.csv"):
        load_csv_manifest(tmp_path / "absent.csv")
    csv_path = _write_csv(tmp_path / "m.csv", "path,label,split,is_query,is_gallery\ngone.jpg,1,test,1,1\n")
    with pytest.raises(FileNotFoundError, match=r"m\.csv:2: missing image file .*gone\.jpg"):
        load_csv_manifest(csv_path, check_files=True)
    ds = load_csv_manifest(csv_path)  # without check_files the error comes at load time, per item
    with pytest.raises(ImageLoadError, match="gone.jpg"):
        ds.load(0)


# ================================================================================================ Fashion-MNIST
def test_read_idx_roundtrip(fmnist):
    root, arrays = fmnist
    images = read_idx(root / "train-images-idx3-ubyte.gz", 2051)
    labels = read_idx(root / "train-labels-idx1-ubyte.gz", 2049)
    assert images.shape == (12, 28, 28) and images.dtype == np.uint8
    assert np.array_equal(images, arrays["train"][0]) and np.array_equal(labels, arrays["train"][1])
    with pytest.raises(DatasetFormatError, match="magic number is 2049, expected 2051"):
        read_idx(root / "train-labels-idx1-ubyte.gz", 2051)


def test_fashion_mnist_tiny(fmnist):
    root, arrays = fmnist
    ds = load_fashion_mnist(root)
    assert len(ds) == 17 and ds.name == "fashion-mnist"
    assert ds.splits.tolist() == ["train"] * 12 + ["test"] * 5
    assert ds.ids[0] == "train/000000" and ds.ids[12] == "test/000000" and ds.ids[16] == "test/000004"
    assert ds.labels.tolist() == arrays["train"][1].tolist() + arrays["t10k"][1].tolist()
    assert ds.is_query.tolist() == ds.is_gallery.tolist() == [False] * 12 + [True] * 5
    assert ds.class_names[0] == "T-shirt/top" and ds.class_names[9] == "Ankle boot"
    pixels = assert_loads(ds, 13, channels=1)
    assert pixels.shape == (28, 28, 1) and np.array_equal(pixels[..., 0], arrays["t10k"][0][1])
    assert len(ds.select(split="test", role="query")) == 5
    assert load_dataset("fashion_mnist", root).fingerprint() == ds.fingerprint()


def test_fashion_mnist_format_errors(tmp_path, writers):
    root, arrays = writers["fashion_mnist"](tmp_path / "a")
    with gzip.open(root / "t10k-labels-idx1-ubyte.gz", "wb") as handle:  # 4 labels for 5 images
        handle.write(writers["idx_bytes"](arrays["t10k"][1][:4], 2049))
    with pytest.raises(DatasetFormatError, match="5 images but .* 4 labels"):
        load_fashion_mnist(root)
    with gzip.open(root / "t10k-labels-idx1-ubyte.gz", "wb") as handle:  # header says 5, payload has 4
        handle.write(writers["idx_bytes"](arrays["t10k"][1], 2049)[:-1])
    with pytest.raises(DatasetFormatError, match="payload has 4 bytes"):
        load_fashion_mnist(root)
    (root / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DatasetFormatError, match="t10k-labels-idx1-ubyte.gz"):
        load_fashion_mnist(root)


def test_fashion_mnist_missing_files(tmp_path, fmnist):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path / "nowhere")
    root, _ = fmnist
    (root / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"t10k-images-idx3-ubyte\.gz.*apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(root)


@pytest.mark.skipif(not REAL_FASHION_MNIST.is_dir(), reason="dataset-fashion-mnist is not installed")
def test_real_fashion_mnist():
    ds = load_dataset("fashion-mnist")
    assert int((ds.splits == "train").sum()) == 60000 and int((ds.splits == "test").sum()) == 10000
    assert ds.num_classes == 10 and ds.is_query.sum() == 10000
    assert np.bincount(ds.labels[ds.splits == "test"]).tolist() == [1000] * 10
    assert assert_loads(ds, 69999, channels=1).shape == (28, 28, 1)


# ================================================================================================ CUB-200-2011
@pytest.mark.parametrize("point_at", ["parent", "folder"])
def test_cub200(cub_parent, point_at):
    root = cub_parent if point_at == "parent" else cub_parent / "CUB_200_2011"
    ds = load_cub200(root)
    assert len(ds) == 8 and ds.name == "cub200"
    assert ds.labels.tolist() == [0, 0, 1, 1, 100, 100, 101, 101]
    assert ds.splits.tolist() == ["train"] * 4 + ["test"] * 4
    assert ds.is_query.tolist() == ds.is_gallery.tolist() == [False] * 4 + [True] * 4
    assert len(ds.class_names) == 200 and ds.class_names[100] == "101.Bird_101"
    assert ds.ids[0] == "001.Bird_1/Bird_1_0000_1.jpg"
    assert_all_load(ds)


def test_cub200_without_classes_txt(cub_parent):
    (cub_parent / "CUB_200_2011" / "classes.txt").unlink()
    ds = load_cub200(cub_parent)
    assert len(ds.class_names) == 102 and ds.class_names[101] == "102.Bird_102" and ds.class_names[50] == "51"


def test_cub200_errors(tmp_path, cub_parent):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_cub200(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="missing file images.txt"):
        load_cub200(tmp_path / "empty")
    root = cub_parent / "CUB_200_2011"
    labels = (root / "image_class_labels.txt").read_text().splitlines()
    (root / "image_class_labels.txt").write_text("\n".join(labels[:-1]) + "\n")
    with pytest.raises(DatasetFormatError, match=r"no class for image_id 8 .*images\.txt:8"):
        load_cub200(root)
    (root / "image_class_labels.txt").write_text("\n".join(labels[:2]) + "\n3 x\n")
    with pytest.raises(DatasetFormatError, match=r"image_class_labels\.txt:3: class_id must be an integer"):
        load_cub200(root)
    (root / "image_class_labels.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing file .*image_class_labels\.txt"):
        load_cub200(root)


# ================================================================================================ Cars196
def test_cars196(cars_root):
    ds = load_cars196(cars_root)
    assert len(ds) == 8 and ds.name == "cars196"
    assert ds.labels.tolist() == [0, 0, 97, 97, 98, 98, 195, 195]
    assert ds.splits.tolist() == ["train"] * 4 + ["test"] * 4
    assert ds.is_query.tolist() == ds.is_gallery.tolist() == [False] * 4 + [True] * 4
    assert ds.ids[0] == "car_ims/000001.jpg"
    assert len(ds.class_names) == 196 and ds.class_names[195] == "Car Model 196"
    assert_all_load(ds)
    assert load_dataset("cars", cars_root).fingerprint() == ds.fingerprint()


def test_cars196_errors(tmp_path, cars_root):
    with pytest.raises(FileNotFoundError, match="missing file cars_annos.mat"):
        load_cars196(cars_root / "car_ims")
    (cars_root / "cars_annos.mat").write_bytes(b"garbage, not MATLAB")
    with pytest.raises(DatasetFormatError, match="cannot read MATLAB file"):
        load_cars196(cars_root)
    from scipy.io import savemat

    savemat(cars_root / "cars_annos.mat", {"something": np.zeros(3)})
    with pytest.raises(DatasetFormatError, match="no 'annotations' variable"):
        load_cars196(cars_root)


# ================================================================================================ SOP
@pytest.mark.parametrize("point_at", ["parent", "folder"])
def test_sop(sop_root, point_at):
    ds = load_sop(sop_root.parent if point_at == "parent" else sop_root)
    assert len(ds) == 10 and ds.name == "sop"
    assert ds.splits.tolist() == ["train"] * 6 + ["test"] * 4
    assert ds.labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]  # class ids 1, 2, 5, 11319, 11320
    assert list(ds.class_names) == ["1", "2", "5", "11319", "11320"]
    assert ds.is_query.tolist() == ds.is_gallery.tolist() == [False] * 6 + [True] * 4
    assert ds.ids[0] == "bicycle_final/1000_0.JPG"
    assert_all_load(ds)


def test_sop_errors(sop_root):
    (sop_root / "Ebay_test.txt").write_text("id class super path\n1 2 3 x.jpg\n")
    with pytest.raises(DatasetFormatError, match=r"Ebay_test\.txt:1: expected header"):
        load_sop(sop_root)
    (sop_root / "Ebay_test.txt").write_text("image_id class_id super_class_id path\n1 2 3\n")
    with pytest.raises(DatasetFormatError, match=r"Ebay_test\.txt:2: expected 4 fields"):
        load_sop(sop_root)
    (sop_root / "Ebay_test.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing file .*Ebay_test\.txt"):
        load_sop(sop_root)


# ================================================================================================ In-Shop
def _check_inshop(ds: ImageDataset) -> None:
    assert len(ds) == 10 and ds.name == "inshop"
    assert ds.splits.tolist() == ["train"] * 5 + ["test"] * 5
    # items sorted: id_00000001 -> 0, id_00000002 -> 1, id_00000007 -> 2, id_00000008 -> 3
    assert ds.labels.tolist() == [1, 1, 2, 2, 2, 0, 0, 0, 3, 3]
    assert ds.class_names[0] == "id_00000001"
    assert ds.is_query.tolist() == [False] * 5 + [True, False, False, False, True]
    assert ds.is_gallery.tolist() == [False] * 5 + [False, True, True, True, False]
    assert ds.ids[0] == "img/WOMEN/Dresses/id_00000002/01_1_front.jpg"
    assert_all_load(ds)


def test_inshop(inshop_root):
    _check_inshop(load_inshop(inshop_root))


def test_inshop_download_tree(tmp_path, writers):
    root = writers["inshop"](tmp_path / "In-shop Clothes Retrieval Benchmark", eval_subfolder=True)
    _check_inshop(load_inshop(root))
    _check_inshop(load_dataset("in-shop", root / "Eval"))


def test_inshop_errors(tmp_path, inshop_root):
    partition = inshop_root / "list_eval_partition.txt"
    lines = partition.read_text().splitlines(keepends=True)
    partition.write_text("11\n" + "".join(lines[1:]))
    with pytest.raises(DatasetFormatError, match="announces 11 images but 10"):
        load_inshop(inshop_root)
    partition.write_text("".join(lines[:4]) + lines[4].replace("train", "val"))
    with pytest.raises(DatasetFormatError, match=r"list_eval_partition\.txt:5: evaluation_status .*'val'"):
        load_inshop(inshop_root)
    partition.write_text("10\nimage item status\n")
    with pytest.raises(DatasetFormatError, match=r":2: expected header"):
        load_inshop(inshop_root)
    partition.write_text("".join(lines))
    import shutil

    shutil.rmtree(inshop_root / "img")
    with pytest.raises(FileNotFoundError, match="missing image folder 'img'"):
        load_inshop(inshop_root)
    with pytest.raises(FileNotFoundError, match="list_eval_partition.txt"):
        load_inshop(tmp_path)


# ================================================================================================ corrupt images
@pytest.mark.parametrize("kind", ["folder", "cub", "cars", "sop", "inshop"])
def test_corrupt_image_raises_only_for_that_item(tmp_path, writers, kind):
    if kind == "folder":
        ds = load_image_folder(writers["folder"](tmp_path / "f", {"a": 2, "b": 2}, corrupt="b/img0.jpg"))
        bad = 2
    else:
        bad = 3
        root = writers[kind](tmp_path / kind, corrupt_index=bad)
        ds = {"cub": load_cub200, "cars": load_cars196, "sop": load_sop, "inshop": load_inshop}[kind](root)
    assert ds.ids[bad].endswith(".jpg") or ds.ids[bad].endswith(".JPG")
    with pytest.raises(ImageLoadError, match="cannot read image"):
        ds.load(bad)
    for i in range(len(ds)):
        if i != bad:
            assert_loads(ds, i)


def test_truncated_jpeg_raises_image_load_error(tmp_path, writers):
    root = writers["folder"](tmp_path / "f", {"a": 1})
    path = root / "a" / "img0.jpg"
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ImageLoadError):
        load_image_folder(root).load(0)


# ================================================================================================ registry
def test_registry(image_folder_root):
    assert set(DATASET_LOADERS) == {"folder", "csv", "fashion-mnist", "cub200", "cars196", "sop", "inshop", "glyphs", "icons"}
    ds = load_dataset("FOLDER", image_folder_root, split_by="class_half")
    assert ds.fingerprint() == load_image_folder(image_folder_root, split_by="class_half").fingerprint()
    with pytest.raises(ValueError, match="unknown dataset kind 'imagenet'.*Known: cars196, csv, cub200, fashion-mnist, folder"):
        load_dataset("imagenet", image_folder_root)
    with pytest.raises(ValueError, match="'sop' needs root="):
        load_dataset("sop")


# ======================================================================================= folder splits
def _write_split_tree(root, layout):
    """layout: {split: {class: n_images}} written as root/<split>/<class>/img<i>.png."""
    from PIL import Image

    for split, classes in layout.items():
        for class_name, count in classes.items():
            folder = root / split / class_name
            folder.mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (8, 8), (i * 40 % 255, 0, 0)).save(folder / f"img{i}.png")
    return root


def test_image_folder_with_train_and_test_folders_open_set(tmp_path):
    root = _write_split_tree(tmp_path / "ds", {"train": {"cat": 2, "dog": 1}, "test": {"eel": 3, "fox": 1}})
    ds = load_image_folder(root)  # auto-detects the split folders
    assert set(ds.select(split="train").ids.tolist()) == {"train/cat/img0.png", "train/cat/img1.png", "train/dog/img0.png"}
    test = ds.select(split="test")
    assert len(test) == 4 and set(test.class_names[label] for label in test.labels) == {"eel", "fox"}
    # train and test classes are disjoint here, so their labels are too; only test images are searched
    assert not set(ds.select(split="train").labels) & set(test.labels)
    assert ds.select(role="query").ids.tolist() == test.ids.tolist()
    assert ds.load(0).shape == (8, 8, 3)


def test_image_folder_split_folders_share_labels_by_class_name(tmp_path):
    root = _write_split_tree(tmp_path / "ds", {"train": {"cat": 1, "dog": 1}, "test": {"dog": 2}})
    ds = load_image_folder(root, split_by="folders")
    train_dog = ds.labels[ds.ids.tolist().index("train/dog/img0.png")]
    assert set(ds.select(split="test").labels.tolist()) == {train_dog}


def test_image_folder_class_named_train_is_not_a_split(tmp_path):
    root = _write_split_tree(tmp_path / "ds", {"train": {"x": 1}})  # root/train/x/...: one class "train"
    ds = load_image_folder(root)
    assert ds.class_names == ["train"] and set(ds.splits.tolist()) == {"test"}
    with pytest.raises(FileNotFoundError, match="no split sub-folders"):
        load_image_folder(root, split_by="folders")
