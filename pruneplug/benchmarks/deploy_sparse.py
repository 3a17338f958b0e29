"""D3 of ``pruneplug bench deploy``: when does a sparse Linear layer beat the dense one on CPU?

A square float32 ``nn.Linear`` with a random N(0, 1) weight is pruned to each sparsity, then
timed against the same layer run from a sparse format, at each batch size (median of
interleaved repeats, as :func:`~pruneplug.metrics.interleaved_latency`
times them). Each cell is **dense time / sparse time**: above 1 the sparse layer wins. The last
column is the weight's storage relative to the dense weight
(:func:`pruneplug.sparse.storage_bytes`).

Formats (rows):

* ``csr F.linear``: the anchor, ``torch.nn.functional.linear(x, W.to_sparse_csr(), b)`` - the
  obvious call, with torch's default ``int64`` indices;
* ``csr``: :class:`pruneplug.sparse.SparseLinear` (``addmm(b, W, x.T)``, ``int32`` indices);
* ``bsr 16``: the same unstructured weights stored in 16 x 16 blocks;
* ``bsr 16 blocks``: a weight pruned by whole 16 x 16 blocks (the pattern BSR is made for).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..metrics import interleaved_latency
from ..sparse import Layout, SparseLinear, storage_bytes
from .pruning_structured import table

#: Block size of the BSR rows.
BLOCK = 16
#: Row name -> (layout, block-pruned weight).
FORMATS: dict[str, tuple[Layout, bool]] = {
    "csr F.linear": ("csr", False),
    "csr": ("csr", False),
    f"bsr {BLOCK}": ("bsr", False),
    f"bsr {BLOCK} blocks": ("bsr", True),
}


@dataclass(frozen=True)
class Grid:
    """What one run measures (``quick`` shrinks it for the test suite)."""

    sizes: tuple[int, ...]
    sparsities: tuple[float, ...]
    batches: tuple[int, ...]
    repeats: int
    warmup: int


def grid(quick: bool) -> Grid:
    if quick:
        return Grid(sizes=(64,), sparsities=(0.5, 0.9), batches=(1, 4), repeats=2, warmup=1)
    return Grid(
        sizes=(512, 2048),
        sparsities=(0.5, 0.8, 0.9, 0.95, 0.99),
        batches=(1, 16, 256),
        repeats=15,
        warmup=2,
    )


def pruned_linear(
    size: int, sparsity: float, blocks: bool, generator: torch.Generator
) -> nn.Linear:
    """A ``size x size`` Linear whose weight has exactly ``round(sparsity * count)`` of its
    entries (``blocks``: of its ``BLOCK x BLOCK`` blocks) zero, at random places."""
    layer = nn.Linear(size, size)
    side = size // BLOCK if blocks else size
    count = side * side
    keep = torch.ones(count, dtype=torch.bool)
    keep[torch.randperm(count, generator=generator)[: round(sparsity * count)]] = False
    mask = keep.view(side, side)
    if blocks:
        mask = mask.repeat_interleave(BLOCK, 0).repeat_interleave(BLOCK, 1)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(size, size, generator=generator) * mask)
        layer.bias.copy_(torch.randn(size, generator=generator))
    return layer


class FunctionalCSR(nn.Module):
    """The anchor: ``F.linear`` with a CSR weight (torch's default conversion).

    It runs under ``no_grad`` rather than the timer's ``inference_mode``, where PyTorch refuses
    it ("Cannot set version_counter for inference tensor"); :class:`SparseLinear` runs in both.
    """

    def __init__(self, layer: nn.Linear) -> None:
        super().__init__()
        self.weight = layer.weight.detach().to_sparse_csr()
        self.bias = layer.bias.detach()

    def forward(self, x: Tensor) -> Tensor:
        with torch.inference_mode(False), torch.no_grad():
            return F.linear(x, self.weight, self.bias)


def sparse_table(quick: bool) -> str:
    """The latency table: rows format x sparsity (per layer size), columns batch sizes."""
    run = grid(quick)
    load = os.getloadavg()[0]
    generator = torch.Generator().manual_seed(0)
    rows = []
    for size in run.sizes:
        for fmt, (layout, blocks) in FORMATS.items():
            for sparsity in run.sparsities:
                dense = pruned_linear(size, sparsity, blocks, generator).eval()
                sparse: FunctionalCSR | SparseLinear = (
                    FunctionalCSR(dense)
                    if fmt == "csr F.linear"
                    else SparseLinear.from_linear(dense, layout, BLOCK if layout == "bsr" else None)
                )
                ratios = []
                for batch in run.batches:
                    x = torch.randn(batch, size, generator=generator)
                    runs: dict[str, tuple[nn.Module, Tensor]] = {
                        "dense": (dense, x),
                        "sparse": (sparse, x),
                    }
                    seconds = interleaved_latency(runs, run.repeats, run.warmup)
                    ratios.append(f"{seconds['dense'] / seconds['sparse']:.2f}")
                stored = storage_bytes(sparse.weight) / storage_bytes(dense.weight)
                rows.append([f"{size}x{size}", fmt, f"{sparsity:.0%}", *ratios, f"{stored:.2f}"])
    header = ["layer", "format", "sparsity", *(f"batch {b}" for b in run.batches), "bytes"]
    notes = [
        "cells: dense time / sparse time of one float32 Linear forward (> 1: sparse wins), "
        f"median of {run.repeats} interleaved repeats; bytes: weight storage / dense weight",
        "csr F.linear: F.linear(x, W.to_sparse_csr(), b), the anchor; csr, bsr: "
        f"pruneplug.sparse.SparseLinear (addmm(b, W, x.T), int32 indices); bsr {BLOCK}: the same "
        f"unstructured weights in {BLOCK}x{BLOCK} blocks; bsr {BLOCK} blocks: whole blocks pruned",
        f"{torch.get_num_threads()} thread(s); load average {load:.2f} before, "
        f"{os.getloadavg()[0]:.2f} after (the machine is shared: timings are noisy under load)",
    ]
    title = "D3  sparse vs dense Linear on CPU: speed ratio by batch size"
    return table(title, header, rows, notes)


def run(quick: bool = False) -> None:
    """Print the sparse-execution table (``quick``: a tiny run for the test suite)."""
    print(sparse_table(quick))
