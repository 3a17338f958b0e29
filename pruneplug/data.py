"""Offline datasets with fixed, seeded train / validation / test splits.

The labelled image sets come as a :class:`Splits`: three ``TensorDataset`` objects of float images
``N x C x H x W`` in [0, 1] with ``int64`` labels, so a split is a plain pair of tensors that a
notebook can index, plot or augment without transforms. Nothing is ever downloaded:

* :func:`load_digits` - scikit-learn's 8x8 handwritten digits (1,797 images, shipped with
  scikit-learn), the default everywhere: small enough to train a model in seconds on a CPU;
* :func:`load_photos` - the colour photographs bundled with scikit-image, for augmentation
  galleries;
* :func:`load_mnist`, :func:`load_cifar10` - read from files the user already has (MNIST
  through torchvision with ``download=False``, after checking each idx header against its
  file size; CIFAR-10's python batches directly, so any files in the official format load,
  with the official checksums as an option); a missing or damaged file raises an error naming
  the folder, the file and the fix;
* :func:`load_text_folder` - an IMDB-style folder of ``pos/`` and ``neg/`` text files.

Splits depend only on ``seed`` (and scikit-learn's ``train_test_split``): the same seed gives
the same split on every machine.
Validation sets are stratified (each class keeps its share), carved from the training data.
"""

from __future__ import annotations

import functools
import hashlib
import numbers
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

SPLIT_NAMES = ("train", "val", "test")

#: Sizes of the digits split (1,797 images in all).
DIGITS_SIZES = {"train": 1200, "val": 200, "test": 397}

#: Largest photo side: the bundled photos are 300-512 pixels on their shorter side, so anything
#: larger only upsamples (and 5 x 3 x 20,000^2 floats would need 24 GB).
MAX_PHOTO_SIZE = 1024

#: scikit-image photos that are bundled with the package (no download) and in colour, by name.
PHOTO_NAMES = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle")


@dataclass
class Splits:
    """A dataset's fixed train / validation / test splits.

    Attributes:
        train, val, test: ``TensorDataset(images, labels)``: float images ``N x C x H x W`` in
            [0, 1] and ``int64`` class indices.
        classes: class names; label ``i`` is ``classes[i]``.
        name: the dataset's name ("digits", "mnist", "cifar10").
    """

    train: TensorDataset
    val: TensorDataset
    test: TensorDataset
    classes: list[str]
    name: str

    def loader(
        self, split: str = "train", batch_size: int = 64, shuffle: bool | None = None, seed: int = 0
    ) -> DataLoader:
        """A ``DataLoader`` over one split; the shuffle order depends only on ``seed``.

        ``shuffle`` defaults to True for "train" and False for "val" and "test".
        """
        if split not in SPLIT_NAMES:
            raise ValueError(f"unknown split {split!r} of {self.name}: use one of {SPLIT_NAMES}")
        dataset = getattr(self, split)
        if len(dataset) == 0:
            raise ValueError(
                f"the {split!r} split of {self.name} is empty: load the data with a non-empty "
                f"{split} split, or use another split"
            )
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=split == "train" if shuffle is None else shuffle,
            generator=torch.Generator().manual_seed(seed),
        )


def _check_seed(loader: str, seed: object) -> None:
    """Refuse a seed scikit-learn would refuse later, with the loader's name and the fix."""
    if (
        isinstance(seed, bool)
        or not isinstance(seed, numbers.Integral)
        or not 0 <= int(seed) < 2**32
    ):
        raise ValueError(f"{loader}: seed must be an int in [0, 2**32), got {seed!r}")


def _folder(loader: str, root: object) -> Path:
    """``root`` as a ``Path``, refusing what is not a path or is a file."""
    if not isinstance(root, str | os.PathLike):
        raise TypeError(f"{loader}: root must be a folder path (str or pathlib.Path), got {root!r}")
    path = Path(root)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{loader}: {path} is a file; give the folder that holds the data")
    return path


