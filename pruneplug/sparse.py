r"""Sparse execution: run pruned Linear layers from ``torch.sparse`` formats, and 2:4 on GPUs.

Pruning with masks zeroes weights but keeps the dense tensor, so a pruned model is exactly as
large and as slow as the dense one. This module stores the zeros away:

* :func:`to_sparse` returns a copy of a model whose ``nn.Linear`` layers are
  :class:`SparseLinear` modules holding the weight (``weight_orig * weight_mask`` for a layer
  pruned with ``torch.nn.utils.prune``, or a weight with plain zeros) in **CSR** (compressed
  sparse rows: the non-zero values, their column indices and one pointer per row) or **BSR**
  (the same over square ``b x b`` blocks: every block holding a non-zero is stored whole).
  :func:`to_dense` turns them back into ``nn.Linear``; the round trip gives back every weight
  bit for bit (a pruned weight reads ``+0.0``).
* :func:`storage_bytes` counts what a weight takes in its format. For an ``R x C`` weight with
  :math:`z` non-zeros, values of :math:`e` bytes and indices of :math:`i` bytes:
  dense :math:`RCe`; CSR :math:`z(e + i) + (R + 1)i`; BSR with ``b x b`` blocks, :math:`k` of
  them stored, :math:`k(b^2 e + i) + (R/b + 1)i`. Indices are ``int32`` (4 bytes; ``int64``
  only for a weight too large for them), so CSR is smaller than a float32 dense weight below
  50 % density. ``torch.save`` writes these bytes plus about 2 KB (zip records, pickle).
* :func:`to_semi_structured` runs 2:4-sparse Linear layers (from the ``n_m`` pruner) on
  NVIDIA's sparse tensor cores with ``torch.sparse.to_sparse_semi_structured`` (fp16/bf16,
  CUDA GPUs of compute capability 8.0+; Mishra et al., "Accelerating Sparse Deep Neural
  Networks", arXiv 2104.08378, 2021).

**Where sparse wins on CPU** (``pruneplug.benchmarks.deploy_sparse`` prints the ratios).
:class:`SparseLinear` computes :math:`y = (W x^\top)^\top + b` with
``torch.addmm(bias, W_sparse, x.T)``, the orientation MKL's sparse-times-dense kernel is fast
in. ``torch.nn.functional.linear(x, W_csr)``, the obvious call, takes a slower path: it does not
beat dense at 95 % sparsity and a batch of 64 (the report of "CSR 2x slower than dense" there),
where :class:`SparseLinear` does by a wide margin; it also fails under ``torch.inference_mode``.
CSR loses at 50 % sparsity, and for a small layer at batch 1, where the dense matrix-vector
product is already cheap; it wins from about 80-90 % at larger batches or larger layers. BSR
only pays off for weights pruned by whole blocks: an unstructured 99 %-sparse weight still has
a non-zero in most 16 x 16 blocks, so BSR stores it nearly dense and runs several times slower.

:class:`SparseLinear` is for inference: its tensors are buffers (the sparsity pattern is fixed),
and it has no hooks of the layer it replaces. Half precision runs on CUDA only (PyTorch's CPU
sparse kernels take float32 and float64).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn.utils import prune

from .plumbing import copy_model, effective_weight, layer_tensor, prunable_layers

#: The sparse formats :func:`to_sparse` converts to.
LAYOUTS = ("csr", "bsr")
Layout = Literal["csr", "bsr"]
#: layout -> the constructor of a tensor in it from (row pointers, column indices, values, size)
_BUILD = {"csr": torch.sparse_csr_tensor, "bsr": torch.sparse_bsr_tensor}

#: Data types of :func:`to_semi_structured` (NVIDIA's 2:4 kernels as PyTorch exposes them).
SEMI_STRUCTURED_DTYPES = (torch.float16, torch.bfloat16)


@contextmanager
def _beta_quiet() -> Iterator[None]:
    """Without PyTorch's one-time "Sparse CSR/BSR tensor support is in beta" warning.

    What this module builds from those tensors is tested here; the warning would otherwise land
    in every notebook that converts a model, with a path that differs between machines.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="Sparse (CSR|BSR) tensor support is in beta", category=UserWarning
        )
        yield


