"""``pruneplug bench augment``: images per second of one augmentation pipeline, five ways.

The pipeline (issue 5): horizontal flip (p = 0.5), rotation within 15 degrees, random resized
crop (area 0.8-1), colour jitter (0.2, 0.2, 0.2, 0.05) and a 3 x 3 Gaussian blur
(sigma 0.1-2), on a batch of 256 x 3 x 32 x 32 float images (``--batch``, ``--size``), on CPU
with 2 threads or on a GPU (``--device cuda``), in one process. Rows:

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
reported as such; albumentations (NumPy) runs on the CPU only. Targets: at least 1.5 x kornia,
and at least torchvision's single draw on the whole batch.

**Roofline.** An augmentation reads each image and writes it once at least, so its speed is
bounded by the memory bandwidth: the column "% copy bw" is the row's traffic, img/s x 2 x bytes
per image, over the bandwidth of a plain copy (``dst.copy_(src)`` of a buffer of at least
:data:`COPY_BYTES`, counted as one read and one write) measured in the same run on the same
device. Far below 100 % means the time goes to launches, Python and arithmetic, not to memory.

**Launches and syncs.** The columns "kernels" and "syncs" count, in one untimed call, the
ATen operators that run a kernel (views excluded) and the points where the CPU waits for the
device: a value read back to the host (``.item()``, ``bool(tensor)``) or a blocking copy between
host and device (:class:`DispatchCount`). A pipeline runs the same operators on every device;
copies occur only off the CPU. On a GPU each launch costs several microseconds of CPU time and
each sync idles the GPU until the CPU has queued more work, so at small batches these counts,
not the bytes, bound the speed; CUDA graphs, which remove the launches, need a call free of
syncs.

**Page faults.** The column "faults" counts the minor page faults of one call (mean of
:data:`FAULT_CALLS`, from ``getrusage``; "-" where the ``resource`` module is missing, on
Windows): pages the process touches for the first time, each a trap into the kernel. glibc's
``malloc`` gives a large freed block back to the system when it was mapped on its own or lies
at the top of the heap beyond the trim threshold, so a call that allocates and frees the same
batch-sized tensors can fault all of their pages in again, every call. glibc moves both
thresholds as the process allocates, so whether a row pays depends on what ran before in the
same process. In a fresh process on a 2-core CPU, 256 x 3 x 32 x 32 through the pruneplug row
took 6.7-8.3 ms a call with about 3,650 faults; 3.3 ms with none once the environment pins
both thresholds (``MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=1073741824``: freed
memory then stays with the process), and 2.9 ms with jemalloc (``LD_PRELOAD``).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode

from pruneplug.augment import Compose

BATCH = (256, 3, 32, 32)
THREADS = 2
#: size of the buffer whose copy measures the memory bandwidth (past every CPU cache)
COPY_BYTES = 256 * 2**20
#: calls over which the page faults of one call are averaged
FAULT_CALLS = 3
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


def compose(fuse: bool = True) -> Compose:
    """The benchmark's pipeline as pruneplug's :class:`~pruneplug.augment.Compose`."""
    from pruneplug_plugins.blur import GaussianBlur
    from pruneplug_plugins.colour import ColourJitter
    from pruneplug_plugins.geometric import HorizontalFlip, ResizedCrop, Rotation

    b, c, s, h = JITTER
    return Compose(
        [
            HorizontalFlip(p=0.5),
            Rotation(degrees=DEGREES),
            ResizedCrop(scale_min=SCALE[0], scale_max=SCALE[1]),
            ColourJitter(brightness=b, contrast=c, saturation=s, hue=h),
            GaussianBlur(kernel_size=KERNEL, sigma_min=SIGMA[0], sigma_max=SIGMA[1], p=1.0),
        ],
        fuse=fuse,
    )


def pruneplug_pipeline(size: int = BATCH[-1], device: str = "cpu", fuse: bool = True) -> Pipeline:
    pipeline = compose(fuse)
    generator = torch.Generator(device=device).manual_seed(0)  # parameters drawn where used
    return lambda x: pipeline(x, generator=generator)


def kornia_pipeline(size: int = BATCH[-1], device: str = "cpu") -> Pipeline:
    import kornia.augmentation as K

    return K.AugmentationSequential(
        K.RandomHorizontalFlip(p=0.5),
        K.RandomRotation(DEGREES, p=1.0),
        K.RandomResizedCrop((size, size), scale=SCALE, p=1.0),
        K.ColorJitter(*JITTER, p=1.0),
        K.RandomGaussianBlur((KERNEL, KERNEL), SIGMA, p=1.0),
    )


def albumentations_pipeline(size: int = BATCH[-1], device: str = "cpu") -> Pipeline:
    if torch.device(device).type != "cpu":
        raise NotImplementedError("albumentations works on NumPy arrays: CPU only")
    import albumentations as A
    import numpy as np

    transform = A.Compose(
        [
            A.HorizontalFlip(p=0.5),
            A.Rotate(limit=DEGREES, p=1.0),
            A.RandomResizedCrop((size, size), scale=SCALE, p=1.0),
            A.ColorJitter(*JITTER, p=1.0),
            A.GaussianBlur(blur_limit=(KERNEL, KERNEL), sigma_limit=SIGMA, p=1.0),
        ]
    )

    def run(x: Tensor) -> Tensor:
        images = x.permute(0, 2, 3, 1).numpy()
        out = np.stack([transform(image=image)["image"] for image in images])
        return torch.from_numpy(out).permute(0, 3, 1, 2)

    return run


def _torchvision(size: int) -> Callable[[Tensor], Tensor]:
    from torchvision.transforms import v2

    return v2.Compose(
        [
            v2.RandomHorizontalFlip(p=0.5),
            v2.RandomRotation(DEGREES),
            v2.RandomResizedCrop((size, size), scale=SCALE, antialias=True),
            v2.ColorJitter(*JITTER),
            v2.GaussianBlur(KERNEL, sigma=SIGMA),
        ]
    )


def torchvision_per_sample(size: int = BATCH[-1], device: str = "cpu") -> Pipeline:
    transform = _torchvision(size)
    return lambda x: torch.stack([transform(image) for image in x])


def torchvision_batch(size: int = BATCH[-1], device: str = "cpu") -> Pipeline:
    return _torchvision(size)


def pruneplug_unfused(size: int = BATCH[-1], device: str = "cpu") -> Pipeline:
    return pruneplug_pipeline(size, device, fuse=False)


#: row name -> (factory(size, device), note)
ROWS: dict[str, tuple[Callable[[int, str], Pipeline], str]] = {
    "pruneplug": (pruneplug_pipeline, "per sample"),
    "pruneplug unfused": (pruneplug_unfused, "per sample"),
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


def _sync(device: torch.device) -> None:
    """Wait for the device's queued work, so that wall time measures it (GPUs run async)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
            _sync(images.device)
            start = time.perf_counter()
            pipeline(images)
            _sync(images.device)
            rates[name].append(len(images) / (time.perf_counter() - start))
    return rates


