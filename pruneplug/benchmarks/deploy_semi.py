"""D4 of ``pruneplug bench deploy``: where does a 2:4-sparse Linear beat the dense one on a GPU?

2:4 (semi-structured) sparsity keeps 2 of every 4 consecutive input weights, a pattern NVIDIA's
sparse tensor cores (Ampere and later) multiply at up to twice the dense math rate (Mishra et
al., "Accelerating Sparse Deep Neural Networks", arXiv 2104.08378, 2021). Twice the rate is
not twice the speed: the project's issue 15 reports a 2:4 fp16 weight of ``k x k`` times
``k x 1024`` inputs running *slower* than dense on an NVIDIA H200 with PyTorch 2.11, at 0.09x
for ``k = 4096`` and 0.26x for ``k = 8192``. So where 2:4 pays off - shapes, batch sizes,
dtypes, backends - is measured here, not assumed.

Each layer is an ``nn.Linear`` (with bias) as practitioners have them: square ``k x k`` weights
and the MLP projections of BERT-base (``3072x768``, ``768x3072``) and LLaMA-7B (``11008x4096``,
``4096x11008``); weights are written ``out x in``, as ``weight.shape`` reads. Each is pruned 2:4
by pruneplug's ``n_m`` pruner on magnitude scores, its mask made permanent, and converted with
:func:`pruneplug.sparse.to_semi_structured` (``torch.sparse.to_sparse_semi_structured``), so
the 2:4 row is what a user of pruneplug gets; the dense side is that same masked layer, run by
cuBLAS. The input is a batch of tokens, ``batch x in``.

Rows are layer x dtype x backend, columns batch sizes. A **cell is dense time / 2:4 time**
(above 1 the 2:4 layer wins), the median of interleaved repeats
(:func:`pruneplug.metrics.interleaved_latency`, which synchronises the GPU around each call).
Before a cell is timed, the 2:4 layer's output is checked against the dense layer's within the
dtype's tolerance (:data:`TOLERANCE`): a wrong-but-fast kernel raises ``AssertionError`` rather
than being reported. The line under the table (:func:`verdict`) says where 2:4 was faster.

Backends: PyTorch packs a 2:4 weight for **cuSPARSELt** (its default) or for **CUTLASS**
(``SparseSemiStructuredTensor._FORCE_CUTLASS = True``: the switch that PyTorch 2.11 and 2.14
both have). Each backend is first tried on a small layer (:func:`backend_problem`); one that
cannot run here has its rows left out, with a note giving the reason: cuSPARSELt absent from
the build (``torch.backends.cusparselt.is_available()``), or an error such as the one PyTorch's
CUTLASS 2:4 matmul raises on a GPU whose compute capability is not 8.x (its source checks for
8.x, so a Hopper GPU such as the H200 gets cuSPARSELt rows only).

Dtypes: float16 and bfloat16 (:data:`pruneplug.sparse.SEMI_STRUCTURED_DTYPES`). int8 is left
out: it is no plain ``F.linear`` on either side - a dense int8 ``nn.Linear`` has no CUDA kernel
(dense int8 matmuls go through ``torch._int_mm``, with int32 results), a 2:4 int8 weight takes
only int8 inputs, and :func:`~pruneplug.sparse.to_semi_structured` refuses int8 - so there is
no like-for-like pair of layers to time; float8 2:4 runs only through ``torch._scaled_mm``.

On a CPU, or a GPU of compute capability below 8.0, there are no 2:4 kernels: the table is
skipped with a line saying so and how to run it, as it is for ``--dtype float32`` (which the
other deploy tables take): ``pruneplug bench deploy`` runs every module with the same options.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils import prune
from torch.sparse import SparseSemiStructuredTensor

import pruneplug

from ..metrics import interleaved_latency
from ..sparse import to_semi_structured
from .pruning_structured import table

TITLE = "D4  2:4 semi-structured vs dense Linear on GPU: speed ratio by batch size"
#: ``--dtype`` names -> the dtypes 2:4 kernels take.
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}
#: The backends of ``torch.sparse.to_sparse_semi_structured``, as its subclasses name them.
BACKENDS = ("cusparselt", "cutlass")
#: Largest difference allowed between the 2:4 and the dense layer's outputs, relative to the
#: dense output's largest magnitude: 6 to 10 units in the last place of the dtype (both
#: kernels accumulate in float32, in different orders, and round the output); a wrong kernel is
#: off by the order of the output itself.
TOLERANCE = {torch.float16: 1e-2, torch.bfloat16: 5e-2}
#: The ``--dtype`` of the other deploy tables that 2:4 does not take: the table is skipped.
FLOAT32 = "float32"


@dataclass(frozen=True)
class Grid:
    """What one run measures (``quick`` shrinks it for the test suite)."""

    shapes: tuple[tuple[int, int], ...]  # weight shapes, out x in
    batches: tuple[int, ...]
    dtypes: tuple[str, ...]  # when no dtype is given
    repeats: int
    warmup: int


def grid(quick: bool) -> Grid:
    """The full grid (under a minute on an H200 by estimate), or one tiny cell for the tests."""
    if quick:
        return Grid(shapes=((128, 128),), batches=(32,), dtypes=("float16",), repeats=2, warmup=1)
    return Grid(
        shapes=(
            (1024, 1024),
            (4096, 4096),
            (8192, 8192),
            (16384, 16384),
            (3072, 768),  # BERT-base MLP up and down projections
            (768, 3072),
            (11008, 4096),  # LLaMA-7B MLP up and down projections
            (4096, 11008),
        ),
        batches=(1, 16, 128, 1024, 8192),
        dtypes=tuple(DTYPES),
        repeats=10,
        warmup=2,
    )


@dataclass(frozen=True)
class Cell:
    """One measured ratio: dense time / 2:4 time of ``layer`` (``out x in``) at ``batch``."""

    layer: str
    batch: int
    dtype: str
    backend: str
    ratio: float

    @property
    def shown(self) -> float:
        """The ratio as the table prints it (two decimals): what wins and ties are judged on."""
        return round(self.ratio, 2)


def verdict(cells: Sequence[Cell]) -> str:
    """One line saying where 2:4 was faster than dense, computed from ``cells`` alone.

    A cell is a win when its printed ratio is above 1.00 and a tie at exactly 1.00 (the best
    cell, too, is judged on its printed ratio, so the line follows from the table). The line
    counts the wins (by backend when there are several), names the best cell, and gives the
    smallest batch and the smallest weight that won when smaller ones never did.
    """
    if not cells:
        return "no cell was measured: the notes say why"
    best = max(cells, key=lambda c: c.shown)  # the first of equal printed ratios
    where = f"{best.ratio:.2f}x at {best.layer} batch {best.batch} {best.dtype} {best.backend}"
    wins = [c for c in cells if c.shown > 1]
    ties = sum(c.shown == 1 for c in cells)
    tied = f", tied (1.00x) in {ties}" if ties else ""
    if not wins:
        if not ties:
            return f"2:4 was slower than dense in every cell (best {where})"
        slower = len(cells) - ties
        return f"2:4 was never faster than dense: slower in {slower} of {len(cells)} cells{tied}"
    backends = sorted({c.backend for c in cells})
    split = ""
    if len(backends) > 1:
        split = " (" + ", ".join(f"{b} {sum(c.backend == b for c in wins)}" for b in backends) + ")"
    text = f"2:4 faster in {len(wins)} of {len(cells)} cells{split}{tied}, best {where}"
    batch = min(c.batch for c in wins)
    if batch > min(c.batch for c in cells):
        text += f"; never below batch {batch}"

    def size(layer: str) -> int:
        rows, columns = layer.split("x")
        return int(rows) * int(columns)

    smallest = min((c.layer for c in wins), key=size)
    if size(smallest) > min(size(c.layer) for c in cells):
        text += f"; never on a weight smaller than {smallest}"
    return text


def rows_of(cells: Sequence[Cell], batches: Sequence[int]) -> list[list[str]]:
    """Table rows: one per layer, dtype and backend (in measured order), a cell per batch."""
    keyed: dict[tuple[str, str, str], dict[int, str]] = {}
    for c in cells:
        keyed.setdefault((c.layer, c.dtype, c.backend), {})[c.batch] = f"{c.ratio:.2f}"
    return [[*key, *(ratios[b] for b in batches)] for key, ratios in keyed.items()]


def two_four_model(
    out_features: int, in_features: int, device: torch.device, dtype: torch.dtype
) -> nn.Sequential:
    """A one-layer model (``nn.Linear`` with bias), pruned 2:4 by the ``n_m`` pruner on
    magnitude scores, the mask made permanent (a plain weight with zeros, no hook), in eval
    mode: the dense side of a cell, and what :func:`to_semi_structured` converts."""
    model = nn.Sequential(nn.Linear(in_features, out_features, device=device, dtype=dtype))
    pruneplug.get_pruner("n_m")(model, pruneplug.get_scorer("magnitude")(model))
    prune.remove(model[0], "weight")
    return model.eval()


@contextmanager
def forced(backend: str) -> Iterator[None]:
    """``torch.sparse.to_sparse_semi_structured`` packs for ``backend`` inside the block.

    PyTorch picks the subclass (and so the kernels) when it packs a weight: cuSPARSELt unless
    ``SparseSemiStructuredTensor._FORCE_CUTLASS`` is set. The flag is restored on exit.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    saved = SparseSemiStructuredTensor._FORCE_CUTLASS
    SparseSemiStructuredTensor._FORCE_CUTLASS = backend == "cutlass"
    try:
        yield
    finally:
        SparseSemiStructuredTensor._FORCE_CUTLASS = saved