def _stratified_split(labels: np.ndarray, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(rest, part)`` with ``len(part) == size``, each class keeping its share.

    Both index arrays are sorted, so the data keep their original order within a split.
    """
    from sklearn.model_selection import train_test_split

    if not 0 < size < len(labels):
        raise ValueError(f"split size must be between 1 and {len(labels) - 1}, got {size}")
    rest, part = train_test_split(
        np.arange(len(labels)), test_size=size, stratify=labels, random_state=seed
    )
    return np.sort(rest), np.sort(part)


def _dataset(images: np.ndarray | Tensor, labels: np.ndarray | Tensor) -> TensorDataset:
    """A ``TensorDataset`` holding its own float32 / int64 copies of the arrays."""
    return TensorDataset(
        torch.tensor(images, dtype=torch.float32), torch.tensor(labels, dtype=torch.int64)
    )


def _carve(
    loader: str, images: Tensor, labels: Tensor, test: TensorDataset, val_size: int, seed: int
) -> tuple[TensorDataset, TensorDataset, TensorDataset]:
    """Train / val / test with a stratified ``val_size`` carved from the given training data."""
    if isinstance(val_size, bool) or not isinstance(val_size, numbers.Integral):
        raise TypeError(
            f"{loader}: val_size is a number of images (an int), got {val_size!r}; for a "
            f"fraction f of the {len(labels)} training images pass round(f * {len(labels)})"
        )
    if not 0 < val_size < len(labels):
        raise ValueError(
            f"{loader}: val_size={val_size} must leave images for both splits: give 1.."
            f"{len(labels) - 1} ({len(labels)} training images)"
        )
    train_idx, val_idx = _stratified_split(labels.numpy(), int(val_size), seed)
    return (
        TensorDataset(images[train_idx], labels[train_idx]),
        TensorDataset(images[val_idx], labels[val_idx]),
        test,
    )


# --------------------------------------------------------------------------- digits


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as (images ``N x 1 x 8 x 8`` in [0, 1], labels), loaded once."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = (bunch.images / 16.0).astype(np.float32)[:, None]  # pixel values are 0..16
    return images, bunch.target.astype(np.int64)


def load_digits(seed: int = 0) -> Splits:
    """scikit-learn's 8x8 digits: train 1,200 / val 200 / test 397, stratified, 1 x 8 x 8.

    The images are scaled from 0..16 to [0, 1]. ``seed`` fixes the split; every call returns
    fresh tensors, so changing one never changes what the next call returns.
    """
    _check_seed("load_digits", seed)
    images, labels = _digits_arrays()
    rest, test = _stratified_split(labels, DIGITS_SIZES["test"], seed)
    train, val = _stratified_split(labels[rest], DIGITS_SIZES["val"], seed)
    train, val = rest[train], rest[val]
    return Splits(
        train=_dataset(images[train], labels[train]),
        val=_dataset(images[val], labels[val]),
        test=_dataset(images[test], labels[test]),
        classes=[str(d) for d in range(10)],
        name="digits",
    )


# --------------------------------------------------------------------------- photos


@functools.lru_cache(maxsize=4)
def _photos(size: int) -> Tensor:
    import skimage.data
    from torchvision.transforms.v2 import functional as F

    arrays = {
        "astronaut": skimage.data.astronaut(),
        "chelsea": skimage.data.chelsea(),
        "coffee": skimage.data.coffee(),
        "rocket": skimage.data.rocket(),
        "motorcycle": skimage.data.stereo_motorcycle()[0],
    }
    photos = []
    for name in PHOTO_NAMES:
        image = torch.from_numpy(arrays[name]).permute(2, 0, 1)  # H x W x 3 uint8 -> 3 x H x W
        image = F.center_crop(F.resize(image, [size], antialias=True), [size, size])
        photos.append(F.to_dtype(image, torch.float32, scale=True))
    return torch.stack(photos)


def load_photos(size: int = 64) -> tuple[Tensor, list[str]]:
    """The colour photographs bundled with scikit-image, as ``N x 3 x size x size`` in [0, 1].

    Each photo's shorter side is resized to ``size`` (antialiased), then the centre square is
    cropped. Only photos that ship inside scikit-image are used (nothing is downloaded), and
    only colour ones - the greyscale ones (camera, moon, ...) would show nothing of a colour
    augmenter. Returns the images and their names (:data:`PHOTO_NAMES`).
    """
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
        raise ValueError(f"photo size must be a positive int (pixels per side), got {size!r}")
    if size > MAX_PHOTO_SIZE:
        raise ValueError(
            f"photo size {size} is above {MAX_PHOTO_SIZE}: the bundled photos are 300-512 pixels "
            f"on their shorter side, so larger sizes only upsample; use size <= {MAX_PHOTO_SIZE}"
        )
    size = int(size)
    return _photos(size).clone(), list(PHOTO_NAMES)


# --------------------------------------------------------------------------- MNIST, CIFAR-10


def _require_files(dataset: str, folder: Path, names: list[str], how: str) -> None:
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{dataset} files not found: {folder} lacks {', '.join(missing)}. pruneplug never "
            f"downloads data; {how}"
        )


#: idx magic numbers: unsigned bytes, 1 dimension (labels) or 3 (images)
IDX_MAGIC = {"labels": 0x801, "images": 0x803}


def _check_idx(path: Path) -> None:
    """Refuse an MNIST idx file whose header does not describe its contents (a gzipped,
    truncated or foreign file), naming the file and what differs."""
    kind = "images" if "images" in path.name else "labels"
    ndim = 3 if kind == "images" else 1
    with path.open("rb") as file:
        header = file.read(4 + 4 * ndim)
    size = path.stat().st_size
    magic = int.from_bytes(header[:4], "big") if len(header) >= 4 else None
    if magic != IDX_MAGIC[kind] or len(header) < 4 + 4 * ndim:
        gz = " (it looks gzipped: gunzip it)" if header[:2] == b"\x1f\x8b" else ""
        raise ValueError(
            f"{path} is not an MNIST {kind} idx file{gz}: its first bytes are {header[:4].hex()}, "
            f"expected {IDX_MAGIC[kind]:08x}; replace it with the uncompressed file from MNIST"
        )
    dims = [int.from_bytes(header[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = 4 + 4 * ndim + int(np.prod(dims))
    if size != expected:
        raise ValueError(
            f"{path} is damaged: its header promises {' x '.join(map(str, dims))} bytes of "
            f"{kind} ({expected:,} bytes in all) but the file has {size:,} bytes; replace it "
            "with the uncompressed file from MNIST"
        )


def load_mnist(root: str | Path, seed: int = 0, val_size: int = 5000) -> Splits:
    """MNIST from local files: train 60,000 - ``val_size`` / val ``val_size`` / test 10,000.

    Reads ``ROOT/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`` (the uncompressed
    files) through ``torchvision.datasets.MNIST(download=False)``. Images are 1 x 28 x 28.
    """
    from torchvision.datasets import MNIST

    _check_seed("load_mnist", seed)
    root = _folder("load_mnist", root)
    raw = root / "MNIST" / "raw"
    names = [Path(url).stem for url, _ in MNIST.resources]  # the .gz names without .gz
    _require_files(
        "MNIST",
        raw,
        names,
        f"get them on a machine with internet (torchvision.datasets.MNIST(ROOT, download=True), "
        f"or the .gz files from the MNIST site, gunzipped) and put them in {raw}",
    )
    for name in names:
        _check_idx(raw / name)
    sets = {}
    for train, (images, labels) in zip((True, False), (names[:2], names[2:]), strict=True):
        ds = MNIST(root, train=train, download=False)
        if len(ds.data) != len(ds.targets):
            raise ValueError(
                f"{raw / images} holds {len(ds.data)} images but {raw / labels} "
                f"{len(ds.targets)} labels: the two files must come from the same release"
            )
        if len(ds.targets) and not 0 <= int(ds.targets.min()) <= int(ds.targets.max()) <= 9:
            raise ValueError(
                f"{raw / labels} has labels outside 0..9 ({int(ds.targets.min())}.."
                f"{int(ds.targets.max())}): it is not an MNIST label file"
            )
        sets[train] = (ds.data.unsqueeze(1).float() / 255, ds.targets.to(torch.int64))
    test_set = TensorDataset(*sets[False])
    train_set, val_set, test_set = _carve("load_mnist", *sets[True], test_set, val_size, seed)
    return Splits(train_set, val_set, test_set, classes=[str(d) for d in range(10)], name="mnist")


def _read_cifar_batch(path: Path, checksum: str | None) -> dict:
    """One CIFAR-10 python batch (a pickled dict), checked for the fields the loader uses."""
    raw = path.read_bytes()
    if checksum is not None and hashlib.md5(raw).hexdigest() != checksum:
        raise ValueError(
            f"{path.name} differs from the official CIFAR-10 release (md5 "
            f"{hashlib.md5(raw).hexdigest()}, official {checksum}): extract "
            "cifar-10-python.tar.gz again, or pass checksum=False to read your own files"
        )
    try:  # the official batches are Python 2 pickles: latin1 turns their byte keys into str
        batch = pickle.loads(raw, encoding="latin1")
    except Exception as err:
        raise ValueError(
            f"{path} is not a CIFAR-10 python batch (unpickling failed: {err}); extract "
            "cifar-10-python.tar.gz again"
        ) from err
    if not isinstance(batch, dict):
        raise ValueError(f"{path} holds a {type(batch).__name__}, not a CIFAR-10 batch dict")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}


def _cifar_arrays(path: Path, checksum: str | None) -> tuple[Tensor, Tensor]:
    batch = _read_cifar_batch(path, checksum)
    missing = [key for key in ("data", "labels") if key not in batch]
    if missing:
        raise ValueError(f"{path} has no {' or '.join(map(repr, missing))}: not a CIFAR-10 batch")
    pixels, labels = np.asarray(batch["data"]), np.asarray(batch["labels"])
    if pixels.dtype != np.uint8 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{path}: CIFAR-10 batches hold 'data' as uint8 pixels 0..255 and 'labels' as "
            f"integers, got {pixels.dtype} and {labels.dtype}: convert them (e.g. "
            "np.round(x * 255).astype(np.uint8) for floats in [0, 1]) before pickling"
        )
    labels = labels.astype(np.int64)
    if pixels.ndim != 2 or pixels.shape[1] != 3072 or len(labels) != len(pixels):
        raise ValueError(
            f"{path} is not in CIFAR-10's format: expected 'data' of shape N x 3072 (uint8) and "
            f"N 'labels', got data of shape {pixels.shape} and {len(labels)} labels"
        )
    if len(labels) and not (0 <= labels.min() and labels.max() <= 9):
        raise ValueError(f"{path} has labels outside 0..9 ({labels.min()}..{labels.max()})")
    images = torch.from_numpy(pixels.reshape(-1, 3, 32, 32)).float() / 255
    return images, torch.from_numpy(labels)


def load_cifar10(
    root: str | Path, seed: int = 0, val_size: int = 5000, checksum: bool = False
) -> Splits:
    """CIFAR-10 from local files: train 50,000 - ``val_size`` / val ``val_size`` / test 10,000.

    Reads the python batches in ``ROOT/cifar-10-batches-py`` (``data_batch_1`` .. ``_5``,
    ``test_batch``, ``batches.meta``, as extracted from ``cifar-10-python.tar.gz``), or any
    files in that format (a subset, a relabelled copy). ``checksum=True`` also checks each file
    against the official release's md5 sums (those torchvision lists) and names the file that
    differs. Images are 3 x 32 x 32.
    """
    from torchvision.datasets import CIFAR10

    _check_seed("load_cifar10", seed)
    root = _folder("load_cifar10", root)
    folder = root / CIFAR10.base_folder
    official = dict(CIFAR10.train_list + CIFAR10.test_list)
    official[CIFAR10.meta["filename"]] = CIFAR10.meta["md5"]
    _require_files(
        "CIFAR-10",
        folder,
        list(official),
        "get cifar-10-python.tar.gz on a machine with internet (or torchvision.datasets."
        f"CIFAR10(ROOT, download=True)) and extract it in {root}",
    )

    def md5(name: str) -> str | None:
        return official[name] if checksum else None

    train = [_cifar_arrays(folder / name, md5(name)) for name, _ in CIFAR10.train_list]
    test_images, test_labels = _cifar_arrays(folder / "test_batch", md5("test_batch"))
    meta = _read_cifar_batch(folder / CIFAR10.meta["filename"], md5(CIFAR10.meta["filename"]))
    names = meta.get("label_names", [])
    classes = [c.decode() if isinstance(c, bytes) else str(c) for c in names]
    if len(classes) != 10:
        raise ValueError(
            f"{folder / CIFAR10.meta['filename']} should list 10 'label_names', got {classes}"
        )
    images = torch.cat([x for x, _ in train])
    labels = torch.cat([y for _, y in train])
    test_set = TensorDataset(test_images, test_labels)
    train_set, val_set, test_set = _carve("load_cifar10", images, labels, test_set, val_size, seed)
    return Splits(train_set, val_set, test_set, classes=classes, name="cifar10")


# --------------------------------------------------------------------------- text


@dataclass(frozen=True)
class TextSet:
    """Labelled texts for sentiment classification: ``texts[i]`` has label ``labels[i]``.

    Labels are ``int64``: 0 = negative, 1 = positive (``classes[label]``).
    """

    texts: list[str]
    labels: Tensor
    classes: ClassVar[tuple[str, str]] = ("neg", "pos")

    def __len__(self) -> int:
        return len(self.texts)


def _read_pos_neg(folder: Path) -> TextSet:
    texts: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(TextSet.classes):
        sub = folder / name
        if not sub.is_dir():
            raise FileNotFoundError(
                f"{sub} is missing: a text folder needs {name}/ and "
                f"{TextSet.classes[1 - label]}/ sub-folders of .txt files, one text per file"
            )
        files = sorted(sub.glob("*.txt"))
        if not files:
            raise FileNotFoundError(f"no .txt files in {sub}: put one text per .txt file there")
        for file in files:
            try:
                texts.append(file.read_text(encoding="utf-8-sig").strip())  # a BOM is no text
            except UnicodeDecodeError as err:
                raise ValueError(f"{file} is not UTF-8 text ({err}): save it as UTF-8") from err
        labels += [label] * len(files)
    return TextSet(texts, torch.tensor(labels, dtype=torch.int64))


def load_text_folder(root: str | Path) -> dict[str, TextSet]:
    """An IMDB-style folder of text files, one text per ``.txt`` file, by split.

    Two layouts are read:

    * ``ROOT/pos/*.txt`` and ``ROOT/neg/*.txt`` -> ``{"all": TextSet}``;
    * ``ROOT/train/{pos,neg}/*.txt`` and/or ``ROOT/test/{pos,neg}/*.txt`` (the layout of the
      extracted ``aclImdb`` archive) -> ``{"train": TextSet, "test": TextSet}`` with the
      splits present. Other files and folders (``unsup/``, ``urls_*.txt``) are ignored.

    Within a split the negative texts come first, then the positive ones, each in sorted file
    name order, so the result is the same on every machine. Texts are read as UTF-8 and
    stripped of surrounding white space.
    """
    root = _folder("load_text_folder", root)
    layout = "ROOT/pos/*.txt and ROOT/neg/*.txt, or ROOT/train/{pos,neg}/ and ROOT/test/{pos,neg}/"
    if not root.is_dir():
        raise FileNotFoundError(f"text folder {root} does not exist: expected {layout}")
    if (root / "pos").is_dir() or (root / "neg").is_dir():
        return {"all": _read_pos_neg(root)}
    splits = {s: _read_pos_neg(root / s) for s in ("train", "test") if (root / s).is_dir()}
    if not splits:
        raise FileNotFoundError(
            f"{root} has no pos/, neg/, train/ or test/ folder: expected {layout}"
        )
    return splits


def load_sentiment_corpus() -> TextSet:
    """The sentiment corpus shipped for the course: 160 short reviews, 80 positive, 80 negative.

    Films, books, food, hotels and products, written for pruneplug (MIT). Labels follow
    :class:`TextSet` (1 = pos, 0 = neg), in file order: positives first, so shuffle before
    splitting. For real data, see :func:`load_text_folder`.
    """
    lines = (Path(__file__).parent / "sentiment.tsv").read_text(encoding="utf-8").splitlines()
    rows = [line.split("\t") for line in lines if line.strip() and not line.startswith("#")]
    return TextSet([text for _, text in rows], torch.tensor([int(lab == "pos") for lab, _ in rows]))
