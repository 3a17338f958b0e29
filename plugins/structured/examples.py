"""The example input the structured pruner traces a model with: parsed from ``example_shape``
or inferred from the model's first layer (see :mod:`pruneplug_plugins.structured`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pruneplug import ParamError, prunable_layers

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
