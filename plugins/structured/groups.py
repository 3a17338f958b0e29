"""Channel groups: the coupled units the structured pruner removes together, their scores,
how many each group loses (``amount``, ``threshold``, ``scope``, ``round_to``) and the cut."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import Tensor, nn

from .recurrent import RECURRENT_TYPES, is_recurrent, unsupported_recurrence


@dataclass
class ChannelGroup:
    """Coupled units that are removed together: the group's root layer and its unit scores.

    A *unit* is what the pruner keeps or removes as one: a channel of the root, or, in a group
    that must shrink evenly, a fold of channels (``channels[u]`` holds the root channels of
    unit ``u``): one position in every group of a grouped convolution or GroupNorm, or the
    ``head_dim`` channels of one attention head.
    """

    root: nn.Module
    handler: Callable  # the Torch-Pruning function that prunes the root's output units
    layers: list[str]  # names of the scored layers whose output units the group holds
    scores: Tensor  # one reduced score per unit
    channels: Tensor  # units x channels-per-unit: the root channels of each unit
    attention: list[nn.MultiheadAttention]  # attention modules whose heads the units are


def channel_fold(module: object) -> int | None:
    """The number of channel groups of a grouped convolution (``1 < groups``, not depthwise) or
    of a ``GroupNorm`` with several groups, else ``None``: a cut must keep the groups equal."""
    if isinstance(module, nn.GroupNorm) and module.num_groups > 1:
        return module.num_groups
    if (
        isinstance(module, nn.modules.conv._ConvNd)
        and module.groups > 1
        and not module.groups == module.in_channels == module.out_channels
    ):
        return module.groups
    return None


def unit_channels(group: tp.Group, width: int) -> tuple[Tensor, list[nn.MultiheadAttention]] | str:
    """The root channels of each unit of ``group`` and its attention modules (or why not).

    Plain groups have one channel per unit. A group touching a grouped convolution or a
    ``GroupNorm`` with :math:`G` groups has ``width / G`` units, unit :math:`p` being channel
    :math:`p` of every group (so each group loses the same positions: the convolution's weight
    stays rectangular and the norm's groups stay equal, as Torch-Pruning does). A group touching
    ``nn.MultiheadAttention`` has one unit per head: the head's ``head_dim`` channels, which must
    be the same in every attention module of the group (a residual stream shared by all layers
    of a transformer is).
    """
    folds = {f for item in group if (f := channel_fold(item.dep.target.module))}
    attention = [
        item for item in group if isinstance(item.dep.target.module, nn.MultiheadAttention)
    ]
    if folds and attention:
        return "it couples channel groups (grouped convolutions, GroupNorm) with attention heads"
    if folds:
        fold = max(folds)
        if any(f and fold % f for f in folds) or width % fold:
            return f"its {width} channels do not split evenly into groups of {sorted(folds)}"
        return torch.arange(width).view(fold, width // fold).T, []
    if not attention:
        return torch.arange(width).view(width, 1), []
    modules = list(dict.fromkeys(item.dep.target.module for item in attention))
    shapes = {(m.num_heads, m.head_dim) for m in modules}
    if len(shapes) > 1 or any(not m._qkv_same_embed_dim for m in modules):
        return "its attention modules differ in heads or have separate key/value widths"
    heads, head_dim = shapes.pop()
    head_of = torch.full((width,), -1)
    for item in attention:
        idxs = torch.tensor(item.idxs)
        own = torch.full((width,), -1)
        own[torch.tensor(item.root_idxs)] = idxs // head_dim
        if (head_of >= 0).any() and not own.equal(head_of):
            return "its attention modules see the channels in different orders"
        head_of = own
    channels = [(head_of == h).nonzero().flatten() for h in range(heads)]
    if any(len(c) != head_dim for c in channels):
        return "its channels do not map onto whole attention heads"
    return torch.stack(channels), modules


def reader_columns(
    graph: tp.DependencyGraph,
    group: tp.Group,
    names: dict[nn.Module, str],
    weights: dict[str, Tensor],
) -> list[tuple[str, Tensor, list[int], list[int]]]:
    """Scores of a recurrent layer's hidden units from the layers that read them.

    A recurrent layer is not a prunable layer, so no scorer scores its hidden units; the
    per-weight scores of the Linear (or ungrouped Conv) layers reading them do: hidden unit
    :math:`j` scores the sum of the scores of its outgoing weights (column :math:`j`).
    Returned like the scored pieces of a group: (reader name, its column sums, the group's
    indices into them, the matching root indices).
    """
    pieces = []
    for item in group:
        module, name = item.dep.target.module, names.get(item.dep.target.module)
        if (
            graph.is_in_channel_pruning_fn(item.dep.handler)
            and name in weights
            and getattr(module, "groups", 1) == 1
            and None not in item.root_idxs
        ):
            pieces.append((name, weights[name], item.idxs, item.root_idxs))
    return pieces


def channel_groups(
    graph: tp.DependencyGraph,
    names: dict[nn.Module, str],
    units: dict[str, Tensor],
    weights: dict[str, Tensor],
    protected: set[str],
    reduction: str,
    tied: dict[nn.Module, str],
) -> list[ChannelGroup]:
    """The groups this pruner may prune, each with one reduced score per unit.

    ``names`` maps the traced model's modules to their qualified names; ``units`` holds the
    per-unit scores, ``weights`` the column sums of per-weight scores (one per input feature
    or channel), which score the hidden units of recurrent layers. Groups that touch a module
    of ``tied`` (:func:`~.tracing.tied_weights`) are left alone, with a warning.
    """
    found, uneven = [], []
    roots = (nn.modules.conv._ConvNd, nn.Linear, *RECURRENT_TYPES)
    for group in graph.get_all_groups(root_module_types=roots):
        outputs = [item for item in group if graph.is_out_channel_pruning_fn(item.dep.handler)]
        if any(not item.dep.target.outputs for item in outputs):
            continue  # these units are outputs of the model
        if any(names.get(item.dep.target.module) in protected for item in outputs):
            continue
        root = group[0].dep.target.module
        why = unsupported_recurrence(root)
        if why:
            raise ValueError(
                f"{type(root).__name__} {names[root]!r} {why}: the structured pruner removes "
                "hidden units of single-layer, unidirectional LSTM, GRU and RNN modules: build "
                "it from single-layer, unidirectional modules, or keep its hidden units "
                f"(protect='{names[root]}')"
            )
        width = graph.get_out_channels(root)
        if is_recurrent(root):
            pieces = reader_columns(graph, group, names, weights)
        else:
            pieces = [  # root_idxs holds None where Torch-Pruning cannot map a unit to the root
                (name, units[name], item.idxs, item.root_idxs)
                for item in outputs
                if (name := names.get(item.dep.target.module)) in units
                and None not in item.root_idxs
            ]
        if not pieces:
            continue  # no scored layer in the group: left alone
        ties = {tied[m] for item in group if (m := item.dep.target.module) in tied}
        if ties:
            uneven.append(f"{names[root]} (cutting it would untie {', '.join(sorted(ties))})")
            continue
        folded = unit_channels(group, width)
        if isinstance(folded, str):
            uneven.append(f"{names[root]} ({folded})")
            continue
        channels, attention = folded
        stacked = torch.full((len(pieces), width), torch.nan)
        for row, (_, values, idxs, root_idxs) in enumerate(pieces):
            stacked[row, root_idxs] = values[idxs].float().cpu()
        stacked = stacked[:, channels.flatten()].view(len(pieces), *channels.shape)
        # each layer's score of a unit is the mean over the unit's channels
        stacked = stacked.nanmean(2)
        reduce = {"mean": torch.nanmean, "sum": torch.nansum}.get(reduction)
        scores = reduce(stacked, 0) if reduce else stacked.nan_to_num(nan=-torch.inf).amax(0)
        layers = [p[0] for p in pieces]
        found.append(ChannelGroup(root, group[0].dep.handler, layers, scores, channels, attention))
    if uneven:
        warnings.warn(
            f"the structured pruner leaves alone the groups rooted at {'; '.join(uneven)}",
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
    r"""Indices of the root channels each group loses (lowest unit scores first; ties by
    position).

    Attention groups lose a fraction of their heads under either scope (a head's score is not
    comparable with a channel's). ``round_to`` applies to channels: a group of units of
    :math:`s` channels keeps a multiple of :math:`r / \gcd(r, s)` units.
    """
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
    else:
        assert amount is not None  # the core checks that one of amount and threshold is given
        counts = [min(round(amount * len(g.scores)), len(g.scores) - 1) for g in groups]
        ranked = [i for i, g in enumerate(groups) if not g.attention]
        if scope == "global" and ranked:
            flat = torch.cat([groups[i].scores for i in ranked])
            order = flat.argsort(stable=True)[: round(amount * len(flat))]
            owner = torch.repeat_interleave(torch.tensor([len(groups[i].scores) for i in ranked]))
            hits = torch.bincount(owner[order], minlength=len(ranked)).tolist()
            for i, hit in zip(ranked, hits, strict=True):
                counts[i] = min(hit, len(groups[i].scores) - 1)
    removals = []
    for group, count in zip(groups, counts, strict=True):
        width = len(group.scores)
        step = round_to // math.gcd(round_to, group.channels.shape[1])
        removed = width - kept_width(width, count, step)
        lowest = group.scores.argsort(stable=True)[:removed]
        removals.append(group.channels[lowest].flatten().sort().values)
    return removals


def cut(graph: tp.DependencyGraph, group: ChannelGroup, idxs: Tensor) -> None:
    """Remove root channels ``idxs`` from ``group``; attention modules keep their head size.

    Torch-Pruning's ``MultiheadAttentionPruner`` shrinks ``embed_dim`` and divides it by the
    old number of heads; here whole heads go, so ``num_heads`` falls and ``head_dim`` stays.
    """
    head_dims = [m.head_dim for m in group.attention]
    for module in group.attention:
        module.num_heads = 1  # its check wants the new embed_dim divisible by num_heads
    graph.get_pruning_group(group.root, group.handler, idxs.tolist()).prune()
    for module, head_dim in zip(group.attention, head_dims, strict=True):
        module.num_heads, module.head_dim = module.embed_dim // head_dim, head_dim


def sync_widths(model: nn.Module) -> None:
    """Update the width attributes that forward passes read besides the layers' own.

    torchvision's ``VisionTransformer`` reshapes its patch embedding by ``hidden_dim`` and its
    encoder blocks record ``num_heads``.
    """
    for module in model.modules():
        conv_proj = getattr(module, "conv_proj", None)
        if isinstance(conv_proj, nn.Conv2d) and isinstance(
            getattr(module, "hidden_dim", None), int
        ):
            module.hidden_dim = conv_proj.out_channels
        attention = getattr(module, "self_attention", None)
        if isinstance(attention, nn.MultiheadAttention) and hasattr(module, "num_heads"):
            module.num_heads = attention.num_heads