class LeftDenseWarning(UserWarning):
    """A layer was left dense because its shape or contents do not fit the sparse format."""


# --------------------------------------------------------------------------- N:M groups


def nm_groups(weight: Tensor, m: int) -> Tensor:
    """``weight`` (``out x in x *kernel``) as ``out x *kernel x in/m x m``: each last-dim row is
    a group of ``m`` consecutive weights along the input dimension (the input channels at one
    kernel position for a convolution, as NVIDIA's ASP groups them).

    Raises ``ValueError`` when the input dimension is not a multiple of ``m``.
    """
    if weight.dim() < 2 or weight.shape[1] % m:
        raise ValueError(
            f"a weight of shape {tuple(weight.shape)} has no groups of {m} along its input "
            f"dimension (dim 1): it needs at least 2 dimensions and a multiple of {m} there"
        )
    return weight.movedim(1, -1).unflatten(-1, (-1, m))


def is_nm_sparse(weight: Tensor, n: int = 2, m: int = 4) -> bool:
    """Whether every group of ``m`` consecutive weights along the input dimension holds at most
    ``n`` non-zeros (False when the input dimension is not a multiple of ``m``)."""
    if weight.dim() < 2 or weight.shape[1] % m:
        return False
    return bool(((nm_groups(weight, m) != 0).sum(-1) <= n).all())


# --------------------------------------------------------------------------- CSR / BSR


def storage_bytes(tensor: Tensor) -> int:
    """Bytes of ``tensor``'s data in its layout: elements for a dense (strided) tensor; values,
    column indices and row pointers for CSR and BSR (see the module docstring for the formula).
    """
    if tensor.layout == torch.strided:
        return tensor.numel() * tensor.element_size()
    if tensor.layout in (torch.sparse_csr, torch.sparse_bsr):
        parts = (tensor.values(), tensor.col_indices(), tensor.crow_indices())
        return sum(p.numel() * p.element_size() for p in parts)
    raise ValueError(
        f"storage_bytes counts dense, CSR and BSR tensors, got layout {tensor.layout}: convert "
        "with tensor.to_dense() or tensor.to_sparse_csr() first"
    )


