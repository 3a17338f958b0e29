"""Torch plumbing that the core, the built-in plugins and third-party plugins share (public API).

What a scorer, pruner or training loop needs from a model besides its own method, written once:

* :func:`prunable_layers` - the Linear and Conv layers whose ``weight`` pruneplug scores and
  prunes, by qualified name;
* :func:`prunable_tensors` - the other weights pruneplug masks: attention's ``in_proj_weight``,
  recurrent layers' weights and embeddings, by qualified parameter name;
  :func:`prunable_targets` - both, as ``name -> (module, attribute)``;
* :func:`layer_tensor` - a layer's ``weight`` (or other tensor attribute), checked and typed as
  a tensor;
* :func:`effective_weight` - a layer's weight as its forward pass uses it (``weight_orig *
  weight_mask`` for a layer pruned with ``torch.nn.utils.prune``);
* :func:`refresh_masked_weights` - recompute the masked ``weight`` of pruned layers outside
  autograd (after a prune or an optimiser step);
* :func:`copy_model` - ``copy.deepcopy`` that also copies a masked model mid-training;
  :func:`remove_masks` - make every mask of a model permanent;
* :func:`evaluation_mode` - eval mode for a block, every module's own mode restored after;
* :func:`model_device` - where a model's parameters live;
* :func:`uniform` - per-sample draws in [low, high) from a generator, for augmenters;
* :func:`constant` - a small tensor of fixed numbers on a device, made once (augmenters' per-call
  constants: a tensor made from host data is a copy that makes a GPU call wait);
* :func:`take_batches`, :func:`batch_loss`, :func:`scalar_loss`, :func:`max_batches_param` -
  for scorers that need data: checked ``(inputs, targets)`` batches on the model's device, the
  loss of a batch (refusing one that does not fit the model), a loss reduced to a scalar, and
  the usual "how many batches" parameter.

``Batch`` and ``LossFn`` are the type aliases of the plugin methods.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from itertools import chain, islice

import torch
from torch import Tensor, nn
from torch.nn.utils import prune

from .params import Param

Batch = tuple[Tensor, Tensor]
LossFn = Callable[[Tensor, Tensor], Tensor]

#: Layer types whose ``weight`` scorers score and pruners prune.
PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def prunable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The model's prunable layers (Linear and Conv), by qualified name, in definition order.

    The ``out_proj`` of an ``nn.MultiheadAttention`` is left out: attention reads that weight
    directly instead of calling the layer, so a mask (a forward pre-hook) would never apply and
    a masked ``out_proj`` breaks a plain training loop's second ``backward()``.
    Raises ``ValueError`` when there are none, since no scorer or pruner can act on such a
    model, and for a model on the meta device, whose weights have no values to score.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected a torch.nn.Module, got {type(model).__name__}: pass the model")
    if any(p.is_meta for p in model.parameters()):
        raise ValueError(
            f"{type(model).__name__} is on the meta device (shapes without values): materialise "
            "it first, e.g. model.to_empty(device='cpu'), and load its weights"
        )
    attention = {n for n, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)}
    layers = {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, PRUNABLE_TYPES) and name.rpartition(".")[0] not in attention
    }
    if not layers:
        raise ValueError(
            f"{type(model).__name__} has no prunable layers: pruneplug prunes the weights of "
            f"{', '.join(t.__name__ for t in PRUNABLE_TYPES)} modules; add one or pass the "
            "sub-module that holds them"
        )
    return layers


#: Modules whose weights are masked as tensors of their own (:func:`prunable_tensors`).
TENSOR_OWNERS: tuple[type[nn.Module], ...] = (nn.MultiheadAttention, nn.RNNBase, nn.Embedding)


def prunable_tensors(model: nn.Module) -> dict[str, tuple[nn.Module, str]]:
    """Weights outside the Linear and Conv layers that scorers score and pruners mask.

    By qualified parameter name (``"encoder.0.self_attn.in_proj_weight"``,
    ``"rnn.weight_hh_l0"``, ``"embedding.weight"``) -> ``(owning module, attribute name)``, in
    definition order:

    * ``nn.MultiheadAttention``: ``in_proj_weight`` (or ``q/k/v_proj_weight`` when keys and
      values have other widths). Its ``out_proj`` is **not** prunable: attention reads that
      weight directly instead of calling the layer, so a mask would never apply;
    * ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN``: every ``weight_ih_l*`` and ``weight_hh_l*`` (the
      layer keeps its flat weight list in step with a mask, so the forward pass uses it);
    * ``nn.Embedding``: ``weight`` (one row per token).

    Masks on them follow ``torch.nn.utils.prune``'s convention (``<name>_orig``,
    ``<name>_mask``). Biases are never pruned. Empty for MLPs and CNNs.
    """
    found: dict[str, tuple[nn.Module, str]] = {}
    for owner, module in model.named_modules():
        if isinstance(module, nn.MultiheadAttention):
            names = ["in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight"]
        elif isinstance(module, nn.RNNBase):
            names = [n for n in module._flat_weights_names if n.startswith("weight_")]
        elif isinstance(module, nn.Embedding):
            names = ["weight"]
        else:
            continue
        for name in names:
            if isinstance(getattr(module, name, None), Tensor):
                found[f"{owner}.{name}" if owner else name] = (module, name)
    return found


def prunable_targets(model: nn.Module) -> dict[str, tuple[nn.Module, str]]:
    """Everything a mask can go on, as ``name -> (module, attribute)``: each prunable layer by
    its name with ``"weight"``, then each of :func:`prunable_tensors` by its parameter name.

    The keys of ``Scores.weight`` and ``Scores.tensor`` together; the state-dict key of a
    target's unmasked tensor is ``f"{name}.weight"`` for a layer and ``name`` for a tensor.
    """
    targets = {name: (layer, "weight") for name, layer in prunable_layers(model).items()}
    return {**targets, **prunable_tensors(model)}


def effective_tensor(module: nn.Module, name: str) -> Tensor:
    """``module.<name>`` as the forward pass uses it, detached: ``<name>_orig * <name>_mask``
    when ``torch.nn.utils.prune`` masks it, computed now (see :func:`effective_weight`)."""
    if hasattr(module, f"{name}_orig"):
        orig, mask = layer_tensor(module, f"{name}_orig"), layer_tensor(module, f"{name}_mask")
        return (orig * mask).detach()
    return layer_tensor(module, name).detach()


def layer_tensor(layer: nn.Module, name: str = "weight") -> Tensor:
    """``layer.<name>`` (e.g. its ``weight``), checked to be a tensor.

    ``nn.Module`` attributes are typed ``Tensor | Module``; this is where a layer's parameter
    is read as the tensor it must be, with an error naming the layer if it is not.
    """
    value = getattr(layer, name, None)
    if not isinstance(value, Tensor):
        raise TypeError(f"{type(layer).__name__}.{name} is {value!r}, not a tensor")
    return value


def effective_weight(layer: nn.Module) -> Tensor:
    """``layer``'s weight as its forward pass uses it, detached.

    For a layer pruned with ``torch.nn.utils.prune`` that is ``weight_orig * weight_mask``,
    computed now (the ``weight`` attribute is the forward pre-hook's copy from the last forward
    pass, stale after an update); otherwise ``weight``.
    """
    return effective_tensor(layer, "weight")


def refresh_masked_weights(model: nn.Module) -> None:
    """Recompute ``weight = weight_orig * weight_mask`` of pruned layers, outside autograd.

    ``torch.nn.utils.prune`` recomputes the masked tensor only in a forward pre-hook, so after an
    optimiser step ``module.weight`` is one step stale until the next forward; scorers and
    metrics that read it between epochs must see the current values. And a ``weight`` computed
    with autograd on (by ``prune.custom_from_mask``, or left over from a training forward) is a
    non-leaf tensor, which ``copy.deepcopy`` of the model refuses; recomputed here it is a plain
    tensor. Every pruner call ends with this (:class:`~pruneplug.Pruner`).
    """
    with torch.no_grad():
        for module in model.modules():
            for hook in _mask_hooks(module):
                hook(module, ())


def _mask_hooks(module: nn.Module) -> list[prune.BasePruningMethod]:
    """The ``torch.nn.utils.prune`` forward pre-hooks of ``module`` (one per masked tensor)."""
    hooks = module._forward_pre_hooks.values()
    return [hook for hook in hooks if isinstance(hook, prune.BasePruningMethod)]


def copy_model(model: nn.Module) -> nn.Module:
    """``copy.deepcopy(model)``, also for a masked model whose masked tensors are not leaves.

    ``torch.nn.utils.prune`` keeps a masked ``weight = weight_orig * weight_mask`` as a plain
    attribute that its forward pre-hook recomputes; computed with autograd on (by the prune
    itself, or by a training step's forward pass) it is not a leaf tensor, and deepcopy refuses
    those. The copy gets it recomputed from its ``_orig`` and mask (current also after an
    optimiser step); ``model`` is only read.
    """
    memo: dict[int, object] = {}
    for module in model.modules():
        for hook in _mask_hooks(module):
            derived = module.__dict__.get(hook._tensor_name)
            if isinstance(derived, Tensor):
                memo[id(derived)] = derived.detach()  # replaced below: no need to copy it
    out = copy.deepcopy(model, memo)
    refresh_masked_weights(out)
    return out


def remove_masks(model: nn.Module) -> nn.Module:
    """Make every ``torch.nn.utils.prune`` mask of ``model`` permanent, in place
    (``prune.remove``: a pruned weight becomes a plain zero, the outputs stay the same);
    returns ``model``."""
    for module in model.modules():
        for hook in _mask_hooks(module):
            prune.remove(module, hook._tensor_name)
    return model


@contextmanager
def evaluation_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the block, then restore every sub-module's own mode."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def model_device(model: nn.Module, default: torch.device | None = None) -> torch.device:
    """Where ``model`` computes: the device of its first parameter (or buffer).

    A model with neither has no device of its own: ``default`` then (the CPU when ``None``).
    """
    first = next(chain(model.parameters(), model.buffers()), None)
    if first is not None:
        return first.device
    return default if default is not None else torch.device("cpu")


def max_batches_param(default: int) -> Param:
    """The ``max_batches`` parameter of scorers that average over the first batches."""
    return Param(
        "max_batches", int, default, low=1, help="number of batches (from the start) to average"
    )


def take_batches(batches: Iterable[Batch], max_batches: int, device: torch.device) -> list[Batch]:
    """The first ``max_batches`` (inputs, targets) pairs of ``batches``, on ``device``.

    Collected once, so a scorer that passes over them several times sees the same batches even
    when ``batches`` is a one-shot iterator or a shuffling loader.
    """
    taken: list[Batch] = []
    for i, batch in enumerate(islice(iter(batches), max_batches)):
        if not (
            isinstance(batch, tuple | list)
            and len(batch) == 2
            and all(isinstance(t, Tensor) for t in batch)
        ):
            raise ValueError(
                f"batch {i} is a {type(batch).__name__}, not an (inputs, targets) pair of "
                "tensors: pass a DataLoader over a TensorDataset or a list of (x, y) tuples"
            )
        inputs, targets = batch
        if len(inputs) == 0 or len(inputs) != len(targets):
            raise ValueError(
                f"batch {i} has {len(inputs)} inputs and {len(targets)} targets: each batch "
                "needs at least one sample and one target per input"
            )
        taken.append((inputs.to(device), targets.to(device)))
    if not taken:
        raise ValueError("batches yielded nothing: give at least one (inputs, targets) batch")
    return taken


def scalar_loss(loss: Tensor) -> Tensor:
    """``loss``, after checking that ``loss_fn`` reduced it to a scalar over the batch."""
    if not isinstance(loss, Tensor) or loss.dim() != 0:
        shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
        raise ValueError(
            f"loss_fn returned {shape}, not a scalar tensor: reduce the loss over the batch "
            "(e.g. reduction='mean')"
        )
    return loss


def uniform(
    n: int, low: float, high: float, generator: torch.Generator, device: torch.device | str
) -> Tensor:
    """``n`` draws from U[low, high) with ``generator`` (the per-sample draw of most augmenters)."""
    return low + (high - low) * torch.rand(n, generator=generator, device=device)


#: A tuple of numbers, or of such tuples (a vector, a matrix, ...).
Numbers = tuple[float, ...] | tuple["Numbers", ...]


def constant(
    values: Numbers, device: torch.device | str, dtype: torch.dtype = torch.float32
) -> Tensor:
    """``torch.tensor(values, dtype=dtype, device=device)``, made once per arguments and shared.

    ``torch.tensor(..., device="cuda")`` copies host memory to the GPU, and that copy waits for
    everything queued on the GPU: a per-call constant made that way stalls every call. Made here
    once, it stays on the device. ``values`` is a tuple (of tuples) of numbers; the result is
    shared by every caller, so never write to it in place (read it, expand it, compute from it).
    Under ``torch.compile`` it is a plain ``torch.tensor``: the compiled graph holds it.
    """
    if torch.compiler.is_compiling():
        return torch.tensor(values, dtype=dtype, device=device)
    return _constant(values, torch.device(device), dtype)


@lru_cache(maxsize=1024)
def _constant(values: Numbers, device: torch.device, dtype: torch.dtype) -> Tensor:
    # a normal tensor even when first asked for under torch.inference_mode: an inference tensor
    # could never be saved for backward by the differentiable calls that share it later
    with torch.inference_mode(False):
        return torch.tensor(values, dtype=dtype, device=device)


def batch_loss(
    forward: Callable[[Tensor], Tensor],
    inputs: Tensor,
    targets: Tensor,
    loss_fn: LossFn,
    index: int,
) -> Tensor:
    """``loss_fn(forward(inputs), targets)`` as a checked scalar, for scorers that need data.

    A batch that does not fit the model (inputs of the wrong width, class indices at or above
    its number of outputs) is refused with its index, its shapes and the fix, instead of a raw
    kernel error from deep inside torch.
    """
    try:
        loss = loss_fn(forward(inputs), targets)
    except (RuntimeError, IndexError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(
            f"batch {index} (inputs {tuple(inputs.shape)}, targets {tuple(targets.shape)}) does "
            f"not fit the model ({first}): score with batches of the data the model was trained "
            "on, with class indices below its number of outputs"
        ) from error
    return scalar_loss(loss)