def packed(model: nn.Sequential, backend: str) -> nn.Module:
    """``to_semi_structured(model)`` with its weight packed for ``backend``.

    Raises ``RuntimeError`` if PyTorch packed it for another backend (the rows would then
    measure one backend twice).
    """
    with forced(backend), warnings.catch_warnings():
        # printed once per subclass by PyTorch; the table's notes say what is measured
        warnings.filterwarnings(
            "ignore", message="The PyTorch API of SparseSemiStructuredTensor", category=UserWarning
        )
        fast = to_semi_structured(model)
    weight = fast.get_submodule("0").weight
    got = weight.BACKEND if isinstance(weight, SparseSemiStructuredTensor) else "dense"
    if got != backend:
        raise RuntimeError(
            f"to_semi_structured packed the weight for {got}, not {backend}: this PyTorch "
            "ignores SparseSemiStructuredTensor._FORCE_CUTLASS; measure one backend only"
        )
    return fast


def check_packed(dense: nn.Module, sparse: nn.Module, x: Tensor, label: str) -> float:
    """The largest difference between ``sparse(x)`` and ``dense(x)``, relative to the largest
    magnitude of ``dense(x)``; ``AssertionError`` when it exceeds the dtype's
    :data:`TOLERANCE` (or is not finite), so that a wrong kernel is never timed."""
    with torch.inference_mode():
        want = dense(x).float()
        got = sparse(x).float()
    if got.shape != want.shape:
        raise AssertionError(
            f"{label}: the 2:4 layer returned shape {tuple(got.shape)}, the dense layer "
            f"{tuple(want.shape)}: the 2:4 kernel is wrong here; not timing it"
        )
    scale = want.abs().max().item() or 1.0
    error = (got - want).abs().max().item() / scale
    tolerance = TOLERANCE[x.dtype]
    if not error <= tolerance:  # NaN fails too
        raise AssertionError(
            f"{label}: the 2:4 layer's output differs from the dense masked layer's by {error:.2e} "
            f"of its largest value (tolerance {tolerance:.0e} in {x.dtype}): the 2:4 kernel is "
            "wrong here; not timing it"
        )
    return error