class DispatchCount(TorchDispatchMode):
    """Counts, while active, the ATen operators that run a kernel and the host syncs.

    Views (``OpOverload.is_view``, and ``_unsafe_view``) only make new tensor metadata: no
    kernel. A sync is ``_local_scalar_dense`` (``.item()``, ``bool``, ``int`` of a tensor) or a
    blocking copy between the CPU and another device, either way (PyTorch waits for the device's
    stream after such a copy unless ``non_blocking=True``); a CPU run has only the first kind.
    A tensor made from host data directly on a device (``torch.tensor(..., device="cuda")``) is
    copied below the dispatcher, unseen: on a GPU, ``torch.cuda.set_sync_debug_mode("warn")``
    reports every sync (``tools/gpu_kernels.py`` sets the two counts side by side).
    """

    NO_KERNEL = frozenset({torch.ops.aten._unsafe_view.default})
    COPIES = frozenset({torch.ops.aten._to_copy.default, torch.ops.aten.copy_.default})

    def __init__(self) -> None:
        super().__init__()
        self.kernels = 0
        self.syncs = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func is torch.ops.aten._local_scalar_dense.default or (
            func in self.COPIES and self.blocking_host_copy(func, args, kwargs, out)
        ):
            self.syncs += 1  # a wait for the device, not a kernel
        elif not func.is_view and func not in self.NO_KERNEL:
            self.kernels += 1
        return out

    @staticmethod
    def blocking_host_copy(func: object, args: tuple, kwargs: dict, out: object) -> bool:
        """Whether a ``_to_copy`` (``args[0]`` -> ``out``) or ``copy_`` (``args[1]`` ->
        ``args[0]``) moves a tensor between the CPU and another device without
        ``non_blocking=True``."""
        if func is torch.ops.aten._to_copy.default:
            source, target = args[0], out
            non_blocking = kwargs.get("non_blocking", False)
        else:
            target, source = args[0], args[1]
            non_blocking = args[2] if len(args) > 2 else kwargs.get("non_blocking", False)
        if not (isinstance(source, Tensor) and isinstance(target, Tensor)) or non_blocking:
            return False
        kinds = {source.device.type, target.device.type}
        return len(kinds) == 2 and "cpu" in kinds


