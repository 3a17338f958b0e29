r"""Batch-norm scale importance: a channel whose batch-norm scale is small contributes little.

A batch norm after a convolution (or a Linear) computes, per channel :math:`c`,
:math:`y_c = \gamma_c \hat z_c + \beta_c` from the normalised output :math:`\hat z_c`; with
:math:`\gamma_c \approx 0` the channel carries only a constant. The per-unit score of the layer
before the batch norm is :math:`|\gamma_c|`. Network slimming trains with an L1 penalty on the
:math:`\gamma` so that many become small, then prunes by this score: Liu et al., "Learning
Efficient Convolutional Networks through Network Slimming", ICCV 2017.

Only per-unit scores, and only for layers whose output goes straight into a batch norm with as
many features as the layer has units (other layers are left out of the scores). The pairs are
found by tracing the forward pass with ``torch.fx``, which follows the actual data flow whatever
the order the modules were defined in (ResNet's ``downsample``, MobileNet's blocks, plain
Sequentials). A model that ``torch.fx`` cannot trace (Python control flow on tensor values) falls
back to definition order: a batch norm that is the next leaf module after the layer.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch.fx
from torch import nn

from pruneplug import Batch, LossFn, Scorer, Scores, effective_weight, hookimpl, prunable_layers

BATCHNORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _traced_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(layer, module) for every module call that directly consumes a module call's output."""
    graph = torch.fx.symbolic_trace(model).graph
    return [
        (node.args[0].target, node.target)
        for node in graph.nodes
        if node.op == "call_module"
        and node.args
        and isinstance(node.args[0], torch.fx.Node)
        and node.args[0].op == "call_module"
    ]


def _ordered_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(leaf module, next leaf module) in definition order."""
    leaves = [name for name, m in model.named_modules() if not any(m.children())]
    return list(zip(leaves[:-1], leaves[1:], strict=True))


def batchnorm_after(model: nn.Module) -> dict[str, str]:
    """Prunable layer name -> name of the batch norm applied directly to its output.

    Uses ``torch.fx`` tracing, or definition order when the model cannot be traced (see the
    module docstring). A batch norm counts only if its ``num_features`` equals the layer's
    number of units.
    """
    layers = prunable_layers(model)
    modules = dict(model.named_modules())
    try:
        candidates = _traced_pairs(model)
    except Exception:  # any tracing failure: the model's forward is not symbolically traceable
        candidates = _ordered_pairs(model)
    return {
        layer: after
        for layer, after in candidates
        if layer in layers
        and isinstance(modules.get(after), BATCHNORM_TYPES)
        and modules[after].num_features == layers[layer].weight.shape[0]
    }


class BNScale(Scorer):
    name = "bn_scale"
    description = "|gamma| of the batch norm right after each conv/linear (network slimming)"

    def score(self, model: nn.Module, batches: Iterable[Batch] | None, loss_fn: LossFn) -> Scores:
        pairs = {
            layer: model.get_submodule(bn)
            for layer, bn in batchnorm_after(model).items()
            if model.get_submodule(bn).affine
        }
        if not pairs:
            raise ValueError(
                f"{type(model).__name__} has no affine batch norm directly after a prunable "
                "layer, so bn_scale has no gamma to read: use it on conv -> BatchNorm models "
                "(or Linear -> BatchNorm1d), or use the magnitude or taylor scorer"
            )
        return Scores(unit={layer: effective_weight(bn).abs() for layer, bn in pairs.items()})


@hookimpl
def register_scorers(register):
    register(BNScale)
