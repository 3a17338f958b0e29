"""Reference models: the MLP and CNN the course prunes, and any torchvision classifier.

* :func:`mlp` - LeNet-300-100 (LeCun et al. 1998; the network of Han et al.'s magnitude
  pruning, NeurIPS 2015): 64-300-100-10 on the 8x8 digits.
* :func:`cnn` - Conv-BatchNorm-ReLU blocks, one 2x max-pool, global average pooling and a
  linear classifier. Global pooling makes it work for any input size (8x8 digits, 28x28 MNIST,
  32x32 CIFAR-10), and batch norm gives BN-scale scorers and network slimming their
  per-channel factors. Its convolutions dominate the compute, so removing channels (structured
  pruning) makes it measurably faster on a CPU.
* :func:`torchvision_model` - any torchvision classification model, randomly initialised
  (no weights are downloaded).

**Seeding.** Every builder takes ``seed``: with an int (default 0) the weights are drawn from a
forked RNG seeded with it, so the same call always builds the same model and the global RNG is
left exactly as it was; with ``None`` they are drawn from the global RNG (``torch.manual_seed``
decides).

**Rebuilding.** Every built model carries ``model.pruneplug_spec = {"builder": name, "kwargs":
{...}}`` (JSON values only), and ``build(spec["builder"], **spec["kwargs"])`` builds the same
architecture again - what :mod:`pruneplug.serialize` stores to load a model.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable, Sequence
from itertools import pairwise
from typing import Any, TypeVar

import torch
from torch import nn

#: Activation functions of :func:`mlp`, by name.
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}


def _check_sizes(builder: str, **sizes: int | Sequence[int]) -> None:
    """Every size (an int, or each int of a sequence) must be a positive int."""
    for name, value in sizes.items():
        values = value if isinstance(value, Sequence) else (value,)
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
            raise ValueError(f"{builder}: {name} must be positive int(s), got {value!r}")


M = TypeVar("M", bound=nn.Module)


def _built(builder: str, make: Callable[[], M], kwargs: dict[str, Any], seed: int | None) -> M:
    """Run ``make`` under ``seed`` (see the module docstring) and attach the rebuild spec."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"{builder}: seed must be an int or None, got {seed!r}")
    try:  # a JSON round trip also turns tuples into lists, as a load from disk would
        spec = json.loads(json.dumps({"builder": builder, "kwargs": {**kwargs, "seed": seed}}))
    except TypeError as err:
        raise TypeError(
            f"{builder}: every argument must be a JSON value (int, float, str, bool, None, list) "
            f"so that the model can be saved and rebuilt ({err}); build the model yourself and "
            "save its state_dict instead"
        ) from err
    if seed is None:
        model = make()
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = make()
    model.pruneplug_spec = spec
    return model


def mlp(
    in_features: int = 64,
    hidden: Sequence[int] = (300, 100),
    num_classes: int = 10,
    activation: str = "relu",
    seed: int | None = 0,
) -> nn.Sequential:
    """A multilayer perceptron: Flatten, then Linear + activation per hidden width, then Linear.

    The defaults are LeNet-300-100 for the 8x8 digits (64-300-100-10, 50,610 parameters).
    Layers are named ``flatten``, ``fc1``, ``act1``, ``fc2``, ..., the last ``fc`` being the
    classifier; use ``in_features=784`` for MNIST.
    """
    _check_sizes("mlp", in_features=in_features, hidden=hidden, num_classes=num_classes)
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"mlp: unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}"
        )

    def make() -> nn.Sequential:
        layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
        widths = [in_features, *hidden]
        for i, (n_in, n_out) in enumerate(pairwise(widths), start=1):
            layers[f"fc{i}"] = nn.Linear(n_in, n_out)
            layers[f"act{i}"] = ACTIVATIONS[activation]()
        layers[f"fc{len(widths)}"] = nn.Linear(widths[-1], num_classes)
        return nn.Sequential(layers)

    kwargs = dict(
        in_features=in_features, hidden=list(hidden), num_classes=num_classes, activation=activation
    )
    return _built("mlp", make, kwargs, seed)


