"""Datasets: split sizes, value ranges, seeding, loaders; the file loaders on tiny fake files."""

import pickle
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from pruneplug import data

# --------------------------------------------------------------------------- digits


def rows(images: torch.Tensor, labels: torch.Tensor) -> Counter:
    """Each (image, label) pair as a hashable row, counted."""
    return Counter(zip(map(bytes, images.flatten(1).numpy()), labels.tolist(), strict=True))


def test_digits_split_sizes_types_and_range():
    digits = data.load_digits()
    assert (len(digits.train), len(digits.val), len(digits.test)) == (1200, 200, 397)
    for ds in (digits.train, digits.val, digits.test):
        images, labels = ds.tensors
        assert images.shape[1:] == (1, 8, 8) and images.dtype == torch.float32
        assert labels.dtype == torch.int64
    images = torch.cat([ds.tensors[0] for ds in (digits.train, digits.val, digits.test)])
    assert images.min() == 0.0 and images.max() == 1.0  # sklearn's pixels run 0..16
    assert digits.classes == [str(d) for d in range(10)] and digits.name == "digits"


def test_digits_splits_partition_the_whole_set():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    everything = rows(
        torch.tensor(bunch.images / 16.0, dtype=torch.float32), torch.tensor(bunch.target)
    )
    digits = data.load_digits()
    parts = [rows(*ds.tensors) for ds in (digits.train, digits.val, digits.test)]
    assert parts[0] + parts[1] + parts[2] == everything  # every image exactly once


def test_digits_splits_are_stratified():
    from sklearn.datasets import load_digits

    share = np.bincount(load_digits().target) / 1797
    digits = data.load_digits(seed=3)
    for ds in (digits.train, digits.val, digits.test):
        counts = np.bincount(ds.tensors[1].numpy(), minlength=10)
        assert np.abs(counts - share * len(ds)).max() < 1  # a random split strays by ~4


def test_digits_seed_fixes_the_split_and_each_call_returns_fresh_tensors():
    a, b, c = data.load_digits(0), data.load_digits(0), data.load_digits(1)
    assert torch.equal(a.test.tensors[0], b.test.tensors[0])
    assert not torch.equal(a.test.tensors[0], c.test.tensors[0])
    a.train.tensors[0].zero_()
    assert data.load_digits(0).train.tensors[0].max() == 1.0


def test_loader_shuffles_train_by_seed_and_keeps_eval_order():
    digits = data.load_digits()
    first = [next(iter(digits.loader(seed=s, batch_size=8)))[1] for s in (0, 0, 1)]
    assert torch.equal(first[0], first[1]) and not torch.equal(first[0], first[2])
    images, labels = next(iter(digits.loader("val", batch_size=16)))
    assert torch.equal(labels, digits.val.tensors[1][:16])
    assert images.shape == (16, 1, 8, 8)
    assert sum(len(y) for _, y in digits.loader("test", batch_size=100)) == 397


def test_loader_errors_name_the_split():
    digits = data.load_digits()
    with pytest.raises(ValueError, match=r"unknown split 'validation'.*'train', 'val', 'test'"):
        digits.loader("validation")
    empty = data.Splits(
        digits.train,
        torch.utils.data.TensorDataset(torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.int64)),
        digits.test,
        digits.classes,
        "digits",
    )
    with pytest.raises(ValueError, match="'val' split of digits is empty"):
        empty.loader("val")


# --------------------------------------------------------------------------- photos


def test_photos_are_colour_squares_in_unit_range():
    photos, names = data.load_photos(size=32)
    assert names == ["astronaut", "chelsea", "coffee", "rocket", "motorcycle"]
    assert photos.shape == (5, 3, 32, 32) and photos.dtype == torch.float32
    assert photos.min() >= 0.0 and photos.max() <= 1.0
    assert ((photos[:, 0] - photos[:, 2]).abs().amax(dim=(1, 2)) > 0.2).all()  # all in colour
    assert len({tuple(p.mean(dim=(1, 2)).tolist()) for p in photos}) == 5  # five different photos


def test_photos_are_copies_and_size_is_checked():
    photos, _ = data.load_photos(size=16)
    photos.zero_()
    assert data.load_photos(size=16)[0].max() > 0.5
    with pytest.raises(ValueError, match="positive int"):
        data.load_photos(size=0)


# --------------------------------------------------------------------------- MNIST


