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
  every unit keeps its best one;
* **by threshold** :math:`t` (either scope): every unit whose group score is below :math:`t`
  goes; a threshold that would empty a group is refused;
* ``round_to`` :math:`r > 1` rounds each pruned group's kept width **up** to a multiple of
  :math:`r` (never above the original width): vector units like widths that are multiples of 8.

Never pruned: units that are outputs of the model (the classifier's classes), units coupled to a
layer named in ``protect`` (a module name protects every layer inside it), and groups that touch
a grouped, non-depthwise convolution (their channels must shrink evenly per group; a warning
names them). A protected layer keeps its output units; its inputs still shrink when the layer
feeding it is pruned.

Tracing needs one example input. ``example_shape`` gives the shape of one sample
(``"3x32x32"``); when empty it is inferred from the first layer: ``(in_features,)`` for a
Linear, ``(in_channels, s, s)`` for a Conv2d with the first ``s`` in 8, 32, 64, 224 that runs
(the graph does not depend on the spatial size). That covers ``pruneplug.models`` and
torchvision's classifiers.

The pruner works on a deep copy and returns it: the model passed in is never modified. After
pruning it runs the example through the copy; if the shapes broke (a forward that hard-codes a
channel count, detaches a tensor or leaves autograd, which the graph cannot see) it raises an
error naming the cause instead of returning a broken model. Masked (unstructured) models are
refused: remove the masks first (``torch.nn.utils.prune.remove``).

Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017 (channel pruning by unit score);
Molchanov et al., "Importance Estimation for Neural Network Pruning", CVPR 2019 (group scores).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import Tensor, nn
from torch.nn.utils import prune as torch_prune

from pruneplug import Param, ParamError, Pruner, Scores, hookimpl, prunable_layers

#: Spatial sizes tried, in order, when the example input of a convolutional model is inferred.
PROBE_SIZES = (8, 32, 64, 224)


def parse_shape(text: str) -> tuple[int, ...]:
    """Parse ``"3x32x32"`` or ``"3,32,32"`` (one sample, no batch dimension) into a tuple."""
    parts = text.replace(",", "x").split("x")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if not shape or any(d < 1 for d in shape):
        raise ParamError(
            f"pruner 'structured': example_shape={text!r} is not a shape: give the size of one "
            "input sample without the batch dimension, e.g. '64' or '3x32x32'"
        )
    return shape


def example_input(model: nn.Module, shape: tuple[int, ...] | None) -> Tensor:
    """A one-sample batch that ``model`` (in eval mode) accepts, of ``shape`` or inferred."""
    param = next(model.parameters())
    if shape is not None:
        candidates = [shape]
    else:
        first = next(iter(prunable_layers(model).values()))
        if isinstance(first, nn.Linear):
            candidates = [(first.in_features,)]
        else:
            dims = first.weight.dim() - 2
            candidates = [(first.in_channels, *[s] * dims) for s in PROBE_SIZES]
    problem: Exception | None = None
    for candidate in candidates:
        x = torch.randn(1, *candidate, device=param.device, dtype=param.dtype)
        try:
            with torch.no_grad():
                model(x)
        except Exception as error:  # any failure means: not this shape
            problem = error
            continue
        return x
    tried = ", ".join("x".join(map(str, c)) for c in candidates)
    raise ValueError(
        f"the structured pruner could not run {type(model).__name__} on an example input of "
        f"shape {tried} ({type(problem).__name__}: {problem}): pass the shape of one input "
        "sample, e.g. get_pruner('structured', example_shape='3x32x32')"
    )


def output_shapes(output: object) -> list[tuple[int, ...]]:
    """Shapes of every tensor in a model output (tensor, tuple, list or dict of tensors)."""
    return [tuple(t.shape) for t in tp.utils.flatten_as_list(output)]


def trace(model: nn.Module, x: Tensor) -> tp.DependencyGraph:
    """Torch-Pruning's dependency graph of ``model`` on input ``x`` (a clear error if it fails)."""
    try:
        with torch.enable_grad():  # the graph is read from autograd, even under torch.no_grad
            return tp.DependencyGraph().build_dependency(model, x, verbose=False)
    except Exception as error:
        raise ValueError(
            f"Torch-Pruning could not trace {type(model).__name__} "
            f"({type(error).__name__}: {error}): the structured pruner needs a forward "
            "pass that autograd can follow; prune the sub-module that can be traced"
        ) from error


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


@dataclass
class ChannelGroup:
    """Coupled units that are removed together: the group's root layer and its unit scores."""

    root: nn.Module
    handler: Callable  # the Torch-Pruning function that prunes the root's output units
    layers: list[str]  # names of the scored layers whose output units the group holds
    scores: Tensor  # one reduced score per unit of the root


def is_grouped_conv(module: object) -> bool:
    """A convolution with ``1 < groups`` that is not depthwise."""
    return (
        isinstance(module, nn.modules.conv._ConvNd)
        and module.groups > 1
        and not module.groups == module.in_channels == module.out_channels
    )


def channel_groups(
    graph: tp.DependencyGraph,
    names: dict[nn.Module, str],
    units: dict[str, Tensor],
    protected: set[str],
    reduction: str,
) -> list[ChannelGroup]:
    """The groups this pruner may prune, each with one reduced score per unit.

    ``names`` maps the traced model's modules to their qualified names.
    """
    found, grouped = [], []
    for group in graph.get_all_groups(root_module_types=(nn.modules.conv._ConvNd, nn.Linear)):
        outputs = [item for item in group if graph.is_out_channel_pruning_fn(item.dep.handler)]
        if any(not item.dep.target.outputs for item in outputs):
            continue  # these units are outputs of the model
        if any(names.get(item.dep.target.module) in protected for item in outputs):
            continue
        if any(is_grouped_conv(item.dep.target.module) for item in group):
            grouped.append(names[group[0].dep.target.module])
            continue
        root = group[0].dep.target.module
        width = graph.get_out_channels(root)
        pieces = [  # root_idxs holds None where Torch-Pruning cannot map a unit to the root
            (names[item.dep.target.module], item.idxs, item.root_idxs)
            for item in outputs
            if names.get(item.dep.target.module) in units and None not in item.root_idxs
        ]
        if not pieces:
            continue  # no scored layer in the group: left alone
        stacked = torch.full((len(pieces), width), torch.nan)
        for row, (name, idxs, root_idxs) in enumerate(pieces):
            stacked[row, root_idxs] = units[name][idxs].float().cpu()
        reduce = {"mean": torch.nanmean, "sum": torch.nansum}.get(reduction)
        scores = reduce(stacked, 0) if reduce else stacked.nan_to_num(nan=-torch.inf).amax(0)
        found.append(ChannelGroup(root, group[0].dep.handler, [p[0] for p in pieces], scores))
    if grouped:
        warnings.warn(
            "the structured pruner leaves alone the channels coupled to grouped convolutions "
            f"(groups rooted at {', '.join(grouped)}): they must shrink evenly per group",
            stacklevel=3,
        )
    return found


def kept_width(width: int, removed: int, round_to: int) -> int:
    """Units a group keeps, rounded up to a multiple of ``round_to`` (at most ``width``)."""
    kept = width - removed
    if removed and round_to > 1:
        kept = min(width, -(-kept // round_to) * round_to)
    return kept


def units_to_remove(
    groups: list[ChannelGroup],
    amount: float | None,
    threshold: float | None,
    scope: str,
    round_to: int,
) -> list[Tensor]:
    """Indices of the units each group loses (lowest scores first; ties by position)."""
    if not groups:
        return []
    if threshold is not None:
        counts = []
        for group in groups:
            below = int((group.scores < threshold).sum())
            if below == len(group.scores):
                raise ValueError(
                    f"threshold={threshold:g} would remove every unit of layer "
                    f"{' / '.join(group.layers)!r} (its highest score is "
                    f"{group.scores.max().item():.4g}): lower the threshold"
                )
            counts.append(below)
    elif scope == "local":
        counts = [min(round(amount * len(g.scores)), len(g.scores) - 1) for g in groups]
    else:
        flat = torch.cat([g.scores for g in groups])
        order = flat.argsort(stable=True)[: round(amount * len(flat))]
        owner = torch.repeat_interleave(torch.tensor([len(g.scores) for g in groups]))
        hits = torch.bincount(owner[order], minlength=len(groups)).tolist()
        counts = [min(hit, len(g.scores) - 1) for hit, g in zip(hits, groups, strict=True)]
    removals = []
    for group, count in zip(groups, counts, strict=True):
        width = len(group.scores)
        removed = width - kept_width(width, count, round_to)
        removals.append(group.scores.argsort(stable=True)[:removed].sort().values)
    return removals


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
            help="shape of one input sample for tracing, e.g. '3x32x32' (empty = inferred)",
        ),
    )

    def __init__(self, **params: object) -> None:
        super().__init__(**params)
        text = self.config["example_shape"].strip()
        self._shape = parse_shape(text) if text else None

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
        protected = self.protected(model)
        pruned = copy.deepcopy(model)  # the model passed in is never touched
        modes = {name: m.training for name, m in pruned.named_modules()}
        trainable = {name: p.requires_grad for name, p in pruned.named_parameters()}
        pruned.eval()
        x = example_input(pruned, self._shape)
        with torch.no_grad():
            expected = output_shapes(pruned(x))
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
        groups = channel_groups(graph, names, units, protected, self.config["reduction"])
        removals = units_to_remove(
            groups, amount, threshold, self.config["scope"], self.config["round_to"]
        )
        for group, idxs in zip(groups, removals, strict=True):
            if len(idxs):
                graph.get_pruning_group(group.root, group.handler, idxs.tolist()).prune()
        check_outputs(pruned, x, expected)
        for name, module in pruned.named_modules():
            module.train(modes[name])
        for name, param in pruned.named_parameters():
            param.requires_grad_(trainable[name])
        return pruned


@hookimpl
def register_pruners(register):
    register(Structured)
