"""The bench pipeline's apply as two Triton kernels: warp, colour map and blur in one pass.

Issue 15, item 2 suggests "a Triton kernel for the fused warp + colour + blur pass if the others
stop short". The library applies the pipeline of ``pruneplug bench augment`` (flip, rotation and
resized crop fused into one resampling, colour jitter, 3 x 3 Gaussian blur) as about 180 small
kernels, three of which (``grid_sample``, the colour ``baddbmm``, the blur's grouped
convolution) write a whole batch each. Here, with the same drawn parameters:

1. :func:`_warped_sums` resamples every image (bilinear, or nearest where the library's
   :func:`~pruneplug.augment.warp` reads pixel-exact matrices) and sums each channel per block
   of pixels: the colour jitter's contrast needs the mean of the warped image, so the colour map
   is known only after one pass. Partial sums are reduced by ``torch.sum`` (deterministic: no
   atomics, the same seed gives the same batch);
2. :func:`~pruneplug.augment.colour_affine` composes the per-sample colour maps from those means
   (tiny ``N x 3 x 3`` products, as the library);
3. :func:`_warp_colour_blur` writes each output pixel once: for each of the blur's ``k x k``
   taps it resamples the warped image at the (reflected) neighbour, applies the colour map and
   its clamp, and accumulates the tap's weight.

The images are read twice and written once, and nothing waits for the device. Each output pixel
recomputes its neighbours' warp (``k^2`` bilinear reads of 4 pixels each), trading arithmetic,
which a GPU has to spare at these sizes, for memory traffic. Scope: what the bench pipeline
needs (RGB float32 contiguous images, bilinear, constant padding with fill 0, an image blur
with a per-sample kernel); :func:`fused_apply` refuses anything else. ``tools/gpu_kernels.py``
times it against the library; on CPU it runs under Triton's interpreter (``TRITON_INTERPRET=1``),
which is how the test suite checks that it computes what the library does.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import triton
import triton.language as tl
from pruneplug_plugins.blur import _identity
from torch import Tensor

from pruneplug.augment import Compose, colour_affine
from pruneplug.augment.kernels import moved_and_exact
from pruneplug.augment.pipeline import _child

BLOCK = 256  # output pixels a program computes


@triton.jit
def _warped_rgb(src, base, qx, qy, m00, m01, m02, m10, m11, m12, exact, h, w, valid):
    """The warped image's (r, g, b) at output pixels ``(qx, qy)``, clamped to [0, 1] as
    :func:`~pruneplug.augment.warp`: bilinear with zeros outside, or nearest if ``exact``."""
    sx = m00 * qx + m01 * qy + m02
    sy = m10 * qx + m11 * qy + m12
    plane = h * w
    if exact:  # pixel centres land on pixel centres: a copy, bit for bit
        px = tl.floor(sx + 0.5).to(tl.int32)
        py = tl.floor(sy + 0.5).to(tl.int32)
        inside = valid & (px >= 0) & (px < w) & (py >= 0) & (py < h)
        at = src + base + py * w + px
        r = tl.load(at, mask=inside, other=0.0)
        g = tl.load(at + plane, mask=inside, other=0.0)
        b = tl.load(at + 2 * plane, mask=inside, other=0.0)
    else:
        fx = tl.floor(sx)
        fy = tl.floor(sy)
        x0 = fx.to(tl.int32)
        y0 = fy.to(tl.int32)
        ax = sx - fx  # weight of the right column
        ay = sy - fy  # weight of the bottom row
        r = tl.zeros_like(sx)
        g = tl.zeros_like(sx)
        b = tl.zeros_like(sx)
        for dy in tl.static_range(2):
            for dx in tl.static_range(2):
                px = x0 + dx
                py = y0 + dy
                weight = (ax if dx else 1 - ax) * (ay if dy else 1 - ay)
                inside = valid & (px >= 0) & (px < w) & (py >= 0) & (py < h)
                at = src + base + py * w + px
                r += weight * tl.load(at, mask=inside, other=0.0)
                g += weight * tl.load(at + plane, mask=inside, other=0.0)
                b += weight * tl.load(at + 2 * plane, mask=inside, other=0.0)
    r = tl.minimum(tl.maximum(r, 0.0), 1.0)
    g = tl.minimum(tl.maximum(g, 0.0), 1.0)
    b = tl.minimum(tl.maximum(b, 0.0), 1.0)
    return r, g, b


@triton.jit
def _warped_sums(src, matrix, exact_flags, sums, h, w, blocks, BLOCK: tl.constexpr):
    """``sums[n, block, c]``: channel ``c``'s sum over one block of sample ``n``'s warped
    image (program ``(n, block)``)."""
    n = tl.program_id(0)
    block = tl.program_id(1)
    pixel = block * BLOCK + tl.arange(0, BLOCK)
    valid = pixel < h * w
    qx = (pixel % w).to(tl.float32)
    qy = (pixel // w).to(tl.float32)
    m = matrix + n * 9
    r, g, b = _warped_rgb(
        src,
        n.to(tl.int64) * 3 * h * w,
        qx,
        qy,
        tl.load(m),
        tl.load(m + 1),
        tl.load(m + 2),
        tl.load(m + 3),
        tl.load(m + 4),
        tl.load(m + 5),
        tl.load(exact_flags + n) != 0,
        h,
        w,
        valid,
    )
    out = sums + (n * blocks + block) * 3
    tl.store(out, tl.sum(tl.where(valid, r, 0.0), 0))
    tl.store(out + 1, tl.sum(tl.where(valid, g, 0.0), 0))
    tl.store(out + 2, tl.sum(tl.where(valid, b, 0.0), 0))


@triton.jit
def _reflected(i, size, REFLECT: tl.constexpr):
    """Index ``i`` (at most one kernel radius outside ``[0, size)``) mapped into the image as
    ``F.pad`` mode "reflect" (about the edge pixel) or "replicate" (the edge pixel)."""
    if REFLECT:
        i = tl.abs(i)
        return tl.where(i > size - 1, 2 * (size - 1) - i, i)
    return tl.minimum(tl.maximum(i, 0), size - 1)


@triton.jit
def _warp_colour_blur(
    src,
    dst,
    matrix,
    exact_flags,
    colour,
    offset,
    kernels,
    h,
    w,
    K: tl.constexpr,
    REFLECT: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """One block of sample ``n``'s output: ``clamp(sum_ij K_ij clamp(A warp(x)_q + t))`` over
    the ``K x K`` neighbours ``q`` of each pixel (program ``(n, block)``)."""
    n = tl.program_id(0)
    pixel = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    valid = pixel < h * w
    x = pixel % w
    y = pixel // w
    base = n.to(tl.int64) * 3 * h * w
    m = matrix + n * 9
    m00, m01, m02 = tl.load(m), tl.load(m + 1), tl.load(m + 2)
    m10, m11, m12 = tl.load(m + 3), tl.load(m + 4), tl.load(m + 5)
    exact = tl.load(exact_flags + n) != 0
    a = colour + n * 9
    a00, a01, a02 = tl.load(a), tl.load(a + 1), tl.load(a + 2)
    a10, a11, a12 = tl.load(a + 3), tl.load(a + 4), tl.load(a + 5)
    a20, a21, a22 = tl.load(a + 6), tl.load(a + 7), tl.load(a + 8)
    t0, t1, t2 = tl.load(offset + n * 3), tl.load(offset + n * 3 + 1), tl.load(offset + n * 3 + 2)
    acc_r = tl.zeros((BLOCK,), dtype=tl.float32)
    acc_g = tl.zeros((BLOCK,), dtype=tl.float32)
    acc_b = tl.zeros((BLOCK,), dtype=tl.float32)
    for i in tl.static_range(K):
        qy = _reflected(y + (i - K // 2), h, REFLECT).to(tl.float32)
        for j in tl.static_range(K):
            qx = _reflected(x + (j - K // 2), w, REFLECT).to(tl.float32)
            r, g, b = _warped_rgb(
                src, base, qx, qy, m00, m01, m02, m10, m11, m12, exact, h, w, valid
            )
            tap = tl.load(kernels + n * K * K + i * K + j)
            cr = tl.minimum(tl.maximum(a00 * r + a01 * g + a02 * b + t0, 0.0), 1.0)
            cg = tl.minimum(tl.maximum(a10 * r + a11 * g + a12 * b + t1, 0.0), 1.0)
            cb = tl.minimum(tl.maximum(a20 * r + a21 * g + a22 * b + t2, 0.0), 1.0)
            acc_r += tap * cr
            acc_g += tap * cg
            acc_b += tap * cb
    at = dst + base + pixel
    plane = h * w
    tl.store(at, tl.minimum(tl.maximum(acc_r, 0.0), 1.0), mask=valid)
    tl.store(at + plane, tl.minimum(tl.maximum(acc_g, 0.0), 1.0), mask=valid)
    tl.store(at + 2 * plane, tl.minimum(tl.maximum(acc_b, 0.0), 1.0), mask=valid)


def fused_apply(pipeline: Compose, images: Tensor, params: Mapping[str, Tensor]) -> Tensor:
    """``pipeline.transform(images, params)[0]`` for a pipeline of a fused warp run, a colour
    run and a blur (``pruneplug bench augment``'s), in the two kernels of the module docstring.

    Raises ``ValueError`` for a pipeline, image or option outside that scope.
    """
    kinds = [kind for kind, _ in pipeline.stages]
    blur = pipeline.augmenters[pipeline.stages[-1][1][0]]
    if kinds != ["warp", "colour", None] or not hasattr(blur, "kernels"):
        raise ValueError(f"needs stages warp run, colour run, blur; got {pipeline.stages}")
    n, c, h, w = images.shape
    if c != 3 or images.dtype != torch.float32 or not images.is_contiguous():
        raise ValueError("needs contiguous RGB float32 images")
    warps, colours = pipeline.stages[0][1], pipeline.stages[1][1]
    options = pipeline._warp_options(warps) or {}
    if options.get("interpolation", "bilinear") != "bilinear" or (
        options.get("padding_mode", "constant"),
        options.get("fill", 0.0),
    ) != ("constant", 0.0):
        raise ValueError(f"needs bilinear sampling with fill 0, got {options}")
    matrix = pipeline.warps[warps[0]].sampling_matrix(_child(params, warps[0]), images.shape)
    for i in warps[1:]:
        matrix = matrix @ pipeline.warps[i].sampling_matrix(_child(params, i), images.shape)
    matrix = matrix.to(images.dtype).contiguous()
    exact = moved_and_exact(matrix, images.shape)[1].to(torch.int32)
    blocks = triton.cdiv(h * w, BLOCK)
    sums = images.new_empty(n, blocks, 3)
    _warped_sums[(n, blocks)](images, matrix, exact, sums, h, w, blocks, BLOCK=BLOCK)
    stages = [(pipeline.colours[i], _child(params, i)) for i in colours]
    a, t = colour_affine(sums.sum(1) / (h * w), stages)
    sub = _child(params, pipeline.stages[2][1][0])
    kernels = _identity(blur.kernels(sub), sub).to(images.dtype).contiguous()
    k = kernels.shape[-1]
    border = blur.config["border"]
    if border == "reflect" and k // 2 >= min(h, w):
        raise ValueError(f"a {k} x {k} kernel cannot reflect at the border of {h} x {w} images")
    out = torch.empty_like(images)
    _warp_colour_blur[(n, blocks)](
        images,
        out,
        matrix,
        exact,
        a.contiguous(),
        t.contiguous(),
        kernels,
        h,
        w,
        K=k,
        REFLECT=border == "reflect",
        BLOCK=BLOCK,
    )
    return out