def cnn(
    in_channels: int = 1,
    num_classes: int = 10,
    widths: Sequence[int] = (32, 64, 128),
    seed: int | None = 0,
) -> nn.Sequential:
    """A small CNN: Conv-BN-ReLU blocks, a 2x max-pool before the last block, then classifier.

    Block ``i`` (named ``block{i}`` with ``conv``, ``bn``, ``relu``) is a 3x3 convolution
    (padding 1, no bias: the batch norm after it has one) to ``widths[i - 1]`` channels. After
    the blocks come ``gap`` (global average pooling), ``flatten`` and the Linear ``classifier``.
    With the defaults on 8x8 digits: 2.4 M multiply-accumulates per image, 94 k parameters;
    use ``in_channels=3`` for CIFAR-10.
    """
    _check_sizes("cnn", in_channels=in_channels, num_classes=num_classes, widths=widths)
    if len(widths) == 0:
        raise ValueError("cnn: widths needs at least one block width, e.g. (32, 64, 128)")

    def make() -> nn.Sequential:
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        channels = [in_channels, *widths]
        for i, (c_in, c_out) in enumerate(pairwise(channels), start=1):
            if i == len(widths):
                layers["pool"] = nn.MaxPool2d(2)
            layers[f"block{i}"] = nn.Sequential(
                OrderedDict(
                    conv=nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                    bn=nn.BatchNorm2d(c_out),
                    relu=nn.ReLU(),
                )
            )
        layers["gap"] = nn.AdaptiveAvgPool2d(1)
        layers["flatten"] = nn.Flatten()
        layers["classifier"] = nn.Linear(widths[-1], num_classes)
        return nn.Sequential(layers)

    kwargs = dict(in_channels=in_channels, num_classes=num_classes, widths=list(widths))
    return _built("cnn", make, kwargs, seed)


def torchvision_classifiers() -> list[str]:
    """Names of torchvision's classification models (``resnet18``, ``mobilenet_v2``, ...)."""
    import torchvision.models

    return torchvision.models.list_models(module=torchvision.models)


def torchvision_model(
    name: str, num_classes: int = 10, seed: int | None = 0, **kwargs: Any
) -> nn.Module:
    """A torchvision classification model, randomly initialised; no weights are downloaded.

    ``kwargs`` go to the model's builder (e.g. ``dropout=0.2``); they must be JSON values so
    the model can be rebuilt on load.
    """
    import torchvision.models

    names = torchvision_classifiers()
    if name not in names:
        raise ValueError(
            f"unknown torchvision classification model {name!r}; choose one of {', '.join(names)}"
        )
    _check_sizes(name, num_classes=num_classes)
    if "weights" in kwargs or "weights_backbone" in kwargs:
        raise ValueError(
            f"torchvision_model({name!r}): pruneplug never downloads weights, so it builds "
            "randomly initialised models only; load weights you have on disk with "
            "model.load_state_dict(torch.load(path)) (or pruneplug.serialize.load)"
        )

    def make() -> nn.Module:
        return torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)

    return _built(name, make, {"num_classes": num_classes, **kwargs}, seed)


#: pruneplug's own builders; :func:`build` also takes any torchvision classifier name.
BUILDERS: dict[str, Callable[..., nn.Module]] = {"mlp": mlp, "cnn": cnn}


def build(name: str, **kwargs: Any) -> nn.Module:
    """Build a model by name: "mlp", "cnn" or a torchvision classifier such as "resnet18".

    ``build(model.pruneplug_spec["builder"], **model.pruneplug_spec["kwargs"])`` rebuilds a
    model built by this module.
    """
    if name in BUILDERS:
        return BUILDERS[name](**kwargs)
    if name in torchvision_classifiers():
        return torchvision_model(name, **kwargs)
    raise ValueError(
        f"unknown model {name!r}; choose {', '.join(BUILDERS)} or a torchvision classification "
        f"model: {', '.join(torchvision_classifiers())}"
    )