def _blocks(blocksize: int | None, layout: str) -> int | None:
    """The checked block side of a BSR conversion; ``None`` for CSR."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r} is not supported: use one of {', '.join(LAYOUTS)}")
    if layout == "csr":
        if blocksize is not None:
            raise ValueError(
                f"blocksize={blocksize!r} is for layout='bsr'; drop it for layout='csr'"
            )
        return None
    if blocksize is None:
        raise ValueError("layout='bsr' needs a block size: give blocksize=16, for example")
    if not isinstance(blocksize, int) or blocksize < 1:
        raise ValueError(
            f"blocksize={blocksize!r} must be a positive int, the side of square blocks (MKL's "
            "CPU kernels take no others), e.g. blocksize=16"
        )
    return blocksize


class SparseLinear(nn.Module):
    """A Linear layer whose weight is stored in CSR or BSR (``torch.sparse``), for inference.

    ``weight`` is an ``out x in`` sparse CSR or BSR tensor; it is kept as three buffers
    (``values``, ``crow_indices``, ``col_indices``), so the module copies, saves, loads and moves
    between devices like any other. :attr:`weight` rebuilds the sparse tensor from them.
    Usually made with :meth:`from_linear` or :func:`to_sparse`.
    """

    values: Tensor
    crow_indices: Tensor
    col_indices: Tensor
    bias: Tensor | None

    def __init__(self, weight: Tensor, bias: Tensor | None = None) -> None:
        super().__init__()
        if weight.layout not in (torch.sparse_csr, torch.sparse_bsr) or weight.dim() != 2:
            raise ValueError(
                f"SparseLinear needs a 2-d CSR or BSR weight, got a {weight.dim()}-d "
                f"{weight.layout} tensor: convert with weight.to_sparse_csr() or "
                "weight.to_sparse_bsr(blocksize), or use SparseLinear.from_linear(layer)"
            )
        self.out_features, self.in_features = weight.shape
        if bias is not None and bias.shape != (self.out_features,):
            raise ValueError(
                f"bias has shape {tuple(bias.shape)}, expected ({self.out_features},): one "
                "entry per output feature"
            )
        self.layout = "csr" if weight.layout == torch.sparse_csr else "bsr"
        parts = (weight.crow_indices(), weight.col_indices(), weight.values())
        try:  # once here: the forward pass rebuilds the weight from the buffers unchecked
            with _beta_quiet():
                _BUILD[self.layout](*parts, weight.shape, check_invariants=True)
        except RuntimeError as error:
            raise ValueError(
                f"the weight's indices are inconsistent ({str(error).splitlines()[0]}): build it "
                "with weight.to_sparse_csr() or weight.to_sparse_bsr(blocksize)"
            ) from error
        self.register_buffer("values", weight.values())
        self.register_buffer("crow_indices", weight.crow_indices())
        self.register_buffer("col_indices", weight.col_indices())
        self.register_buffer("bias", bias)

    @classmethod
    def from_linear(
        cls, layer: nn.Module, layout: Layout = "csr", blocksize: int | None = None
    ) -> SparseLinear:
        """A :class:`SparseLinear` computing what ``layer`` (an ``nn.Linear``) computes.

        The weight is the one the forward pass uses (``weight_orig * weight_mask`` for a layer
        pruned with ``torch.nn.utils.prune``); its zeros are not stored. BSR needs a
        ``blocksize``, the side of square blocks, that divides both dimensions of the weight.
        ``layer`` is only read.
        """
        block = _blocks(blocksize, layout)
        if not isinstance(layer, nn.Linear):
            raise TypeError(
                f"SparseLinear converts nn.Linear layers, got {type(layer).__name__}: "
                "convolutions and other layers stay dense"
            )
        weight = effective_weight(layer)
        if weight.device.type == "cpu" and weight.dtype not in (torch.float32, torch.float64):
            raise ValueError(
                f"PyTorch's CPU sparse matmul takes float32 or float64, and the layer is "
                f"{weight.dtype}: convert the model with model.float() first (half precision "
                "runs sparse on CUDA)"
            )
        if block is not None and (weight.shape[0] % block or weight.shape[1] % block):
            raise ValueError(
                f"a {weight.shape[0]} x {weight.shape[1]} weight does not split into "
                f"{block} x {block} blocks: give a blocksize that divides both dimensions, or "
                "use layout='csr'"
            )
        with _beta_quiet():
            sparse = weight.to_sparse_csr() if block is None else weight.to_sparse_bsr(block)
        index = torch.int32 if max(*weight.shape, sparse.values().numel()) < 2**31 else torch.int64
        sparse = _BUILD[layout](
            sparse.crow_indices().to(index),
            sparse.col_indices().to(index),
            sparse.values(),
            sparse.shape,
            check_invariants=False,  # made by torch's conversion; __init__ checks them
        )
        bias: Tensor | None = layer.bias
        if hasattr(layer, "bias_orig"):  # a pruned bias: as the forward pass computes it
            bias = layer_tensor(layer, "bias_orig") * layer_tensor(layer, "bias_mask")
        module = cls(sparse, None if bias is None else bias.detach().clone())
        module.train(layer.training)
        return module

    @property
    def weight(self) -> Tensor:
        """The ``out x in`` weight as a sparse CSR or BSR tensor (sharing the buffers)."""
        with _beta_quiet():
            return _BUILD[self.layout](
                self.crow_indices,
                self.col_indices,
                self.values,
                (self.out_features, self.in_features),
                check_invariants=False,  # checked in __init__
            )

    def forward(self, x: Tensor) -> Tensor:
        """``x @ weight.T + bias`` over the last dimension of ``x``, as ``nn.Linear``."""
        if x.dim() == 0 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"SparseLinear({self.in_features} -> {self.out_features}) got input of shape "
                f"{tuple(x.shape)}: the last dimension must be {self.in_features}"
            )
        columns = x.reshape(-1, self.in_features).T  # in x N, column-major: MKL's fast case
        if self.bias is None:
            out = torch.mm(self.weight, columns)
        else:
            out = torch.addmm(self.bias[:, None], self.weight, columns)
        return out.T.contiguous().reshape(*x.shape[:-1], self.out_features)

    def to_linear(self) -> nn.Linear:
        """The equivalent ``nn.Linear``, with exactly the stored weights (zeros made dense)."""
        layer = nn.utils.skip_init(
            nn.Linear,
            self.in_features,
            self.out_features,
            bias=self.bias is not None,
            device=self.values.device,
            dtype=self.values.dtype,
        )
        layer.weight = nn.Parameter(self.weight.to_dense())
        if self.bias is not None:
            layer.bias = nn.Parameter(self.bias.clone())
        layer.train(self.training)
        return layer

    def extra_repr(self) -> str:
        block = "" if self.layout == "csr" else f", blocksize={self.values.shape[1]}"
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"layout={self.layout}{block}, nnz={int(self.values.numel())}, "
            f"bias={self.bias is not None}"
        )


def _linear_layers(model: nn.Module) -> dict[str, nn.Linear]:
    """The model's prunable ``nn.Linear`` layers by name; ``ValueError`` when it has none."""
    layers = {n: m for n, m in prunable_layers(model).items() if isinstance(m, nn.Linear)}
    if not layers:
        raise ValueError(
            f"{type(model).__name__} has no nn.Linear layer to convert: sparse execution covers "
            "Linear layers (convolutions stay dense)"
        )
    return layers


