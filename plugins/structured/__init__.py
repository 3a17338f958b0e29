r"""Structured pruning: remove whole neurons / channels and return a physically smaller model.

Removing output unit :math:`i` of a layer removes row :math:`i` of its weight, entry :math:`i`
of its bias and of the batch norm after it, and column :math:`i` of every layer that reads it.
Layers whose units are *coupled* - joined by a residual add, a concatenation, a depthwise
convolution, a flatten into the classifier - must lose the same units. Torch-Pruning's
``DependencyGraph`` finds these **groups** by tracing one forward pass through autograd (Fang et
al., "DepGraph: Towards Any Structural Pruning", CVPR 2023); this pruner asks the graph for the
groups and does the rest:

* **group score**: the per-unit scores of the group's scored Linear/Conv layers (``Scores.units``,
  any scorer) are reduced unit by unit with ``reduction`` (mean, sum or max), so scorers stay
  ignorant of pruning (the Torch-Pruning split of importance and pruner);
* **by rate** ``amount`` :math:`a`: with ``scope="local"`` each group of :math:`n` units loses its
  :math:`\min(\mathrm{round}(a n), n - 1)` lowest-scored units; with ``scope="global"`` the
  :math:`\mathrm{round}(a N)` lowest of all :math:`N` prunable units go, in one ranking (raw
  scores: use a scale-free scorer such as ``lamp`` or ``taylor``), and a group that would lose
  every unit keeps its best one. Torch-Pruning removes :math:`n - \lfloor (1 - a) n \rfloor`
  instead (it rounds the kept width down), so where :math:`a n` is not a whole number a width
  can differ from its by one unit (at 0.3 a width of 128 keeps 90 here, 89 there);
* **by threshold** :math:`t` (either scope): every unit whose group score is below :math:`t`
  goes; a threshold that would empty a group is refused;
* ``round_to`` :math:`r > 1` rounds each pruned group's kept width **up** to a multiple of
  :math:`r` (never above the original width): vector units like widths that are multiples of 8.

Units that must go together are folded into one unit, scored by the mean of their channels'
group scores:

* **grouped convolutions and group norm** (RegNet, ResNeXt; ``nn.GroupNorm``): a group
  touching a convolution with :math:`G > 1` groups (not depthwise) or a ``GroupNorm`` with
  :math:`G > 1` groups loses the same positions in every group, so each group keeps the same
  width (unit :math:`p` = channel :math:`p` of every group, as Torch-Pruning does);
* **attention heads** (``nn.MultiheadAttention``: torchvision's ViT, ``nn.TransformerEncoder``
  layers, batch-first or not): attention ties its heads to its input and output width,
  ``embed_dim`` = ``num_heads`` x ``head_dim``, so the group of the residual stream (shared by
  all layers of a transformer, with the patch embedding, norms, class token and positions)
  loses **whole heads**: head :math:`h`'s ``head_dim`` channels go from the q, k and v
  projections, the output projection and the stream, in every attention layer of the group;
  ``num_heads`` falls, ``head_dim`` stays (Torch-Pruning's ``MultiheadAttentionPruner`` does
  the cutting). ``amount`` is the **fraction of heads** each attention group loses,
  :math:`\min(\mathrm{round}(a H), H - 1)` of :math:`H`, under either scope (a head's score is
  not comparable with a channel's); a threshold removes every head scoring below it. The MLP
  blocks' hidden units are ordinary groups. torchvision's ``VisionTransformer.hidden_dim`` and
  its blocks' ``num_heads`` are updated to match.

**Recurrent layers** (single-layer, unidirectional ``nn.LSTM``, ``nn.GRU``, ``nn.RNN``) lose
hidden units from every gate block of ``weight_ih``, ``weight_hh`` (rows and columns) and both
biases, and from every layer reading the output or the final state. A recurrent layer is not a
prunable layer, so its hidden units are scored by the per-weight scores of the layers reading
them (the sum of each unit's outgoing column); with unit scores only they stay. Multi-layer,
bidirectional or projected ones are refused (build them from single-layer, unidirectional
modules, or ``protect`` them: their inputs still shrink).

Never pruned: units that are outputs of the model (the classifier's classes), units coupled to a
layer named in ``protect`` (a module name protects every layer inside it), and a group that
cannot be folded evenly (channels not divisible by the groups, attention modules of different
head sizes) or that touches a **tied weight** (one parameter held by two layers, such as an
output layer reusing the embedding matrix: its two holders would be cut along different groups
and untied); a warning names each. A protected layer keeps its output units; its inputs still
shrink when the layer feeding it is pruned.

**Models that take token ids** (an ``nn.Embedding`` first: ``pruneplug.models``'
``transformer_classifier`` and ``lstm_classifier``) are traced with token ids. The embedding's
output is the first width of the model: an LSTM's input (kept: no scored layer writes it), or a
transformer's residual stream, which loses the channels of the heads removed - the embedding's
columns and the position table's with the rest of the stream, as a ViT's patch embedding does.
Floating-point buffers of modules that have no pruning function of their own (fixed sinusoidal
position codes; not batch norm's running statistics) are traced like parameters, so they
shrink with the channels they are added to (Torch-Pruning cuts their last dimension).

Tracing needs one example input. ``example_shape`` gives the shape of one sample
(``"3x32x32"``: random floats in the model's dtype), optionally after an integer dtype prefix
that asks for token ids (``"int64:16"``: 16 ids of the model's first ``nn.Embedding``, drawn
from ``0..num_embeddings-1`` without its ``padding_idx``; ``"int32:16"`` likewise; ``"int64"``
alone infers the length). When empty it is inferred from the first layer (the first
``nn.Embedding`` or prunable layer in definition order): ``(in_features,)`` for a Linear,
``(in_channels, s, s)`` for a Conv2d with the first ``s`` in 8, 32, 64, 224 that runs (the
graph does not depend on the spatial size), and ``int64`` token ids for an Embedding, as many
as the model's ``max_len`` attribute when it has one (all its positions), else the first of
16, 8, 1 that runs. That covers ``pruneplug.models`` and torchvision's classifiers.

The pruner works on a deep copy and returns it: the model passed in is never modified. After
pruning it runs the example through the copy; if the shapes broke (a forward that hard-codes a
channel count, detaches a tensor or leaves autograd, which the graph cannot see) it raises an
error naming the cause instead of returning a broken model. Masked (unstructured) models are
refused: remove the masks first (``torch.nn.utils.prune.remove``); so are parametrized weights
(``torch.nn.utils.parametrize``: remove the parametrization first).

The modules, in the order a call uses them: :mod:`.examples` (the example input),
:mod:`.tracing` (the dependency graph, and the check of the pruned model), :mod:`.recurrent`
(what the graph needs for recurrent layers), :mod:`.groups` (the groups, their scores, the
units each loses and the cut); :class:`Structured` here ties them together.

Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017 (channel pruning by unit score);
Molchanov et al., "Importance Estimation for Neural Network Pruning", CVPR 2019 (group scores).
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from pruneplug import Param, Pruner, Scores, hookimpl, prunable_layers
from pruneplug.contracts.pruners import check_plain_parameters
from pruneplug.plumbing import prunable_targets

from .examples import example_input, parse_example
from .groups import channel_groups, cut, sync_widths, units_to_remove
from .tracing import (
    buffers_as_parameters,
    check_outputs,
    output_shapes,
    parameters_as_buffers,
    tied_weights,
    trace,
)


class Structured(Pruner):
    name = "structured"
    description = "Remove whole neurons/channels: a smaller model, coupled layers kept consistent"
    structured = True
    params = (
        Param(
            "scope",
            str,
            "local",
            choices=("local", "global"),
            help="remove the fraction from each channel group (local) or rank all units (global)",
        ),
        Param(
            "reduction",
            str,
            "mean",
            choices=("mean", "sum", "max"),
            help="how the unit scores of coupled layers combine into one score per unit",
        ),
        Param(
            "round_to",
            int,
            1,
            low=1,
            high=1024,
            help="round each pruned layer's width up to a multiple of this (1 = no rounding)",
        ),
        Param(
            "protect",
            str,
            "",
            help="comma-separated module names whose output units are kept (outputs always are)",
        ),
        Param(
            "example_shape",
            str,
            "",
            help="one input sample for tracing: '3x32x32', token ids 'int64:16' (empty = inferred)",
        ),
    )

    def __init__(self, **params: object) -> None:
        super().__init__(**params)
        self._example = parse_example(self.config["example_shape"])

    def protected(self, model: nn.Module) -> set[str]:
        """Names of every module the ``protect`` parameter covers (a module and its children)."""
        wanted = [n.strip() for n in self.config["protect"].split(",") if n.strip()]
        modules = [name for name, _ in model.named_modules()]
        unknown = [n for n in wanted if n not in modules]
        if unknown:
            raise ValueError(
                f"protect names {', '.join(map(repr, unknown))}, which the model does not have: "
                f"use module names from model.named_modules(), e.g. "
                f"{', '.join(list(prunable_layers(model))[:3])}"
            )
        return {m for m in modules for w in wanted if m == w or m.startswith(w + ".")}

    def prune(
        self, model: nn.Module, scores: Scores, *, amount: float | None, threshold: float | None
    ) -> nn.Module:
        """Prune a deep copy of ``model`` (traced, grouped, cut, checked) and return it."""
        if torch_prune.is_pruned(model):
            raise ValueError(
                "the model carries unstructured pruning masks (weight_orig / weight_mask): make "
                "them permanent with torch.nn.utils.prune.remove(layer, 'weight') on each layer "
                "before structured pruning"
            )
        check_plain_parameters(model, prunable_targets(model), "resize")
        protected = self.protected(model)
        pruned = copy.deepcopy(model)  # the model passed in is never touched
        modes = {name: m.training for name, m in pruned.named_modules()}
        params = pruned.named_parameters(remove_duplicate=False)
        trainable = {name: p.requires_grad for name, p in params}
        pruned.eval()
        x = example_input(pruned, self._example)
        with torch.no_grad():
            expected = output_shapes(pruned(x))
        promoted = buffers_as_parameters(pruned)
        graph = trace(pruned, x)
        units = scores.units()
        layers = prunable_layers(model)
        names = {module: name for name, module in pruned.named_modules()}
        traced = {names[m] for m in graph.module2node if m in names}
        unseen = [n for n in units if n not in protected and n not in traced]
        if unseen:
            raise ValueError(
                f"layer {unseen[0]!r} ({type(layers[unseen[0]]).__name__}) is not in the traced "
                "graph: its output does not reach the model's output through autograd "
                "(torch.no_grad, .detach() or a non-torch op in forward, or an unused layer); "
                "protect it (protect='name') or drop its scores"
            )
        columns = {  # per input feature: the sum of the scores of the weights reading it
            name: w.transpose(0, 1).flatten(1).sum(1) for name, w in scores.weight.items()
        }
        reduction, tied = self.config["reduction"], tied_weights(pruned)
        groups = channel_groups(graph, names, units, columns, protected, reduction, tied)
        removals = units_to_remove(
            groups, amount, threshold, self.config["scope"], self.config["round_to"]
        )
        for group, idxs in zip(groups, removals, strict=True):
            if len(idxs):
                cut(graph, group, idxs)
        parameters_as_buffers(promoted)
        sync_widths(pruned)
        check_outputs(pruned, x, expected)
        for name, module in pruned.named_modules():
            module.train(modes[name])
        for name, param in pruned.named_parameters(remove_duplicate=False):
            param.requires_grad_(trainable[name])
        return pruned


@hookimpl
def register_pruners(register):
    register(Structured)