def write_idx(path: Path, array: np.ndarray) -> None:
    """The MNIST idx format: magic (0, 0, uint8 = 0x08, ndim), big-endian int32 dims, bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def fake_mnist(root: Path, n_train: int = 20, n_test: int = 5) -> None:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = np.zeros((n, 28, 28), np.uint8)
        images[:, 0, 0] = np.arange(n) * 10  # image i has pixel (0, 0) = 10 i
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)


def test_mnist_from_local_idx_files(tmp_path):
    fake_mnist(tmp_path)
    mnist = data.load_mnist(tmp_path, val_size=10)
    assert (len(mnist.train), len(mnist.val), len(mnist.test)) == (10, 10, 5)
    assert mnist.train.tensors[0].shape == (10, 1, 28, 28)
    for ds in (mnist.train, mnist.val):  # stratified: one image of each class per split
        assert sorted(ds.tensors[1].tolist()) == list(range(10))
    images, labels = mnist.test.tensors
    assert images[:, 0, 0, 0].tolist() == pytest.approx([10 * i / 255 for i in range(5)])
    assert labels.tolist() == [0, 1, 2, 3, 4] and labels.dtype == torch.int64
    assert images[:, 0, 1:].max() == 0.0


def test_mnist_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"MNIST/raw lacks train-images-idx3-ubyte"):
        data.load_mnist(tmp_path)
    fake_mnist(tmp_path)
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(
        FileNotFoundError, match=r"lacks t10k-labels-idx1-ubyte\. .*never downloads"
    ):
        data.load_mnist(tmp_path)


def test_mnist_val_size_is_checked(tmp_path):
    fake_mnist(tmp_path)
    with pytest.raises(ValueError, match=r"load_mnist: val_size=20 .* give 1\.\.19"):
        data.load_mnist(tmp_path, val_size=20)
    with pytest.raises(TypeError, match=r"val_size is a number of images .* round\(f \* 20\)"):
        data.load_mnist(tmp_path, val_size=0.1)  # not a fraction


def test_mnist_images_and_labels_must_agree(tmp_path):
    fake_mnist(tmp_path)
    raw = tmp_path / "MNIST" / "raw"
    write_idx(raw / "train-labels-idx1-ubyte", np.arange(19) % 10)  # one label short
    with pytest.raises(ValueError, match=r"holds 20 images but .*train-labels.* 19 labels"):
        data.load_mnist(tmp_path, val_size=10)
    write_idx(raw / "train-labels-idx1-ubyte", np.arange(20) + 200)
    with pytest.raises(ValueError, match=r"labels outside 0\.\.9 \(200\.\.219\)"):
        data.load_mnist(tmp_path, val_size=10)


# --------------------------------------------------------------------------- CIFAR-10


def fake_cifar(root: Path, per_batch: int = 4) -> None:
    """Five train batches and a test batch in CIFAR-10's pickle format; image i has R = i."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir()

    def batch(n: int, first: int) -> dict:
        pixels = np.zeros((n, 3, 1024), np.uint8)
        pixels[:, 0] = np.arange(first, first + n)[:, None]  # red plane
        pixels[:, 1], pixels[:, 2] = 100, 200  # green and blue planes
        return {
            "data": pixels.reshape(n, 3072),
            "labels": [i % 10 for i in range(first, first + n)],
        }

    for k in range(5):
        (folder / f"data_batch_{k + 1}").write_bytes(pickle.dumps(batch(per_batch, k * per_batch)))
    (folder / "test_batch").write_bytes(pickle.dumps(batch(3, 0)))
    names = ["plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": names}))


def test_cifar10_from_local_pickle_batches(tmp_path):
    fake_cifar(tmp_path)
    cifar = data.load_cifar10(tmp_path, val_size=10)
    assert (len(cifar.train), len(cifar.val), len(cifar.test)) == (10, 10, 3)
    assert cifar.classes[:2] == ["plane", "car"] and cifar.name == "cifar10"
    meta = tmp_path / "cifar-10-batches-py" / "batches.meta"  # Python 3 bytes, as re-pickled
    meta.write_bytes(pickle.dumps({"label_names": [c.encode() for c in cifar.classes]}))
    assert data.load_cifar10(tmp_path, val_size=10).classes == cifar.classes
    images, labels = cifar.test.tensors
    assert images.shape == (3, 3, 32, 32) and images.dtype == torch.float32
    assert images[:, 0, 5, 7].tolist() == pytest.approx([0, 1 / 255, 2 / 255])  # channel order
    assert images[:, 1].unique().tolist() == pytest.approx([100 / 255])
    assert images[:, 2].unique().tolist() == pytest.approx([200 / 255])
    assert labels.tolist() == [0, 1, 2]
    for ds in (cifar.train, cifar.val):
        assert sorted(ds.tensors[1].tolist()) == list(range(10))


