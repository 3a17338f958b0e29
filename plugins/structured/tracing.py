"""Tracing a model into Torch-Pruning's dependency graph, and checking the pruned model
against the shapes the original returned."""

from __future__ import annotations

import torch
import torch_pruning as tp
from torch import Tensor, nn

from .recurrent import RECURRENT, RECURRENT_TYPES, as_one_op, is_recurrent


def output_shapes(output: object) -> list[tuple[int, ...]]:
    """Shapes of every tensor in a model output (tensor, tuple, list or dict of tensors)."""
    return [tuple(t.shape) for t in tp.utils.flatten_as_list(output)]


def trace(model: nn.Module, x: Tensor) -> tp.DependencyGraph:
    """Torch-Pruning's dependency graph of ``model`` on input ``x`` (a clear error if it fails).

    Recurrent layers are traced as single operations (:func:`as_one_op`) with
    :class:`RecurrentPruner` as their pruning functions.
    """
    hooks = [m.register_forward_hook(as_one_op) for m in model.modules() if is_recurrent(m)]
    try:
        with torch.enable_grad():  # the graph is read from autograd, even under torch.no_grad
            return tp.DependencyGraph().build_dependency(
                model,
                x,
                verbose=False,
                customized_pruners={cls: RECURRENT for cls in RECURRENT_TYPES},
            )
    except Exception as error:
        raise ValueError(
            f"Torch-Pruning could not trace {type(model).__name__} "
            f"({type(error).__name__}: {error}): the structured pruner needs a forward "
            "pass that autograd can follow; prune the sub-module that can be traced"
        ) from error
    finally:
        for hook in hooks:
            hook.remove()


def buffers_as_parameters(model: nn.Module) -> list[tuple[nn.Module, str, bool]]:
    """Make the floating-point buffers the graph would not see parameters, for tracing.

    Torch-Pruning follows parameters only, so a buffer added to the channels (the fixed
    sinusoidal positions of ``transformer_classifier``) would keep its width and break the
    forward. The buffers of modules with a pruning function of their own (batch norm's running
    statistics) stay. Returns (module, name, persistent) of each, for
    :func:`parameters_as_buffers`.
    """
    promoted = []
    for module in model.modules():
        if tp.ops.module2type(module) in tp.pruner.function.PrunerBox or is_recurrent(module):
            continue
        for name, buffer in list(module.named_buffers(recurse=False)):
            if buffer.is_floating_point():
                persistent = name not in module._non_persistent_buffers_set
                delattr(module, name)
                module.register_parameter(name, nn.Parameter(buffer))
                promoted.append((module, name, persistent))
    return promoted


def parameters_as_buffers(promoted: list[tuple[nn.Module, str, bool]]) -> None:
    """Undo :func:`buffers_as_parameters` (keeping the pruned values)."""
    for module, name, persistent in promoted:
        value = getattr(module, name).detach()
        delattr(module, name)
        module.register_buffer(name, value, persistent=persistent)


def check_outputs(model: nn.Module, x: Tensor, expected: list[tuple[int, ...]]) -> None:
    """Raise if the pruned ``model`` fails on ``x`` or its output shapes changed."""
    try:
        with torch.no_grad():
            got = output_shapes(model(x))
        if got != expected:
            raise RuntimeError(f"output shapes changed from {expected} to {got}")
    except Exception as error:
        raise ValueError(
            f"structured pruning broke {type(model).__name__} ({type(error).__name__}: "
            f"{error}): its forward hides a channel coupling from the dependency graph "
            "(a hard-coded channel count in view/reshape, a .detach() or a non-torch op); "
            "protect the layers involved (protect='name,...'). The model was not changed"
        ) from error


def tied_weights(model: nn.Module) -> dict[nn.Module, str]:
    """Modules holding a parameter that another module holds too (weight tying: an output layer
    reusing the embedding), each with the names of that parameter (``"emb.weight = dec.weight"``).

    The dependency graph cuts each layer along its own channel groups, so the two holders of a
    tied weight would be cut apart and each given its own tensor: the groups that touch them
    are left alone instead. A module shared under two names is one holder, not a tie.
    """
    holders: dict[int, dict[nn.Module, str]] = {}
    for prefix, module in model.named_modules(remove_duplicate=False):
        for name, param in module.named_parameters(recurse=False):
            holders.setdefault(id(param), {}).setdefault(module, f"{prefix}.{name}".lstrip("."))
    return {
        module: " = ".join(names.values())
        for names in holders.values()
        if len(names) > 1
        for module in names
    }
