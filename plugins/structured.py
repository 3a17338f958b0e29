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

Units that must go together are folded into one unit, scored by the mean of their channels'
group scores:

* **grouped convolutions** (RegNet, ResNeXt): a group touching a convolution with :math:`G > 1`
  groups (not depthwise) loses the same positions in every group, so each group keeps the same
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
head sizes; a warning names it). A protected layer keeps its output units; its inputs still
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
refused: remove the masks first (``torch.nn.utils.prune.remove``).

Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017 (channel pruning by unit score);
Molchanov et al., "Importance Estimation for Neural Network Pruning", CVPR 2019 (group scores).
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import Tensor, nn
from torch.nn.utils import prune as torch_prune

from pruneplug import Param, ParamError, Pruner, Scores, hookimpl, prunable_layers
from pruneplug.plumbing import layer_tensor

#: Spatial sizes tried, in order, when the example input of a convolutional model is inferred.
PROBE_SIZES = (8, 32, 64, 224)
#: Sequence lengths tried, in order, when the example token ids are inferred (after ``max_len``).
PROBE_LENGTHS = (16, 8, 1)
#: ``example_shape`` prefixes that ask for token ids, and their dtypes.
TOKEN_DTYPES = {"int64": torch.int64, "int32": torch.int32}


@dataclass(frozen=True)
class Example:
    """What the pruner traces with: token ids of ``dtype`` (``None``: random floats in the
    model's dtype), one sample of ``shape`` (``None``: inferred from the first layer)."""

    dtype: torch.dtype | None = None
    shape: tuple[int, ...] | None = None


def parse_shape(text: str, given: str | None = None) -> tuple[int, ...]:
    """Parse ``"3x32x32"`` or ``"3,32,32"`` (one sample, no batch dimension) into a tuple;
    an error quotes ``given``, the whole ``example_shape`` it came from (default ``text``)."""
    parts = text.replace(",", "x").split("x")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if not shape or any(d < 1 for d in shape):
        raise ParamError(
            f"pruner 'structured': example_shape={given or text!r} is not a shape: give the size "
            "of one input sample without the batch dimension, e.g. '64' or '3x32x32', or a "
            "number of token ids after their dtype, e.g. 'int64:16'"
        )
    return shape


def parse_example(text: str) -> Example:
    """Parse ``example_shape``: ``""``, ``"3x32x32"``, ``"int64:16"`` or ``"int64"``."""
    text = text.strip()
    prefix, colon, rest = text.partition(":")
    prefix = prefix.strip()
    if not colon and prefix not in TOKEN_DTYPES:
        return Example(shape=parse_shape(text) if text else None)
    if prefix not in TOKEN_DTYPES:
        raise ParamError(
            f"pruner 'structured': example_shape={text!r} has dtype prefix {prefix!r}: token "
            f"ids are {' or '.join(TOKEN_DTYPES)} (e.g. 'int64:16'); a float input takes no "
            "prefix ('3x32x32')"
        )
    rest = rest.strip()
    return Example(TOKEN_DTYPES[prefix], parse_shape(rest, text) if rest else None)


def first_layer(model: nn.Module) -> nn.Module:
    """The model's first ``nn.Embedding`` or prunable layer, in definition order."""
    prunable = set(prunable_layers(model).values())
    return next(m for m in model.modules() if isinstance(m, nn.Embedding) or m in prunable)


