"""Save and load dense, masked and physically smaller models, without pickling code.

A pruned model differs from the architecture it was built from in two ways a plain
``state_dict`` cannot carry: masked layers (``torch.nn.utils.prune``) hold ``weight_orig`` +
``weight_mask`` and a forward pre-hook instead of ``weight``, and structured pruning shrinks
layers (fewer features, channels, groups). :func:`save` writes, with ``torch.save``, a dict of
plain data and tensors:

* ``format``, ``version``: what the file is;
* ``spec``: how to rebuild the architecture - ``model.pruneplug_spec``, ``{"builder": name,
  "kwargs": {...}}``, which the builders of :mod:`pruneplug.models` set (``None`` otherwise);
* ``modules``: for every sub-module, its type name, train/eval mode and shape attributes
  (``in_features``, ``out_channels``, ``groups``, ``num_features``, ...);
* ``masked``: the names of masked tensors (``"fc1.weight"``);
* ``state_dict``: the weights, masks and buffers.

:func:`load` reads it with ``torch.load(weights_only=True)`` - no code in the file runs - then
rebuilds the architecture (``pruneplug.models.build(spec["builder"], **spec["kwargs"])``, or the
instance passed as ``model=`` for architectures of your own), shrinks every module whose
saved shape differs the way structured pruning shrinks it (the shape attributes are set and the
module's parameters and buffers get the saved shapes; Torch-Pruning does the same in place, so
any layer type it prunes is covered), re-applies the masks with
``torch.nn.utils.prune.custom_from_mask`` and finally loads the weights with
``load_state_dict(strict=True)``, so any mismatch is an error rather than a silent partial load.

There is deliberately no pickled-module fallback: a file that runs code on load is unsafe to
share, and a model without a spec loads onto a fresh instance of its architecture instead.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune

from .plumbing import copy_model, refresh_masked_weights

FORMAT = "pruneplug.model"
VERSION = 1
#: Module attributes that hold layer sizes, which structured pruning changes.
SHAPE_ATTRS = (
    "in_features",
    "out_features",
    "in_channels",
    "out_channels",
    "groups",
    "num_features",
    "num_channels",
    "num_groups",
    "normalized_shape",
    "num_parameters",
    "num_embeddings",
    "embedding_dim",
    "embed_dim",  # nn.MultiheadAttention: heads removed change these three
    "num_heads",
    "head_dim",
    "kdim",
    "vdim",
    "input_size",  # nn.LSTM / GRU / RNN
    "hidden_size",
    "hidden_dim",  # torchvision's VisionTransformer
)


def masked_tensors(model: nn.Module) -> list[str]:
    """Qualified names (``"fc1.weight"``) of tensors masked by ``torch.nn.utils.prune``."""
    names = []
    for module_name, module in model.named_modules():
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, prune.BasePruningMethod):
                names.append(f"{module_name}.{hook._tensor_name}".lstrip("."))
    return names


def shapes(model: nn.Module) -> dict[str, dict[str, Any]]:
    """Each sub-module's type name, mode and shape attributes, by qualified name."""
    return {
        name: {
            "type": type(module).__name__,
            "training": module.training,
            "shape": {a: getattr(module, a) for a in SHAPE_ATTRS if hasattr(module, a)},
        }
        for name, module in model.named_modules()
    }


def save(model: nn.Module, path: str | os.PathLike) -> None:
    """Write ``model`` (dense, masked or shrunk) to ``path`` for :func:`load`.

    The architecture is rebuilt from ``model.pruneplug_spec`` when present (models from
    :mod:`pruneplug.models`); other models load with ``load(path, model=<fresh instance>)``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"save needs the model (a torch.nn.Module), got {type(model).__name__}: for a "
            "state_dict or other tensors use torch.save"
        )
    spec = getattr(model, "pruneplug_spec", None)
    torch.save(
        {
            "format": FORMAT,
            "version": VERSION,
            "spec": spec,
            "modules": shapes(model),
            "masked": masked_tensors(model),
            "state_dict": model.state_dict(),
        },
        Path(path),
    )


def read(path: str | os.PathLike, map_location: str | torch.device) -> dict[str, Any]:
    """The checked contents of a file written by :func:`save`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no model file at {str(path)!r}: check the path (files are written by "
            "pruneplug.serialize.save)"
        )
    try:
        saved = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # whatever the unpickler makes of a foreign file
        raise ValueError(
            f"{str(path)!r} is not a pruneplug model file ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}); pruneplug.serialize.load reads "
            "only files written by pruneplug.serialize.save, and never runs pickled code"
        ) from error
    if not isinstance(saved, dict) or saved.get("format") != FORMAT:
        raise ValueError(
            f"{str(path)!r} is not a pruneplug model file (a torch file without the "
            f"{FORMAT!r} header): save models with pruneplug.serialize.save"
        )
    if saved.get("version") != VERSION:
        raise ValueError(
            f"{str(path)!r} has pruneplug model format version {saved.get('version')!r}, but "
            f"this pruneplug reads version {VERSION}: load it with the pruneplug version that "
            "saved it (or upgrade pruneplug)"
        )
    return saved


