r"""What a pruned model gets before it is deployed: batch norm folded, NHWC layout, compilation.

Structured pruning makes layers narrower, but a narrow network spends a larger share of its time
outside the multiply-adds: batch norm, activations, memory traffic. Two inference-only steps
recover part of it:

* :func:`fold_batchnorm` merges each batch norm that directly follows a convolution or a linear
  layer into that layer. In eval mode the batch norm is the affine map
  :math:`y = \gamma (x - \mu) / \sqrt{\sigma^2 + \epsilon} + \beta`, so with
  :math:`s = \gamma / \sqrt{\sigma^2 + \epsilon}` the layer :math:`Wx + b` followed by it equals
  the layer with weight :math:`s W` (scaled per output unit) and bias :math:`s (b - \mu) + \beta`
  (Jacob et al., "Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-
  Only Inference", CVPR 2018, section 3.2). Uses ``torch.fx`` to find the pairs and
  ``torch.nn.utils.fusion`` to fold them (``torch.fx.experimental.optimization.fuse``).
* :func:`deploy` also converts the model to ``torch.channels_last`` (NHWC) when asked: the
  oneDNN convolution kernels PyTorch uses on CPU prefer it; feed inputs in the same layout.
* and compiles it with ``torch.compile`` (TorchInductor) when asked: one generated kernel per
  chain of element-wise ops instead of one call each, which is what a narrow network, whose
  time goes to per-op overhead rather than multiply-adds, needs most. The first call compiles
  (seconds; on CPU it needs a C++ compiler).

The third step, channel widths that vector units and tensor cores like (multiples of 8, 16 or
64), is the structured pruner's ``round_to`` parameter, since it decides the widths: P4 of
``pruneplug bench pruning`` measures what it costs in accuracy, D1b of ``pruneplug bench deploy
--device cuda`` what it buys on a GPU.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn
from torch.fx.experimental.optimization import fuse

from .plumbing import copy_model, remove_masks


def _inference_copy(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with its pruning masks made permanent (pruned weights are
    plain zeros: no mask is multiplied in at every call)."""
    return remove_masks(copy_model(model)).eval()


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A new eval-mode model equal to ``model`` in eval mode, with conv/linear + BN pairs folded.

    Only a batch norm fed directly by a convolution or linear layer whose output nothing else
    uses is folded; other batch norms stay. Masks of ``torch.nn.utils.prune`` are made permanent
    first (a masked layer's forward hook would otherwise undo the fold). The input model is not
    modified. Raises ``ValueError`` when ``torch.fx`` cannot trace the model (data-dependent
    control flow).
    """
    frozen = _inference_copy(model)
    try:
        return fuse(frozen, inplace=True)
    except Exception as error:  # fx raises many types for untraceable code
        raise ValueError(
            f"cannot fold batch norm in {type(model).__name__}: torch.fx could not trace it "
            f"({type(error).__name__}: {error}); fold the sub-modules that fx can trace, or "
            "use torch.nn.utils.fusion.fuse_conv_bn_eval on each pair by hand"
        ) from error


def deploy(
    model: nn.Module, *, fold_bn: bool = True, channels_last: bool = False, compiled: bool = False
) -> nn.Module:
    """An inference copy of ``model``: eval mode, pruning masks made permanent, BN folded
    (``fold_bn``), NHWC (``channels_last``), compiled by ``torch.compile`` (``compiled``).

    With ``channels_last`` the inputs should be converted too:
    ``x.to(memory_format=torch.channels_last)``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"deploy needs a torch.nn.Module, got {type(model).__name__}")
    out = fold_batchnorm(model) if fold_bn else _inference_copy(model)
    if channels_last:
        out = out.to(memory_format=torch.channels_last)
    if compiled:
        # torch.compile of a Module returns a Module (an OptimizedModule wrapping it); its
        # annotation only promises a callable
        out = cast(nn.Module, torch.compile(out))
    return out
