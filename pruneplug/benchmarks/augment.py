"""``pruneplug bench augment``: images per second of one augmentation pipeline, five ways.

The pipeline (issue 5): horizontal flip (p = 0.5), rotation within 15 degrees, random resized
crop (area 0.8-1), colour jitter (0.2, 0.2, 0.2, 0.05) and a 3 x 3 Gaussian blur
(sigma 0.1-2), on a batch of 256 x 3 x 32 x 32 float images, on CPU with 2 threads, in one
process. Rows:

* pruneplug - :class:`~pruneplug.augment.Compose` of the built-ins, parameters per sample
  (the three geometric stages fuse into one resampling, the jitter is one colour map; its hue
  is the linear YIQ rotation of :mod:`pruneplug_plugins.colour`, the others shift HSV hue);
* pruneplug unfused - the same with ``fuse=False`` (three resamplings): what fusion buys;
* kornia - ``AugmentationSequential`` of the same ops, parameters per sample;
* albumentations - ``Compose`` called on each image (NumPy, H x W x C float32), one by one;
* torchvision v2 per sample - ``Compose`` called on each image, one by one;
* torchvision v2 whole batch - ``Compose`` called once on the batch: **one draw for all**
  256 images (what torchvision offers for batches; not the same augmentation).

The per-image rows include the conversion between the batch and single images. Calls are
interleaved (each repeat times every library once, in turn) so a load spike on the shared
machine hits all of them alike; the table gives the median and the range over repeats, and the
header the machine's load average (other processes competing for the 2 threads slow every
row, the 2-thread libraries most).
kornia and albumentations are optional (``pip install pruneplug[bench]``); a missing one is
reported as such. Targets: at least 1.5 x kornia, and at least torchvision's single draw on the
whole batch.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from pruneplug.augment import Compose

BATCH = (256, 3, 32, 32)
THREADS = 2
#: pipeline settings shared by every row
DEGREES, SCALE, JITTER, SIGMA, KERNEL = 15.0, (0.8, 1.0), (0.2, 0.2, 0.2, 0.05), (0.1, 2.0), 3
#: targets: ratio to kornia, ratio to torchvision v2 on the whole batch
TARGETS = {"kornia": 1.5, "torchvision v2 whole batch": 1.0}

Pipeline = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class Budget:
    """Untimed warm-up calls, timed repeats and batch size (``quick`` for the test suite)."""

    warmup: int
    repeats: int
    batch: int = BATCH[0]


def pruneplug_pipeline(fuse: bool = True) -> Pipeline:
    from pruneplug_plugins.blur import GaussianBlur
    from pruneplug_plugins.colour import ColourJitter
    from pruneplug_plugins.geometric import HorizontalFlip, ResizedCrop, Rotation

    b, c, s, h = JITTER
    pipeline = Compose(
        [
            HorizontalFlip(p=0.5),
            Rotation(degrees=DEGREES),
            ResizedCrop(scale_min=SCALE[0], scale_max=SCALE[1]),
            ColourJitter(brightness=b, contrast=c, saturation=s, hue=h),
            GaussianBlur(kernel_size=KERNEL, sigma_min=SIGMA[0], sigma_max=SIGMA[1], p=1.0),
        ],
        fuse=fuse,
    )
    generator = torch.Generator().manual_seed(0)
    return lambda x: pipeline(x, generator=generator)


def kornia_pipeline() -> Pipeline:
    import kornia.augmentation as K

    size = BATCH[-2:]
    return K.AugmentationSequential(
        K.RandomHorizontalFlip(p=0.5),
        K.RandomRotation(DEGREES, p=1.0),
        K.RandomResizedCrop(size, scale=SCALE, p=1.0),
        K.ColorJitter(*JITTER, p=1.0),
        K.RandomGaussianBlur((KERNEL, KERNEL), SIGMA, p=1.0),
    )


def albumentations_pipeline() -> Pipeline:
    import albumentations as A
    import numpy as np

    transform = A.Compose(
        [
            A.HorizontalFlip(p=0.5),
            A.Rotate(limit=DEGREES, p=1.0),
            A.RandomResizedCrop(BATCH[-2:], scale=SCALE, p=1.0),
            A.ColorJitter(*JITTER, p=1.0),
            A.GaussianBlur(blur_limit=(KERNEL, KERNEL), sigma_limit=SIGMA, p=1.0),
        ]
    )

    def run(x: Tensor) -> Tensor:
        images = x.permute(0, 2, 3, 1).numpy()
        out = np.stack([transform(image=image)["image"] for image in images])
        return torch.from_numpy(out).permute(0, 3, 1, 2)

    return run


def _torchvision() -> Callable[[Tensor], Tensor]:
    from torchvision.transforms import v2

    return v2.Compose(
        [
            v2.RandomHorizontalFlip(p=0.5),
            v2.RandomRotation(DEGREES),
            v2.RandomResizedCrop(BATCH[-2:], scale=SCALE, antialias=True),
            v2.ColorJitter(*JITTER),
            v2.GaussianBlur(KERNEL, sigma=SIGMA),
        ]
    )


def torchvision_per_sample() -> Pipeline:
    transform = _torchvision()
    return lambda x: torch.stack([transform(image) for image in x])


def torchvision_batch() -> Pipeline:
    return _torchvision()


#: row name -> (factory, note)
ROWS: dict[str, tuple[Callable[[], Pipeline], str]] = {
    "pruneplug": (pruneplug_pipeline, "per sample"),
    "pruneplug unfused": (lambda: pruneplug_pipeline(fuse=False), "per sample"),
    "kornia": (kornia_pipeline, "per sample"),
    "albumentations": (albumentations_pipeline, "per sample (NumPy, one by one)"),
    "torchvision v2 per sample": (torchvision_per_sample, "per sample (one by one)"),
    "torchvision v2 whole batch": (torchvision_batch, "ONE draw for the whole batch"),
}


def _version(name: str) -> str:
    try:
        return __import__(name.split()[0]).__version__  # the row's first word is the package
    except ImportError:
        return "-"


def measure(
    pipelines: dict[str, Pipeline], images: Tensor, budget: Budget
) -> dict[str, list[float]]:
    """Images per second of each pipeline, one value per repeat, calls interleaved."""
    for pipeline in pipelines.values():
        for _ in range(budget.warmup):
            pipeline(images)
    rates: dict[str, list[float]] = {name: [] for name in pipelines}
    for _ in range(budget.repeats):
        for name, pipeline in pipelines.items():
            start = time.perf_counter()
            pipeline(images)
            rates[name].append(len(images) / (time.perf_counter() - start))
    return rates


def table(rates: dict[str, list[float]], missing: dict[str, str]) -> str:
    """The printed table: median and range of images/s, ratios to kornia and to tv batch."""
    medians = {name: statistics.median(r) for name, r in rates.items()}
    lines = [
        f"{'library':28s} {'version':>12s} {'img/s':>8s} {'range':>15s} "
        f"{'x kornia':>8s} {'x tv batch':>10s}  parameters"
    ]
    for name, (_, note) in ROWS.items():
        if name in missing:
            lines.append(f"{name:28s} {'-':>12s} {'-':>8s}  not installed: {missing[name]}")
            continue
        if name not in rates:
            continue
        rate = medians[name]
        ratios = [
            f"{rate / medians[anchor]:.2f}" if anchor in medians else "-" for anchor in TARGETS
        ]
        spread = f"{min(rates[name]):.0f}-{max(rates[name]):.0f}"
        lines.append(
            f"{name:28s} {_version(name):>12s} {rate:8.0f} {spread:>15s} "
            f"{ratios[0]:>8s} {ratios[1]:>10s}  {note}"
        )
    for anchor, target in TARGETS.items():
        if anchor in medians and "pruneplug" in medians:
            ratio = medians["pruneplug"] / medians[anchor]
            verdict = "met" if ratio >= target else "MISSED"
            lines.append(f"target >= {target:g} x {anchor}: {ratio:.2f} x, {verdict}")
    return "\n".join(lines)


def run(quick: bool = False) -> None:
    """Print the table (``quick``: a 32-image batch, 1 warm-up call and 2 repeats - a smoke
    test of every row for the test suite, not a measurement)."""
    budget = Budget(warmup=1, repeats=2, batch=32) if quick else Budget(warmup=3, repeats=15)
    load_before = os.getloadavg()[0]
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        shape = (budget.batch, *BATCH[1:])
        images = torch.rand(shape, generator=torch.Generator().manual_seed(0))
        pipelines: dict[str, Pipeline] = {}
        missing: dict[str, str] = {}
        for name, (factory, _) in ROWS.items():
            try:
                pipelines[name] = factory()
            except ImportError as exc:
                missing[name] = f"{exc.name or exc} (pip install pruneplug[bench])"
        rates = measure(pipelines, images, budget)
    finally:
        torch.set_num_threads(threads)
    print(
        f"augmentation pipeline, batch {' x '.join(map(str, shape))}, {THREADS} threads, "
        f"{budget.repeats} interleaved repeats (median, range); 1-minute load average "
        f"{load_before:.2f} before, {os.getloadavg()[0]:.2f} after, on {os.cpu_count()} CPUs:"
    )
    print(table(rates, missing))
