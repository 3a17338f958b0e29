"""Recurrent layers in Torch-Pruning's dependency graph: pruning functions for the hidden
units of single-layer, unidirectional ``nn.LSTM``, ``nn.GRU`` and ``nn.RNN``, and the tracing
hook that shows such a layer to the graph as one operation."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch_pruning as tp
from torch import Tensor, nn

from pruneplug.plumbing import layer_tensor


class RecurrentPruner(tp.pruner.function.BasePruningFunc):
    """Torch-Pruning pruning functions for the hidden units of single-layer, unidirectional
    ``nn.LSTM``, ``nn.GRU`` and ``nn.RNN`` modules (Torch-Pruning's own LSTM function prunes
    the wrong dimensions of ``weight_ih`` and ``bias_hh``, and it has none for GRU).

    Hidden unit :math:`j` owns row :math:`j` of every gate block (4 for LSTM, 3 for GRU, 1 for
    a plain RNN) of ``weight_ih``, ``weight_hh`` and both biases, and column :math:`j` of
    ``weight_hh``. The input side removes columns of the first layer's ``weight_ih``.
    """

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        assert isinstance(layer, nn.RNNBase)
        gates = {"LSTM": 4, "GRU": 3}.get(layer.mode, 1)
        width = layer.hidden_size
        keep = torch.tensor(sorted(set(range(width)) - set(idxs)), dtype=torch.long)
        rows = torch.cat([keep + gate * width for gate in range(gates)])
        for name in layer._flat_weights_names:
            old = getattr(layer, name)
            new = old.detach()[rows.to(old.device)]
            if name.startswith("weight_hh"):
                new = new[:, keep.to(old.device)]
            setattr(layer, name, nn.Parameter(new, requires_grad=old.requires_grad))
        layer.hidden_size = len(keep)
        return layer

    def prune_in_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        assert isinstance(layer, nn.RNNBase)
        keep = torch.tensor(sorted(set(range(layer.input_size)) - set(idxs)), dtype=torch.long)
        for name in layer._flat_weights_names:
            if name.startswith("weight_ih_l0"):  # the first layer, both directions
                old = getattr(layer, name)
                new = old.detach()[:, keep.to(old.device)]
                setattr(layer, name, nn.Parameter(new, requires_grad=old.requires_grad))
        layer.input_size = len(keep)
        return layer

    def get_out_channels(self, layer: nn.Module) -> int:
        assert isinstance(layer, nn.RNNBase)
        return layer.hidden_size

    def get_in_channels(self, layer: nn.Module) -> int:
        assert isinstance(layer, nn.RNNBase)
        return layer.input_size


RECURRENT = RecurrentPruner()
RECURRENT_TYPES = (nn.LSTM, nn.GRU, nn.RNN)


def unsupported_recurrence(module: nn.Module) -> str | None:
    """Why the structured pruner cannot remove ``module``'s hidden units, or ``None``."""
    if not isinstance(module, nn.RNNBase):
        return None
    if module.num_layers > 1:
        return f"has {module.num_layers} layers"
    if module.bidirectional:
        return "is bidirectional"
    if getattr(module, "proj_size", 0):
        return "has a projection (proj_size)"
    return None


def as_one_op(module: nn.Module, args: tuple, output: object) -> object:
    """A tracing-only forward hook: show a recurrent layer to the graph as one operation.

    Autograd inside an RNN depends on the backend (a fused kernel for LSTM on one CPU, gate
    by gate for GRU), and Torch-Pruning would read the gate splits as channel couplings.
    During tracing the output is replaced by the same values joined to the input by
    element-wise ops only, and the final hidden state by the same values joined to the output,
    so the graph couples input channels -> the layer -> hidden units and nothing else. (The
    hidden state of a layer whose units cannot be pruned is left out of the graph.)
    """
    assert isinstance(module, nn.RNNBase)
    inputs, (out, hidden) = args[0], output
    packed = isinstance(inputs, nn.utils.rnn.PackedSequence)
    source = inputs.data if packed else inputs
    if not source.requires_grad:  # the model's own input: autograd reaches the layer only
        # through its weight, as it reaches a first convolution (whose input channels stay)
        source = source + 0 * layer_tensor(module, module._flat_weights_names[0]).sum()
    if packed:
        data = out.data.detach() + 0 * source.sum(-1, keepdim=True)
        out, summary = out._replace(data=data), data.sum(0)  # (H,) broadcasts to the state
    else:
        out = out.detach() + 0 * source.sum(-1, keepdim=True)
        time = 1 if module.batch_first and source.dim() == 3 else 0
        summary = out.sum(time).unsqueeze(0)  # (1, N, H) or (1, H) like the hidden state

    def joined(state: Tensor) -> Tensor:
        if unsupported_recurrence(module):  # its hidden units stay: their readers, too
            return state.detach()
        return state.detach() + 0 * summary

    hidden = tuple(joined(h) for h in hidden) if isinstance(hidden, tuple) else joined(hidden)
    return out, hidden


def is_recurrent(module: nn.Module) -> bool:
    """An ``nn.LSTM``, ``nn.GRU`` or ``nn.RNN``."""
    return isinstance(module, RECURRENT_TYPES)
