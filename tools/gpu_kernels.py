"""Variants of the augmentation pipeline's hot passes, timed side by side on one device.

Issue 15, item 2. On an H200, a 256 x 3 x 224 x 224 call of ``pruneplug bench augment``'s
pipeline spent 23 % of its GPU time in the per-sample colour map (``baddbmm``: a batched GEMM
for 3 x 3 matrices), 17 % in the blur (one grouped convolution) and 11 % in ``grid_sample``.
Which replacement is faster is a measurement, not a guess (on CPU, three ``addcmul`` are slower
than ``baddbmm`` for 3 channels), so this script times, on the same inputs:

* the whole pipeline, eager and under ``torch.compile``; its apply alone (parameters drawn
  beforehand, as kornia splits them), eager and compiled; and the apply made **sync-free**
  (:func:`apply_sync_free`: no device read, fixed shapes, 0 syncs against the library's 3),
  eager, compiled whole (``fullgraph=True``: it has no graph break), replayed as a CUDA graph,
  and both (``mode="reduce-overhead"``). These rows come first: they decide whether the library
  should split drawing from a sync-free, compiled or graphed apply;
* the apply as two Triton kernels (:mod:`triton_fused`: warp, colour map and blur in one pass
  that writes each output pixel once), on a GPU, or on CPU under Triton's interpreter
  (``TRITON_INTERPRET=1``, which checks it but says nothing of its speed);
* the product of two ``N x 3 x 3`` matrices, of which a call of the pipeline makes about 5
  to build its per-sample maps: ``bmm`` (the library's) or a broadcast multiply-and-sum;
* the colour map's final pass ``out = clamp(A x + t)``: ``baddbmm`` (the library's), a
  broadcast multiply-and-sum, one ``addcmul`` per input channel, and the broadcast form
  compiled by ``torch.compile`` (one generated kernel);
* the 3 x 3 Gaussian blur: the library's grouped convolution, the same Gaussian as two 1-D
  grouped convolutions (it is separable), and a compiled 9-tap stencil;
* the whole pipeline with its parameters drawn by a CPU generator against drawn on the device
  (different draws, so not compared), and the drawing alone (what a split call pays before a
  compiled or graphed apply); and on one image: the per-call floor, with its kernels
  and syncs (on a GPU also as ``torch.cuda.set_sync_debug_mode`` reports them).

Every variant is first checked against the library's output (max |difference| printed; a
variant off by more than 1e-4 is reported, not timed). Times are medians of ``--repeats``
calls, synchronised; GB/s counts one read and one write of the images (of the matrices for
``compose``), against a plain copy's bandwidth measured in the same run. ``tools/gpu-check``
runs it (step ``kernels``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch
from pruneplug_plugins.blur import filter_images
from torch import Tensor
from torch.nn import functional as F

from pruneplug.augment import Compose
from pruneplug.augment.kernels import _sample, colour_pass, moved_and_exact
from pruneplug.augment.pipeline import _child
from pruneplug.benchmarks.augment import (
    compose,
    copy_bandwidth,
    dispatch_counts,
    pruneplug_pipeline,
)
from pruneplug.benchmarks.deploy_speed import cuda_graphed

TOLERANCE = 1e-4


def median_ms(fn: Callable[[], Tensor], device: torch.device, repeats: int) -> float:
    """Median time of ``fn()`` in milliseconds after 2 untimed calls (CUDA events on a GPU)."""
    times = []
    for i in range(repeats + 2):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            elapsed = start.elapsed_time(end)
        else:
            begin = time.perf_counter()
            fn()
            elapsed = 1e3 * (time.perf_counter() - begin)
        if i >= 2:
            times.append(elapsed)
    return statistics.median(times)


def colour_baddbmm(x: Tensor, a: Tensor, t: Tensor) -> Tensor:
    n, c, h, w = x.shape
    return torch.baddbmm(t[..., None], a, x.reshape(n, c, h * w)).view(n, c, h, w).clamp_(0, 1)


def colour_broadcast(x: Tensor, a: Tensor, t: Tensor) -> Tensor:
    return ((a[..., None, None] * x[:, None]).sum(2) + t[..., None, None]).clamp(0, 1)


def colour_addcmul(x: Tensor, a: Tensor, t: Tensor) -> Tensor:
    out = torch.addcmul(t[..., None, None], a[:, :, 0, None, None], x[:, None, 0])
    for d in range(1, x.shape[1]):
        out.addcmul_(a[:, :, d, None, None], x[:, None, d])
    return out.clamp_(0, 1)


def compose_bmm(a: Tensor, b: Tensor) -> Tensor:
    return a @ b


def compose_broadcast(a: Tensor, b: Tensor) -> Tensor:
    return (a[..., :, :, None] * b[..., None, :, :]).sum(-2)


def gaussians(n: int, k: int, device: torch.device) -> Tensor:
    """``N x k``: normalised 1-D Gaussians of sigma drawn in [0.1, 2] (the bench's range)."""
    sigma = torch.empty(n, device=device).uniform_(0.1, 2.0)
    x = torch.arange(k, device=device) - k // 2
    g = torch.exp(-(x**2)[None, :] / (2 * sigma[:, None] ** 2))
    return g / g.sum(1, keepdim=True)


def blur_separable(x: Tensor, g: Tensor) -> Tensor:
    n, c, h, w = x.shape
    k = g.shape[1]
    weight = g.repeat_interleave(c, 0)  # N*C x k
    padded = F.pad(x.reshape(1, n * c, h, w), (k // 2,) * 4, mode="reflect")
    rows = F.conv2d(padded, weight[:, None, None, :], groups=n * c)
    return F.conv2d(rows, weight[:, None, :, None], groups=n * c).view(n, c, h, w).clamp_(0, 1)


def blur_stencil(x: Tensor, kernels: Tensor) -> Tensor:
    n, c, h, w = x.shape
    k = kernels.shape[-1]
    padded = F.pad(x, (k // 2,) * 4, mode="reflect")
    out = x.new_zeros(n, c, h, w)
    for i in range(k):
        for j in range(k):
            out = out + kernels[:, None, i, j, None, None] * padded[:, :, i : i + h, j : j + w]
    return out.clamp(0, 1)


def warp_sync_free(images: Tensor, matrix: Tensor, options: dict[str, Any]) -> Tensor:
    """:func:`~pruneplug.augment.warp` without reading the device: every image is resampled
    both ways, with ``interpolation`` and nearest, and ``torch.where`` keeps per sample what
    ``warp`` picks (instead of counting and indexing the two groups). Twice the resampling,
    no wait, fixed shapes."""
    interpolation = options.get("interpolation", "bilinear")
    padding_mode, fill = options.get("padding_mode", "constant"), options.get("fill", 0.0)
    matrix = matrix.to(images.dtype)
    moved, exact = moved_and_exact(matrix, images.shape)
    out = _sample(images, matrix, interpolation, padding_mode, fill)
    if interpolation != "nearest":
        nearest = _sample(images, matrix, "nearest", padding_mode, fill)
        out = torch.where(exact.view(-1, 1, 1, 1), nearest, out)
    return torch.where(moved.view(-1, 1, 1, 1), out, images)


def apply_sync_free(pipeline: Compose, images: Tensor, params: Mapping[str, Tensor]) -> Tensor:
    """``pipeline.transform(images, params)[0]`` (``Compose._apply``'s stages) with no device
    read: geometric stages through :func:`warp_sync_free`, colour stages as one pass (their maps
    are the identity for unselected samples), any other stage applied to the whole batch and
    its unselected samples put back with ``torch.where``. What ``torch.compile`` without graph
    breaks and CUDA graphs need; equal to the library's apply."""
    for kind, indices in pipeline.stages:
        if kind == "warp":
            shape = images.shape
            matrix = pipeline.warps[indices[0]].sampling_matrix(_child(params, indices[0]), shape)
            for i in indices[1:]:
                matrix = matrix @ pipeline.warps[i].sampling_matrix(_child(params, i), shape)
            images = warp_sync_free(images, matrix, pipeline._warp_options(indices) or {})
        elif kind == "colour":
            images = colour_pass(
                images, [(pipeline.colours[i], _child(params, i)) for i in indices]
            )
        else:
            stage, sub = pipeline.augmenters[indices[0]], _child(params, indices[0])
            out, _ = stage._apply(images, sub, None, None, None)
            images = torch.where(sub["applied"].view(-1, 1, 1, 1), out, images)
    return images


def compiled(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
    return torch.compile(fn, dynamic=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument(
        "--quick", action="store_true", help="8 x 3 x 16 x 16, 2 repeats, no torch.compile"
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    batch, size, repeats = (8, 16, 2) if args.quick else (args.batch, args.size, args.repeats)
    torch.manual_seed(0)
    x = torch.rand(batch, 3, size, size, device=device)
    a = torch.eye(3, device=device) + 0.1 * torch.randn(batch, 3, 3, device=device)
    t = 0.05 * torch.randn(batch, 3, device=device)
    g = gaussians(batch, 3, device)
    kernels = g[:, :, None] * g[:, None, :]
    pipeline_eager = pruneplug_pipeline(size, args.device)
    pipeline_compiled = pruneplug_pipeline(size, args.device)
    # kornia's split: parameters drawn once, eagerly (the same draws as the pipelines' first
    # calls), then only the pure apply timed, eager or compiled
    stages = compose()
    params = stages.forward_parameters(x.shape, torch.Generator(device).manual_seed(0), device)

    def library_blur() -> Tensor:
        return filter_images(x, kernels, "reflect")

    def sync_free(images: Tensor) -> Tensor:
        return apply_sync_free(stages, images, params)

    def triton_fused() -> Tensor:
        from triton_fused import fused_apply  # without Triton: a "failed" row, not a crash

        return fused_apply(stages, x, params)

    def graphed(fn: Callable[[Tensor], Tensor]) -> Callable[[], Tensor]:
        """``fn(x)`` replayed as a CUDA graph, captured at the first call (so that a failed
        capture is a row of the table, not a crash)."""
        replay: list[Callable[[Tensor], object]] = []

        def run() -> Tensor:
            if not replay:
                replay.append(cuda_graphed(fn, x))
            return replay[0](x)  # type: ignore[return-value]

        return run

    # the pipeline first: its rows decide the design; the passes below pick kernels within it
    passes: dict[str, dict[str, Callable[[], Tensor]]] = {
        "pipeline": {
            "eager (library)": lambda: pipeline_eager(x),
            "apply only, eager": lambda: stages.transform(x, params)[0],
            "apply only, sync-free": lambda: sync_free(x),
        },
        "compose": {  # the N x 3 x 3 products that build the per-sample maps (~20 a call)
            "bmm (library)": lambda: compose_bmm(a, a),
            "broadcast sum": lambda: compose_broadcast(a, a),
        },
        "colour": {
            "baddbmm (library)": lambda: colour_baddbmm(x, a, t),
            "broadcast sum": lambda: colour_broadcast(x, a, t),
            "addcmul per channel": lambda: colour_addcmul(x, a, t),
        },
        "blur": {
            "grouped conv2d (library)": library_blur,
            "separable, 2 grouped convs": lambda: blur_separable(x, g),
        },
    }
    pipeline = passes["pipeline"]
    if device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1":
        pipeline["apply only, Triton fused"] = triton_fused
    if device.type == "cuda":  # one launch replays the whole apply (fixed shapes, no waits)
        pipeline["sync-free, CUDA graph"] = graphed(sync_free)
    if not args.quick:
        free_c = torch.compile(sync_free, fullgraph=True, dynamic=False)  # no graph break
        pipeline["sync-free, compiled"] = lambda: free_c(x)
        if device.type == "cuda":
            free_g = torch.compile(sync_free, fullgraph=True, mode="reduce-overhead")
            pipeline["sync-free, compiled+graphs"] = lambda: free_g(x)
        apply_c = compiled(lambda images, drawn: stages.transform(images, drawn)[0])
        pipe_c = compiled(pipeline_compiled)
        pipeline["apply only, compiled"] = lambda: apply_c(x, params)
        pipeline["torch.compile"] = lambda: pipe_c(x)
        colour_c = compiled(colour_broadcast)
        stencil_c = compiled(blur_stencil)
        passes["colour"]["broadcast sum, compiled"] = lambda: colour_c(x, a, t)
        passes["blur"]["9-tap stencil, compiled"] = lambda: stencil_c(x, kernels)
    bandwidth = copy_bandwidth(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"{batch} x 3 x {size} x {size} float32 on {name}, torch {torch.__version__}; median of "
        f"{repeats}; copy bandwidth {bandwidth / 1e9:.0f} GB/s"
    )
    # the counts and the per-call floor first: cheap, and kept if a slow compile below overruns
    counts = {
        "library": dispatch_counts(lambda images: stages.transform(images, params)[0], x),
        "sync-free": dispatch_counts(sync_free, x),
    }
    print(
        "apply only: "
        + "; ".join(f"{name} {k} kernels and {w} syncs" for name, (k, w) in counts.items())
    )
    print(host_draws(x, device, repeats))
    print(launch_floor(size, device, repeats))
    header = ("pass", "variant", "ms", "GB/s", "% copy", "max |diff|")
    print("{:10s} {:28s} {:>9s} {:>8s} {:>7s} {:>11s}".format(*header))
    images = 2 * x.numel() * x.element_size()  # bytes: one read and one write of the images
    traffic = {"compose": 3 * a.numel() * a.element_size()}  # two matrices read, one written
    for pass_name, variants in passes.items():
        reference = None
        for variant, fn in variants.items():
            try:  # each pipeline's generator starts at seed 0: first calls draw alike
                out = fn()
            except Exception as error:  # a variant that does not run is a finding, not a crash
                print(f"{pass_name:10s} {variant:28s} failed: {str(error).splitlines()[0][:80]}")
                continue
            reference = out if reference is None else reference
            diff = (out - reference).abs().max().item()
            if diff > TOLERANCE:
                print(f"{pass_name:10s} {variant:28s} WRONG: max |diff| {diff:.2e}, not timed")
                continue
            ms = median_ms(fn, device, repeats)
            rate = traffic.get(pass_name, images) / (ms / 1e3)
            print(
                f"{pass_name:10s} {variant:28s} {ms:9.3f} {rate / 1e9:8.1f} "
                f"{100 * rate / bandwidth:7.2f} {diff:11.2e}"
            )


def host_draws(x: Tensor, device: torch.device, repeats: int) -> str:
    """The whole batch with the parameters drawn by a CPU generator (then moved to ``device``,
    one copy each) against drawn on ``device`` (the library's default): on a GPU, whether ~50
    tiny drawing kernels cost more than ~15 small host-to-device copies and their waits."""
    pipeline = compose()
    on_host, on_device = torch.Generator().manual_seed(0), torch.Generator(device).manual_seed(0)
    host_ms = median_ms(lambda: pipeline(x, generator=on_host), device, repeats)
    device_ms = median_ms(lambda: pipeline(x, generator=on_device), device, repeats)
    kernels, syncs = dispatch_counts(lambda images: pipeline(images, generator=on_host), x)

    def draw() -> None:  # what a split call pays before its apply
        pipeline.forward_parameters(x.shape, on_device, device)

    draw_ms = median_ms(draw, device, repeats)  # type: ignore[arg-type]
    return (
        f"parameters drawn by a CPU generator: {host_ms:.3f} ms a call, against {device_ms:.3f} "
        f"ms drawn on the device; {kernels} kernels and {syncs} syncs counted; drawing alone "
        f"on the device {draw_ms:.3f} ms"
    )


def launch_floor(size: int, device: torch.device, repeats: int) -> str:
    """The pipeline on ONE image: the time a call costs whatever its size (launches, syncs,
    Python), its kernels and syncs as :class:`DispatchCount` sees them and, on a GPU, the syncs
    ``torch.cuda.set_sync_debug_mode`` reports (the ground truth for the count)."""
    pipeline = pruneplug_pipeline(size, str(device))
    one = torch.rand(1, 3, size, size, device=device)
    kernels, syncs = dispatch_counts(pipeline, one)
    text = (
        f"pipeline on 1 image: {median_ms(lambda: pipeline(one), device, repeats):.3f} ms a call "
        f"(the floor of any batch); {kernels} kernels and {syncs} syncs counted"
    )
    if device.type == "cuda":
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                pipeline(one)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        flagged = [w for w in caught if "synchroniz" in str(w.message)]
        text += f"; torch.cuda.set_sync_debug_mode flagged {len(flagged)} syncs:"
        for where in sorted({f"{w.filename.split('/')[-1]}:{w.lineno}" for w in flagged}):
            text += f" {where}"
    return text


if __name__ == "__main__":
    main()