def _replace(model: nn.Module, new: dict[int, nn.Module]) -> nn.Module:
    """``model`` with every sub-module whose ``id`` is a key of ``new`` replaced, on every path
    that reaches it (a layer shared by two parents is replaced in both)."""
    if id(model) in new:
        return new[id(model)]
    for parent in model.modules():
        for name, child in list(parent._modules.items()):  # named_children() skips repeats
            if child is not None and id(child) in new:
                setattr(parent, name, new[id(child)])
    return model


def _sparsity(weight: Tensor) -> float:
    """Fraction of the entries of ``weight`` that are zero."""
    return float((weight == 0).sum()) / weight.numel()


def to_sparse(
    model: nn.Module,
    layout: Layout = "csr",
    *,
    blocksize: int | None = None,
    min_sparsity: float = 0.0,
) -> nn.Module:
    """A copy of ``model`` whose ``nn.Linear`` layers run from a sparse ``layout``.

    Every Linear layer whose weight (masks applied) is at least ``min_sparsity`` zeros becomes a
    :class:`SparseLinear` in ``layout`` (``"csr"``, or ``"bsr"`` with ``blocksize``); the others
    and every other layer stay as they are. Use ``min_sparsity`` to keep layers dense where
    sparse loses (see :mod:`pruneplug.benchmarks.deploy_sparse`). ``model`` is not modified. Raises
    ``ValueError`` for an unknown layout, a blocksize that does not divide a converted layer, a
    half-precision layer on CPU, or when no layer qualifies.
    """
    _blocks(blocksize, layout)
    if not 0.0 <= min_sparsity <= 1.0:
        raise ValueError(f"min_sparsity={min_sparsity!r} must be a fraction in [0, 1]")
    duplicate = copy_model(model)
    layers = _linear_layers(duplicate)
    chosen = {n: m for n, m in layers.items() if _sparsity(effective_weight(m)) >= min_sparsity}
    if not chosen:
        sparsest = max(layers, key=lambda n: _sparsity(effective_weight(layers[n])))
        raise ValueError(
            f"no Linear layer is at least {min_sparsity:.0%} sparse (the sparsest, {sparsest!r}, "
            f"is {_sparsity(effective_weight(layers[sparsest])):.1%}): prune first or lower "
            "min_sparsity"
        )
    new: dict[int, nn.Module] = {}
    for name, layer in chosen.items():
        try:
            new[id(layer)] = SparseLinear.from_linear(layer, layout, blocksize)
        except (ValueError, TypeError) as error:
            raise type(error)(f"layer {name!r}: {error}") from error
    return _replace(duplicate, new)