def test_cifar10_missing_unofficial_and_damaged_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"cifar-10-batches-py lacks data_batch_1"):
        data.load_cifar10(tmp_path)
    fake_cifar(tmp_path)  # the official format, but not the official release
    with pytest.raises(
        ValueError,
        match=r"data_batch_1 differs from the official CIFAR-10 .*"
        r"official c99cafc152244af753f735de768cd75f.*checksum=False",
    ):
        data.load_cifar10(tmp_path, checksum=True)
    folder = tmp_path / "cifar-10-batches-py"
    (folder / "test_batch").write_text("not a pickle")
    with pytest.raises(ValueError, match=r"test_batch is not a CIFAR-10 python batch"):
        data.load_cifar10(tmp_path)
    short = {"data": np.zeros((2, 100), np.uint8), "labels": [0]}
    (folder / "test_batch").write_bytes(pickle.dumps(short))
    with pytest.raises(ValueError, match=r"N x 3072 .* got data of shape \(2, 100\) and 1 labels"):
        data.load_cifar10(tmp_path)
    floats = {"data": np.full((2, 3072), 0.5), "labels": [0, 1]}  # would truncate to 0
    (folder / "test_batch").write_bytes(pickle.dumps(floats))
    with pytest.raises(ValueError, match=r"'data' as uint8 .* got float64 and int64"):
        data.load_cifar10(tmp_path)
    (folder / "test_batch").write_bytes(pickle.dumps({"data": np.zeros((2, 3072), np.uint8)}))
    with pytest.raises(ValueError, match=r"test_batch has no 'labels': not a CIFAR-10 batch"):
        data.load_cifar10(tmp_path)


def test_mnist_damaged_or_gzipped_idx_files_are_named(tmp_path):
    fake_mnist(tmp_path)
    raw = tmp_path / "MNIST" / "raw"
    images = raw / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-5])  # truncated
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte is damaged: .*20 x 28 x 28"):
        data.load_mnist(tmp_path)
    images.write_bytes(b"\x1f\x8b\x08\x00" + bytes(20))
    with pytest.raises(ValueError, match=r"not an MNIST images idx file \(it looks gzipped"):
        data.load_mnist(tmp_path)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: data.load_digits(seed=-1), ValueError, r"load_digits: seed must be an int"),
        (lambda: data.load_digits(seed=1.5), ValueError, r"got 1.5"),
        (lambda: data.load_mnist(None), TypeError, r"load_mnist: root must be a folder path"),
        (lambda: data.load_cifar10(3), TypeError, r"load_cifar10: root must be a folder path"),
        (lambda: data.load_text_folder(None), TypeError, r"load_text_folder: root must be"),
        (lambda: data.load_photos(size=20000), ValueError, r"above 1024.*size <= 1024"),
    ],
)
def test_bad_loader_arguments_are_named_with_the_fix(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_a_file_given_as_root_is_refused(tmp_path):
    file = tmp_path / "mnist.npz"
    file.write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file; give the folder"):
        data.load_mnist(file)


# --------------------------------------------------------------------------- text


def write_texts(folder: Path, texts: dict[str, str]) -> None:
    folder.mkdir(parents=True)
    for name, text in texts.items():
        (folder / name).write_text(text, encoding="utf-8")


def test_text_folder_flat_layout(tmp_path):
    write_texts(tmp_path / "pos", {"b.txt": "great film ", "a.txt": "loved it"})
    write_texts(tmp_path / "neg", {"1.txt": "\ufeffdull", "notes.md": "not a review"})  # a BOM
    texts = data.load_text_folder(tmp_path)
    assert list(texts) == ["all"]
    assert texts["all"].texts == ["dull", "loved it", "great film"]  # neg first, sorted names
    assert texts["all"].labels.tolist() == [0, 1, 1] and texts["all"].labels.dtype == torch.int64
    assert len(texts["all"]) == 3 and data.TextSet.classes == ("neg", "pos")


def test_text_folder_imdb_layout(tmp_path):
    for split in ("train", "test"):
        write_texts(tmp_path / split / "pos", {"0_9.txt": f"{split} good"})
        write_texts(tmp_path / split / "neg", {"0_2.txt": f"{split} bad ünïcode"})
    write_texts(tmp_path / "train" / "unsup", {"0_0.txt": "no label"})
    texts = data.load_text_folder(tmp_path)
    assert list(texts) == ["train", "test"]
    assert texts["test"].texts == ["test bad ünïcode", "test good"]
    assert texts["train"].labels.tolist() == [0, 1]


def test_text_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist: expected ROOT/pos"):
        data.load_text_folder(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="no pos/, neg/, train/ or test/ folder"):
        data.load_text_folder(tmp_path)
    write_texts(tmp_path / "pos", {"a.txt": "fine"})
    with pytest.raises(FileNotFoundError, match=r"neg is missing: a text folder needs neg/"):
        data.load_text_folder(tmp_path)
    (tmp_path / "neg").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no \.txt files in .*neg"):
        data.load_text_folder(tmp_path)
    (tmp_path / "neg" / "latin1.txt").write_bytes("très mauvais".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1\.txt is not UTF-8 text .*save it as UTF-8"):
        data.load_text_folder(tmp_path)