def dispatch_counts(pipeline: Pipeline, images: Tensor) -> tuple[int, int]:
    """``(kernels, syncs)`` of one call of ``pipeline`` on ``images`` (:class:`DispatchCount`)."""
    with DispatchCount() as count:
        pipeline(images)
    return count.kernels, count.syncs


def page_faults(pipeline: Pipeline, images: Tensor) -> float | None:
    """Minor page faults per call of ``pipeline`` on ``images`` (mean of :data:`FAULT_CALLS`
    calls after an untimed one), or ``None`` where the ``resource`` module is missing."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    pipeline(images)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(FAULT_CALLS):
        pipeline(images)
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / FAULT_CALLS


def copy_bandwidth(device: torch.device, nbytes: int = COPY_BYTES, repeats: int = 5) -> float:
    """Bytes per second of ``dst.copy_(src)`` on ``device``, counting one read and one write.

    The best of ``repeats`` copies of an ``nbytes`` float32 buffer (after one untimed copy): the
    bandwidth a pipeline that touches every byte once could at best reach.
    """
    src = torch.rand(nbytes // 4, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        dst.copy_(src)
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * src.numel() * src.element_size() / best


def table(
    rates: dict[str, list[float]],
    missing: dict[str, str],
    bytes_per_image: int = 4 * 3 * 32 * 32,
    bandwidth: float | None = None,
    counts: dict[str, tuple[int, int]] | None = None,
    faults: dict[str, float | None] | None = None,
) -> str:
    """The printed table: median and range of images/s, ratios to kornia and to tv batch,
    (given the copy ``bandwidth`` in bytes/s) the share of it each row's traffic reaches,
    (given ``counts``) each row's kernels and syncs per call, and (given ``faults``) its
    minor page faults per call."""
    counts, faults = counts or {}, faults or {}
    medians = {name: statistics.median(r) for name, r in rates.items()}
    lines = [
        f"{'library':28s} {'version':>12s} {'img/s':>8s} {'range':>15s} "
        f"{'x kornia':>8s} {'x tv batch':>10s} {'% copy bw':>9s} {'kernels':>7s} {'syncs':>5s}"
        f" {'faults':>6s}  parameters"
    ]
    for name, (_, note) in ROWS.items():
        if name in missing:
            lines.append(f"{name:28s} {'-':>12s} {'-':>8s}  not run: {missing[name]}")
            continue
        if name not in rates:
            continue
        rate = medians[name]
        ratios = [
            f"{rate / medians[anchor]:.2f}" if anchor in medians else "-" for anchor in TARGETS
        ]
        spread = f"{min(rates[name]):.0f}-{max(rates[name]):.0f}"
        roof = f"{100 * rate * 2 * bytes_per_image / bandwidth:.2f}" if bandwidth else "-"
        kernels, syncs = map(str, counts.get(name, ("-", "-")))
        fault = faults.get(name)
        paged = "-" if fault is None else f"{fault:.0f}"
        lines.append(
            f"{name:28s} {_version(name):>12s} {rate:8.0f} {spread:>15s} {ratios[0]:>8s} "
            f"{ratios[1]:>10s} {roof:>9s} {kernels:>7s} {syncs:>5s} {paged:>6s}  {note}"
        )
    for anchor, target in TARGETS.items():
        if anchor in medians and "pruneplug" in medians:
            ratio = medians["pruneplug"] / medians[anchor]
            verdict = "met" if ratio >= target else "MISSED"
            lines.append(f"target >= {target:g} x {anchor}: {ratio:.2f} x, {verdict}")
    return "\n".join(lines)


def run(
    quick: bool = False, *, device: str = "cpu", size: int = BATCH[-1], batch: int = BATCH[0]
) -> None:
    """Print the table for ``batch`` images of 3 x ``size`` x ``size`` on ``device``.

    ``quick``: a batch of 32 (at most ``batch``), 1 warm-up call and 2 repeats - a smoke test
    of every row for the test suite, not a measurement.
    """
    for name, value in (("size", size), ("batch", batch)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r}: give a whole number >= 1")
    where = torch.device(device)
    if where.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: no CUDA device here; run with --device cpu")
    if quick:
        budget = Budget(warmup=1, repeats=2, batch=min(batch, 32))
    else:
        budget = Budget(warmup=3, repeats=15, batch=batch)
    load_before = os.getloadavg()[0]
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        shape = (budget.batch, BATCH[1], size, size)
        images = torch.rand(shape, generator=torch.Generator().manual_seed(0)).to(where)
        pipelines: dict[str, Pipeline] = {}
        missing: dict[str, str] = {}
        for name, (factory, _) in ROWS.items():
            try:
                pipelines[name] = factory(size, device)
            except ImportError as exc:
                missing[name] = f"not installed: {exc.name or exc} (pip install pruneplug[bench])"
            except NotImplementedError as exc:
                missing[name] = str(exc)
        rates = measure(pipelines, images, budget)
        counts = {name: dispatch_counts(pipeline, images) for name, pipeline in pipelines.items()}
        faults = {name: page_faults(pipeline, images) for name, pipeline in pipelines.items()}
        bandwidth = copy_bandwidth(where, COPY_BYTES // 16 if quick else COPY_BYTES)
    finally:
        torch.set_num_threads(threads)
    on = torch.cuda.get_device_name(where) if where.type == "cuda" else f"{THREADS} threads"
    print(
        f"augmentation pipeline, batch {' x '.join(map(str, shape))}, {on}, "
        f"{budget.repeats} interleaved repeats (median, range); copy bandwidth "
        f"{bandwidth / 1e9:.1f} GB/s; 1-minute load average {load_before:.2f} before, "
        f"{os.getloadavg()[0]:.2f} after, on {os.cpu_count()} CPUs:"
    )
    print(table(rates, missing, 4 * BATCH[1] * size * size, bandwidth, counts, faults))
    print(
        "kernels, syncs: ATen operators per call that run a kernel, and that make the CPU wait "
        "for the device (values read back; blocking host-device copies, which a CPU run has "
        "none of); on a GPU each launch costs microseconds; NumPy's work is not counted; "
        "faults: minor page faults per call, memory the allocator gave back to the system and "
        "takes again (README, Memory on Linux)"
    )