def to_dense(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every :class:`SparseLinear` turned back into ``nn.Linear``
    (:meth:`SparseLinear.to_linear`); ``model`` is not modified. Raises ``ValueError`` when it
    holds no :class:`SparseLinear`."""
    if not any(isinstance(m, SparseLinear) for m in model.modules()):
        raise ValueError(
            f"{type(model).__name__} holds no SparseLinear layer: nothing to make dense "
            "(to_sparse makes them)"
        )
    duplicate = copy_model(model)
    sparse = [m for m in duplicate.modules() if isinstance(m, SparseLinear)]
    return _replace(duplicate, {id(m): m.to_linear() for m in sparse})


# --------------------------------------------------------------------------- 2:4 on CUDA


def to_semi_structured(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose 2:4-sparse Linear layers run on NVIDIA's sparse tensor cores.

    Each ``nn.Linear`` whose weight (masks applied) has at most 2 non-zeros in every group of 4
    along its input dimension (``get_pruner("n_m")`` makes them) gets its weight compressed with
    ``torch.sparse.to_sparse_semi_structured``: half the values plus 2-bit indices, and matmuls
    that skip the zeros. The model must be on a CUDA GPU of compute capability 8.0+ (Ampere or
    later) in float16 or bfloat16. Linear layers that are not 2:4 sparse, or whose shape the
    kernels do not take (multiples of 16 to 64 depending on the backend), stay dense with a
    :class:`LeftDenseWarning`. ``model`` is not modified.

    Raises ``RuntimeError`` off CUDA (there is no CPU kernel: run the layers as CSR with
    :func:`to_sparse`, or dense) and ``ValueError`` for another dtype or when no layer is 2:4.
    """
    layers = _linear_layers(model)
    for name, layer in layers.items():
        device = layer_tensor(layer, "weight").device
        if device.type != "cuda":
            raise RuntimeError(
                f"to_semi_structured needs the model on a CUDA GPU (2:4 kernels run on NVIDIA "
                f"sparse tensor cores), but layer {name!r} is on {device}: move it with "
                "model.cuda().half(); on CPU, run the layers as CSR with "
                "pruneplug.sparse.to_sparse(model) or keep them dense"
            )
        if torch.cuda.get_device_capability(device) < (8, 0):
            raise RuntimeError(
                f"to_semi_structured needs compute capability 8.0+ (Ampere or later), and "
                f"{torch.cuda.get_device_name(device)} has "
                f"{'.'.join(map(str, torch.cuda.get_device_capability(device)))}: keep the "
                "layers dense, or use to_sparse for CSR"
            )
        dtype = layer_tensor(layer, "weight").dtype
        if dtype not in SEMI_STRUCTURED_DTYPES:
            raise ValueError(
                f"layer {name!r} is {dtype}; 2:4 kernels take float16 or bfloat16: convert "
                "with model.half() or model.to(torch.bfloat16) first"
            )
    duplicate = copy_model(model)
    left: dict[str, str] = {}
    for name, layer in _linear_layers(duplicate).items():
        weight = effective_weight(layer)
        if not is_nm_sparse(weight, 2, 4):
            left[name] = "not 2:4 sparse"
            continue
        try:
            packed = torch.sparse.to_sparse_semi_structured(weight.contiguous())
        except RuntimeError as error:
            left[name] = str(error).splitlines()[0]
            continue
        for hook in list(layer._forward_pre_hooks.values()):
            if isinstance(hook, prune.BasePruningMethod):
                prune.remove(layer, hook._tensor_name)
        layer.weight = nn.Parameter(packed, requires_grad=False)
    if len(left) == len(layers):
        raise ValueError(
            "no Linear layer could be converted ("
            + "; ".join(f"{n!r}: {why}" for n, why in left.items())
            + "): prune 2:4 first with pruneplug.get_pruner('n_m')(model, scores)"
        )
    if left:
        warnings.warn(
            "to_semi_structured left these Linear layers dense: "
            + "; ".join(f"{n!r} ({why})" for n, why in left.items()),
            LeftDenseWarning,
            stacklevel=2,
        )
    return duplicate
