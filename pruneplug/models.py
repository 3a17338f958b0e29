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
import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from itertools import pairwise
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

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


def _check_per_layer(builder: str, name: str, value: object) -> None:
    """``value`` must be a sequence, one size per layer (a bare int is named, with the fix)."""
    if not isinstance(value, Sequence):
        raise TypeError(
            f"{builder}: {name} is one size per layer, a sequence, got {value!r}: write "
            f"{name}=({value!r},) for one layer"
        )


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
    _check_per_layer("mlp", "hidden", hidden)
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
    _check_per_layer("cnn", "widths", widths)
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


# --------------------------------------------------------------------------- sequence models


def _padding_mask(ids: Tensor, padding_idx: int) -> tuple[Tensor, Tensor]:
    """``(real, lengths)``: the mask of real tokens of right-padded ``ids`` and their counts.

    A row of padding only reads as one token (its first), so every row has an output.
    """
    if ids.dim() != 2 or ids.dtype not in (torch.int64, torch.int32):
        raise ValueError(
            f"a sequence model takes token ids of shape N x L (int64), got shape "
            f"{tuple(ids.shape)} and dtype {ids.dtype}: encode texts with "
            "pruneplug.tokens.Vocabulary.encode_batch"
        )
    real = ids != padding_idx
    lengths = real.sum(1).clamp(min=1)
    real = torch.arange(ids.shape[1], device=ids.device) < lengths[:, None]
    return real, lengths