def backend_problem(backend: str, device: torch.device, dtypes: Sequence[str]) -> str | None:
    """Why ``backend`` cannot run 2:4 layers here (one line for the notes), or None.

    cuSPARSELt may be missing from the PyTorch build; otherwise a small 2:4 layer is packed and
    run in each dtype, and the first error is the answer (PyTorch's CUTLASS 2:4 kernels, for
    one, run on GPUs of compute capability 8.x only, and refuse a Hopper GPU).
    """
    if backend == "cusparselt" and not torch.backends.cusparselt.is_available():
        return (
            "this PyTorch build has no cuSPARSELt (torch.backends.cusparselt.is_available() is "
            "False)"
        )
    for name in dtypes:
        model = two_four_model(128, 128, device, DTYPES[name])
        x = torch.zeros(8, 128, device=device, dtype=DTYPES[name])
        try:
            with torch.inference_mode():
                packed(model, backend)(x)
        except (RuntimeError, ValueError, NotImplementedError) as error:
            return f"in {name}, {type(error).__name__}: {str(error).strip().splitlines()[0]}"
    return None


def measure(
    run: Grid, dtypes: Sequence[str], backends: Sequence[str], device: torch.device
) -> tuple[list[Cell], float]:
    """Every cell of ``run`` for ``dtypes`` and ``backends``, and the largest relative output
    difference the checks found."""
    torch.manual_seed(0)
    generator = torch.Generator(device=device).manual_seed(0)
    cells = []
    worst = 0.0
    for out_features, in_features in run.shapes:
        layer = f"{out_features}x{in_features}"
        for name in dtypes:
            dtype = DTYPES[name]
            dense = two_four_model(out_features, in_features, device, dtype)
            for backend in backends:
                sparse = packed(dense, backend)
                for batch in run.batches:
                    x = torch.randn(
                        batch, in_features, device=device, dtype=dtype, generator=generator
                    )
                    label = f"{layer} batch {batch} {name} {backend}"
                    worst = max(worst, check_packed(dense, sparse, x, label))
                    runs = {"dense": (dense, x), "2:4": (sparse, x)}
                    seconds = interleaved_latency(runs, run.repeats, run.warmup)
                    cells.append(
                        Cell(layer, batch, name, backend, seconds["dense"] / seconds["2:4"])
                    )
    return cells, worst