def rebuild(spec: Any) -> nn.Module:
    """The architecture named by a ``pruneplug_spec`` (random weights, overwritten on load)."""
    from . import models

    if not isinstance(spec, dict) or not isinstance(spec.get("kwargs", {}), dict):
        raise ValueError(
            f"malformed model spec {spec!r}: expected {{'builder': name, 'kwargs': {{...}}}}"
        )
    with torch.random.fork_rng(devices=[]):  # initialising weights must not move the global RNG
        model = models.build(spec["builder"], **spec.get("kwargs", {}))
    # a plain attribute (nn.Module's own __setattr__ types its attributes as tensors/modules)
    vars(model)["pruneplug_spec"] = spec
    return model


def resize(module: nn.Module, name: str, saved: dict[str, Any], state: dict[str, Any]) -> None:
    """Give ``module`` the saved shape attributes and the saved shapes of its own tensors."""
    for attr, value in saved["shape"].items():
        setattr(module, attr, value)
    prefix = f"{name}." if name else ""
    for tensor_name, param in list(module.named_parameters(recurse=False)):
        key = prefix + tensor_name
        key = key if key in state else key + "_orig"  # the tensor is masked in the file
        if key in state and state[key].shape != param.shape:
            empty = torch.empty(state[key].shape, dtype=param.dtype, device=param.device)
            setattr(module, tensor_name, nn.Parameter(empty, requires_grad=param.requires_grad))
    for tensor_name, buffer in list(module.named_buffers(recurse=False)):
        key = prefix + tensor_name
        if buffer is not None and key in state and state[key].shape != buffer.shape:
            empty = torch.empty(state[key].shape, dtype=buffer.dtype, device=buffer.device)
            module._buffers[tensor_name] = empty


def load(
    path: str | os.PathLike,
    *,
    model: nn.Module | None = None,
    map_location: str | torch.device = "cpu",
) -> nn.Module:
    """Read a model written by :func:`save`: same shapes, masks, weights, mode and outputs.

    Args:
        path: the file.
        model: an instance of the saved architecture as built (dense, unpruned), needed only
            for models not built by :mod:`pruneplug.models`; a copy of it is reshaped, masked
            and filled (the instance itself is not modified).
        map_location: device of the loaded tensors and of the returned model (default the CPU).
    """
    saved = read(path, map_location)
    if model is None:
        if saved["spec"] is None:
            raise ValueError(
                f"{str(path)!r} holds a model that pruneplug.models did not build (it has no "
                "pruneplug_spec), so its architecture cannot be rebuilt from the file: pass a "
                "fresh instance of it, load(path, model=MyNet())"
            )
        model = rebuild(saved["spec"])
    else:
        model = copy_model(model)
    model.to(map_location)  # masks and resized tensors are made beside the loaded ones
    state = saved["state_dict"]
    modules = dict(model.named_modules())
    for name, info in saved["modules"].items():
        module = modules.get(name)
        if module is None or type(module).__name__ != info["type"]:
            found = "nothing" if module is None else type(module).__name__
            raise ValueError(
                f"{str(path)!r} was saved from another architecture: module {name!r} is "
                f"{info['type']} in the file but {found} in the rebuilt model; pass the "
                "architecture the model was saved from"
            )
        resize(module, name, info, state)
    for qualified in saved["masked"]:
        module_name, _, tensor_name = qualified.rpartition(".")
        mask = state[f"{qualified}_mask"]
        prune.custom_from_mask(modules[module_name], tensor_name, mask)
    model.load_state_dict(state, strict=True)
    refresh_masked_weights(model)  # the masks' pre-hooks computed ``weight`` before the load
    for name, info in saved["modules"].items():
        modules[name].training = info["training"]
    return model