class LSTMClassifier(nn.Module):
    """Embedding, one LSTM over the real tokens (packed), Linear on the last hidden state."""

    def __init__(
        self, vocab_size: int, embed_dim: int, hidden: int, num_classes: int, padding_idx: int,
        layers: int, bidirectional: bool,
    ) -> None:  # fmt: skip
        super().__init__()
        self.padding_idx = padding_idx
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=padding_idx)
        self.lstm = nn.LSTM(
            embed_dim, hidden, num_layers=layers, batch_first=True, bidirectional=bidirectional
        )
        self.classifier = nn.Linear(hidden * (2 if bidirectional else 1), num_classes)

    def forward(self, ids: Tensor) -> Tensor:
        _, lengths = _padding_mask(ids, self.padding_idx)
        packed = nn.utils.rnn.pack_padded_sequence(
            self.embedding(ids), lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        _, (h, _) = self.lstm(packed)  # h: (layers * directions) x N x hidden
        last = torch.cat([h[-2], h[-1]], 1) if self.lstm.bidirectional else h[-1]
        return self.classifier(last)


def lstm_classifier(
    vocab_size: int,
    embed_dim: int = 32,
    hidden: int = 64,
    num_classes: int = 2,
    padding_idx: int = 0,
    layers: int = 1,
    bidirectional: bool = False,
    seed: int | None = 0,
) -> LSTMClassifier:
    """A text classifier: token embedding, LSTM (Hochreiter & Schmidhuber 1997), Linear.

    Takes right-padded token ids ``N x L`` (:meth:`pruneplug.tokens.Vocabulary.encode_batch`);
    the LSTM runs on a packed sequence of the real tokens only, so more padding never changes
    the logits, and the classifier reads the final hidden state ``h_T`` (both directions'
    with ``bidirectional=True``). Modules: ``embedding``, ``lstm``, ``classifier``. With the
    defaults and a vocabulary of 100: 3.2 k + 25 k + 130 = 28.4 k parameters (an LSTM layer
    has ``4 (d_in h + h^2 + 2 h)`` of them: four gates, two bias vectors).
    """
    _check_sizes(
        "lstm_classifier", vocab_size=vocab_size, embed_dim=embed_dim, hidden=hidden,
        num_classes=num_classes, layers=layers,
    )  # fmt: skip
    if not isinstance(bidirectional, bool):
        raise TypeError(
            f"lstm_classifier: bidirectional must be True or False, got {bidirectional!r}"
        )
    if (
        isinstance(padding_idx, bool)
        or not isinstance(padding_idx, int)
        or not 0 <= padding_idx < vocab_size
    ):
        raise ValueError(
            f"lstm_classifier: padding_idx must be an id in 0..{vocab_size - 1}, got "
            f"{padding_idx!r} (pruneplug.tokens uses 0)"
        )

    def make() -> LSTMClassifier:
        return LSTMClassifier(
            vocab_size, embed_dim, hidden, num_classes, padding_idx, layers, bidirectional
        )

    kwargs = dict(
        vocab_size=vocab_size, embed_dim=embed_dim, hidden=hidden, num_classes=num_classes,
        padding_idx=padding_idx, layers=layers, bidirectional=bidirectional,
    )  # fmt: skip
    return _built("lstm_classifier", make, kwargs, seed)


def sinusoidal_positions(length: int, dim: int) -> Tensor:
    """Vaswani et al.'s fixed position codes, ``length x dim``.

    ``PE[p, 2i] = sin(p / 10000^(2i / dim))`` and ``PE[p, 2i + 1] = cos(p / 10000^(2i / dim))``.
    """
    position = torch.arange(length, dtype=torch.float32)[:, None]
    frequency = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency)[:, : dim // 2]
    return table


class TransformerClassifier(nn.Module):
    """Embedding + positions, Transformer encoder with a padding mask, mean pool, Linear."""

    def __init__(
        self, vocab_size: int, d_model: int, heads: int, layers: int, mlp: int, max_len: int,
        num_classes: int, padding_idx: int, positions: str, dropout: float,
    ) -> None:  # fmt: skip
        super().__init__()
        self.padding_idx = padding_idx
        self.max_len = max_len
        self.embedding = nn.Embedding(vocab_size, d_model, padding_idx=padding_idx)
        if positions == "learned":
            self.positions = nn.Parameter(torch.randn(max_len, d_model))
        else:
            self.register_buffer("positions", sinusoidal_positions(max_len, d_model))
        layer = nn.TransformerEncoderLayer(
            d_model, heads, dim_feedforward=mlp, dropout=dropout, batch_first=True,
            norm_first=True,
        )  # fmt: skip
        self.encoder = nn.TransformerEncoder(
            layer, layers, norm=nn.LayerNorm(d_model), enable_nested_tensor=False
        )
        self.classifier = nn.Linear(d_model, num_classes)

    def forward(self, ids: Tensor) -> Tensor:
        real, lengths = _padding_mask(ids, self.padding_idx)
        width = int(lengths.max())  # positions past every row's last token are dropped
        if width > self.max_len:
            raise ValueError(
                f"a sequence has {width} tokens but this transformer_classifier has positions "
                f"for max_len={self.max_len}: build it with a larger max_len, or encode with "
                f"encode_batch(texts, length={self.max_len})"
            )
        ids, real = ids[:, :width], real[:, :width]
        x = self.embedding(ids) + self.positions[:width]
        x = self.encoder(x, src_key_padding_mask=~real)
        pooled = (x * real[..., None]).sum(1) / lengths[:, None]
        return self.classifier(pooled)


#: Position encodings of :func:`transformer_classifier`.
POSITIONS = ("learned", "sinusoidal")


def transformer_classifier(
    vocab_size: int,
    d_model: int = 32,
    heads: int = 4,
    layers: int = 2,
    mlp: int = 64,
    max_len: int = 64,
    num_classes: int = 2,
    padding_idx: int = 0,
    positions: str = "sinusoidal",
    dropout: float = 0.0,
    seed: int | None = 0,
) -> TransformerClassifier:
    """A text classifier: a small Transformer encoder (Vaswani et al. 2017), mean-pooled.

    Token embeddings plus ``positions`` ("sinusoidal": the fixed codes of
    :func:`sinusoidal_positions`; "learned": a trained ``max_len x d_model`` table, drawn
    N(0, 1) like the embeddings so that position is not drowned at the start) go through
    ``layers`` pre-norm ``nn.TransformerEncoderLayer(batch_first=True)`` blocks (``heads``
    attention heads, an MLP of width ``mlp``, ``dropout``) that attend only to real tokens
    (``src_key_padding_mask`` from each right-padded row's count of ids ``!= padding_idx``, as
    :meth:`pruneplug.tokens.Vocabulary.encode_batch` makes them); the classifier reads the mean
    of the outputs at the real tokens, so more padding never changes the logits. Modules:
    ``embedding``, ``positions``, ``encoder`` (``encoder.layers[i].self_attn`` is an
    ``nn.MultiheadAttention``), ``classifier``. On the generated reviews
    (:func:`pruneplug.sequences.load_reviews`) sinusoidal positions learnt faster than learned
    ones (0.97 vs 0.94 validation accuracy after 20 epochs).
    """
    _check_sizes(
        "transformer_classifier", vocab_size=vocab_size, d_model=d_model, heads=heads,
        layers=layers, mlp=mlp, max_len=max_len, num_classes=num_classes,
    )  # fmt: skip
    if d_model % heads:
        raise ValueError(
            f"transformer_classifier: d_model={d_model} must be a multiple of heads={heads} "
            "(each head gets d_model / heads dimensions)"
        )
    if positions not in POSITIONS:
        raise ValueError(
            f"transformer_classifier: unknown positions {positions!r}; choose one of "
            f"{', '.join(POSITIONS)}"
        )
    if (
        isinstance(padding_idx, bool)
        or not isinstance(padding_idx, int)
        or not 0 <= padding_idx < vocab_size
    ):
        raise ValueError(
            f"transformer_classifier: padding_idx must be an id in 0..{vocab_size - 1}, got "
            f"{padding_idx!r} (pruneplug.tokens uses 0)"
        )
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ValueError(f"transformer_classifier: dropout must be in [0, 1), got {dropout!r}")

    def make() -> TransformerClassifier:
        return TransformerClassifier(
            vocab_size, d_model, heads, layers, mlp, max_len, num_classes, padding_idx,
            positions, float(dropout),
        )  # fmt: skip

    kwargs = dict(
        vocab_size=vocab_size, d_model=d_model, heads=heads, layers=layers, mlp=mlp,
        max_len=max_len, num_classes=num_classes, padding_idx=padding_idx, positions=positions,
        dropout=dropout,
    )  # fmt: skip
    return _built("transformer_classifier", make, kwargs, seed)


def tiny_vit(
    image_size: int = 8,
    patch_size: int = 2,
    in_channels: int = 1,
    hidden: int = 32,
    mlp: int = 64,
    heads: int = 4,
    layers: int = 2,
    num_classes: int = 10,
    seed: int | None = 0,
) -> nn.Module:
    """A tiny Vision Transformer (Dosovitskiy et al. 2021) for the 1 x 8 x 8 digits.

    torchvision's ``VisionTransformer``: the image is cut into ``(image_size / patch_size)^2``
    patches (16 of 2 x 2 by default), each embedded by ``conv_proj``, a class token and learned
    positions are added, ``layers`` encoder blocks run, and ``heads.head`` classifies the class
    token. torchvision's patch embedding takes 3 channels; this one takes ``in_channels``,
    initialised as torchvision does (truncated normal, std ``1 / sqrt(fan_in)``).
    """
    from torchvision.models.vision_transformer import VisionTransformer

    _check_sizes(
        "tiny_vit", image_size=image_size, patch_size=patch_size, in_channels=in_channels,
        hidden=hidden, mlp=mlp, heads=heads, layers=layers, num_classes=num_classes,
    )  # fmt: skip
    if image_size % patch_size:
        raise ValueError(
            f"tiny_vit: image_size={image_size} must be a multiple of patch_size={patch_size}"
        )
    if hidden % heads:
        raise ValueError(f"tiny_vit: hidden={hidden} must be a multiple of heads={heads}")

    def make() -> nn.Module:
        model = VisionTransformer(
            image_size=image_size, patch_size=patch_size, num_layers=layers, num_heads=heads,
            hidden_dim=hidden, mlp_dim=mlp, num_classes=num_classes,
        )  # fmt: skip
        model.conv_proj = nn.Conv2d(in_channels, hidden, patch_size, stride=patch_size)
        fan_in = in_channels * patch_size**2
        nn.init.trunc_normal_(model.conv_proj.weight, std=math.sqrt(1 / fan_in))
        nn.init.zeros_(model.conv_proj.bias)
        return model

    kwargs = dict(
        image_size=image_size, patch_size=patch_size, in_channels=in_channels, hidden=hidden,
        mlp=mlp, heads=heads, layers=layers, num_classes=num_classes,
    )  # fmt: skip
    return _built("tiny_vit", make, kwargs, seed)


#: pruneplug's own builders; :func:`build` also takes any torchvision classifier name.
BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "mlp": mlp,
    "cnn": cnn,
    "lstm_classifier": lstm_classifier,
    "transformer_classifier": transformer_classifier,
    "tiny_vit": tiny_vit,
}


def build(name: str, **kwargs: Any) -> nn.Module:
    """Build a model by name: one of :data:`BUILDERS` ("mlp", "cnn", "lstm_classifier",
    "transformer_classifier", "tiny_vit") or a torchvision classifier such as "resnet18".

    ``build(model.pruneplug_spec["builder"], **model.pruneplug_spec["kwargs"])`` rebuilds a
    model built by this module.
    """
    if name in BUILDERS:
        return BUILDERS[name](**kwargs)
    if name in torchvision_classifiers():
        return torchvision_model(name, **kwargs)
    raise ValueError(
        f"unknown model {name!r}; choose mlp, cnn or a torchvision classification model: "
        f"{', '.join(torchvision_classifiers())}; or for token sequences lstm_classifier, "
        "transformer_classifier; or tiny_vit"
    )