def token_ids(model: nn.Module, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    """A one-sample batch of ``shape`` token ids for the model's first ``nn.Embedding``.

    Ids are drawn (from a generator of its own, seed 0: the global RNG is left alone) in
    ``0..num_embeddings-1`` without the ``padding_idx``, so no position is padding.
    """
    embedding = next((m for m in model.modules() if isinstance(m, nn.Embedding)), None)
    if embedding is None:
        raise ValueError(
            f"example_shape asks for token ids ({dtype}), but {type(model).__name__} has no "
            "nn.Embedding to draw them for: give the shape of a float sample, e.g. "
            "example_shape='3x32x32'"
        )
    padding = embedding.padding_idx
    choices = embedding.num_embeddings - (padding is not None and embedding.num_embeddings > 1)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(choices, (1, *shape), generator=generator)
    if padding is not None and choices < embedding.num_embeddings:
        ids += ids >= padding  # skip the padding id
    return ids.to(device=embedding.weight.device, dtype=dtype)


def example_input(model: nn.Module, example: Example) -> Tensor:
    """A one-sample batch that ``model`` (in eval mode) accepts, as ``example`` asks or
    inferred from the first layer (see the module docstring)."""
    param = next(model.parameters())
    dtype, candidates = example.dtype, [example.shape] if example.shape else []
    if not candidates:
        first = first_layer(model)
        if isinstance(first, nn.Embedding) or dtype is not None:
            dtype = dtype or torch.int64
            max_len = getattr(model, "max_len", None)
            lengths = [max_len] if isinstance(max_len, int) and max_len > 0 else []
            candidates = [(n,) for n in dict.fromkeys([*lengths, *PROBE_LENGTHS])]
        elif isinstance(first, nn.Linear):
            candidates = [(first.in_features,)]
        else:
            dims = first.weight.dim() - 2
            candidates = [(first.in_channels, *[s] * dims) for s in PROBE_SIZES]
    problem: Exception | None = None
    for candidate in candidates:
        if dtype is None:
            x = torch.randn(1, *candidate, device=param.device, dtype=param.dtype)
        else:
            x = token_ids(model, candidate, dtype)
        try:
            with torch.no_grad():
                model(x)
        except Exception as error:  # any failure means: not this shape
            problem = error
            continue
        return x
    tried = ", ".join("x".join(map(str, c)) for c in candidates)
    what = "an example input" if dtype is None else f"{dtype} token ids"
    raise ValueError(
        f"the structured pruner could not run {type(model).__name__} on {what} of shape {tried} "
        f"({type(problem).__name__}: {problem}): pass the shape of one input sample, e.g. "
        "get_pruner('structured', example_shape='3x32x32'), or 'int64:16' for 16 token ids"
    )


def output_shapes(output: object) -> list[tuple[int, ...]]:
    """Shapes of every tensor in a model output (tensor, tuple, list or dict of tensors)."""
    return [tuple(t.shape) for t in tp.utils.flatten_as_list(output)]


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


def is_recurrent(module: nn.Module) -> bool:
    """An ``nn.LSTM``, ``nn.GRU`` or ``nn.RNN``."""
    return isinstance(module, RECURRENT_TYPES)


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
    """Coupled units that are removed together: the group's root layer and its unit scores.

    A *unit* is what the pruner keeps or removes as one: a channel of the root, or, in a group
    that must shrink evenly, a fold of channels (``channels[u]`` holds the root channels of
    unit ``u``): one position in every group of a grouped convolution, or the ``head_dim``
    channels of one attention head.
    """

    root: nn.Module
    handler: Callable  # the Torch-Pruning function that prunes the root's output units
    layers: list[str]  # names of the scored layers whose output units the group holds
    scores: Tensor  # one reduced score per unit
    channels: Tensor  # units x channels-per-unit: the root channels of each unit
    attention: list[nn.MultiheadAttention]  # attention modules whose heads the units are


def is_grouped_conv(module: object) -> bool:
    """A convolution with ``1 < groups`` that is not depthwise."""
    return (
        isinstance(module, nn.modules.conv._ConvNd)
        and module.groups > 1
        and not module.groups == module.in_channels == module.out_channels
    )


def unit_channels(group: tp.Group, width: int) -> tuple[Tensor, list[nn.MultiheadAttention]] | str:
    """The root channels of each unit of ``group`` and its attention modules (or why not).

    Plain groups have one channel per unit. A group touching a grouped convolution with
    :math:`G` groups has ``width / G`` units, unit :math:`p` being channel :math:`p` of every
    group (so each group loses the same positions and the convolution's weight stays
    rectangular, as Torch-Pruning does). A group touching ``nn.MultiheadAttention`` has one
    unit per head: the head's ``head_dim`` channels, which must be the same in every attention
    module of the group (a residual stream shared by all layers of a transformer is).
    """
    folds = {m.groups for m in (item.dep.target.module for item in group) if is_grouped_conv(m)}
    attention = [
        item for item in group if isinstance(item.dep.target.module, nn.MultiheadAttention)
    ]
    if folds and attention:
        return "it couples grouped convolutions with attention heads"
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
) -> list[ChannelGroup]:
    """The groups this pruner may prune, each with one reduced score per unit.

    ``names`` maps the traced model's modules to their qualified names; ``units`` holds the
    per-unit scores, ``weights`` the column sums of per-weight scores (one per input feature
    or channel), which score the hidden units of recurrent layers.
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
        protected = self.protected(model)
        pruned = copy.deepcopy(model)  # the model passed in is never touched
        modes = {name: m.training for name, m in pruned.named_modules()}
        trainable = {name: p.requires_grad for name, p in pruned.named_parameters()}
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
        groups = channel_groups(graph, names, units, columns, protected, self.config["reduction"])
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
        for name, param in pruned.named_parameters():
            param.requires_grad_(trainable[name])
        return pruned


@hookimpl
def register_pruners(register):
    register(Structured)