def skip_reason(device: torch.device, dtype: str | None) -> str | None:
    """Why there is no table on ``device`` in ``dtype`` (the line printed instead), or None:
    no 2:4 kernels there, or float32, the dtype the other deploy tables take and 2:4 does not."""
    fix = "rerun with --device cuda on an Ampere-or-later NVIDIA GPU"
    if device.type != "cuda":
        return (
            "D4 skipped: 2:4 sparse kernels run on NVIDIA GPUs of compute capability 8.0+ "
            f"(Ampere or later), and this run is on {device.type}: {fix}"
        )
    capability = torch.cuda.get_device_capability(device)
    if capability < (8, 0):
        return (
            f"D4 skipped: {torch.cuda.get_device_name(device)} has compute capability "
            f"{'.'.join(map(str, capability))}, and 2:4 sparse kernels need 8.0+ (Ampere or "
            f"later): {fix}"
        )
    if dtype == FLOAT32:
        return (
            "D4 skipped: 2:4 layers run in float16 or bfloat16 "
            "(pruneplug.sparse.SEMI_STRUCTURED_DTYPES), not float32: rerun with --dtype float16 "
            "or --dtype bfloat16, or without --dtype for both"
        )
    return None


def semi_table(quick: bool, device: str = "cpu", dtype: str | None = None) -> str:
    """The D4 table on ``device`` for ``dtype`` (both 2:4 dtypes when None), or its skip line."""
    if dtype is not None and dtype not in (*DTYPES, FLOAT32):
        raise ValueError(
            f"dtype {dtype!r}: choose one of {', '.join(DTYPES)} (the dtypes of 2:4 kernels; "
            f"{FLOAT32} skips this table)"
        )
    where = torch.device(device)
    if where.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {device!r}: no CUDA device here; run on an Ampere-or-later NVIDIA GPU "
            "(with --device cpu, D4 is skipped)"
        )
    skip = skip_reason(where, dtype)
    if skip is not None:
        return f"{TITLE}\n{skip}"
    run = grid(quick)
    dtypes = run.dtypes if dtype is None else (dtype,)
    backends, missing = [], []
    for backend in BACKENDS:
        problem = backend_problem(backend, where, dtypes)
        if problem is None:
            backends.append(backend)
        else:
            missing.append(f"{backend} rows left out: {problem}")
    library = (
        f"cuSPARSELt {torch.backends.cusparselt.version()}"
        if torch.backends.cusparselt.is_available()
        else "no cuSPARSELt"
    )
    load = os.getloadavg()[0]
    cells, worst = measure(run, dtypes, backends, where)
    header = ["weight", "dtype", "backend", *(f"batch {b}" for b in run.batches)]
    tolerances = ", ".join(f"{TOLERANCE[DTYPES[d]]:.0e} {d}" for d in dtypes)
    notes = [
        verdict(cells),
        "cells: dense time / 2:4 time of one Linear forward, y = x W^T + b with x batch x in "
        f"(> 1: 2:4 wins), median of {run.repeats} interleaved repeats, each call synchronised, "
        "eager mode (in small cells that is launch and dispatch time); weight: out x in",
        "2:4: pruned by the n_m pruner (2 of every 4 input weights kept, magnitude scores), "
        "converted by pruneplug.sparse.to_semi_structured; dense: the same masked nn.Linear "
        "(cuBLAS); backend: what PyTorch packed the weight for (cusparselt: its default; "
        "cutlass: SparseSemiStructuredTensor._FORCE_CUTLASS)",
        f"every cell's 2:4 output was checked against the dense layer's before timing: largest "
        f"difference {worst:.1e} of the output's largest value (tolerance {tolerances})",
        *missing,
        f"{torch.cuda.get_device_name(where)}, torch {torch.__version__}, {library}; load "
        f"average {load:.2f} before, {os.getloadavg()[0]:.2f} after",
    ]
    return table(TITLE, header, rows_of(cells, run.batches), notes)


def run(quick: bool = False, *, device: str = "cpu", dtype: str | None = None) -> None:
    """Print the D4 table (``quick``: a tiny run for the test suite); on a device without 2:4
    kernels, a line saying the table is skipped and how to run it. ``dtype`` (float16 or
    bfloat16) measures one dtype; by default both."""
    print(semi_table(quick, device, dtype))
