r"""Transfer learning and few-shot learning: reuse a network trained on one task for another.

A classifier is a **backbone** (every layer but the last), which turns an input into features,
and a **head** (the last Linear layer), which maps features to classes. The early features of a
network trained on one task are general and carry over to a related task; the later ones grow
specific to the task they were trained on (Yosinski, Clune, Bengio & Lipson, "How transferable
are features in deep neural networks?", NeurIPS 2014). So a new task with few labelled examples
starts from a pre-trained backbone with a new head, trained in one of two ways:

* **linear probe** - the backbone is frozen and only the head is trained: logistic regression on
  fixed features :math:`\phi(x)`, :math:`\hat y = \mathrm{softmax}(W \phi(x) + b)`;
* **full fine-tuning** - every weight trains, starting from the pre-trained ones
  (:func:`pruneplug.engine.train` or :func:`~pruneplug.engine.fine_tune`). Kornblith, Shlens &
  Le ("Do Better ImageNet Models Transfer Better?", CVPR 2019) compare the two over twelve
  tasks: fine-tuning comes out ahead; the probe is cheaper and leaves the backbone as it was.

With :math:`k` labelled examples per class (":math:`N`-way :math:`k`-shot", Wang, Yao, Kwok & Ni,
"Generalizing from a Few Examples: A Survey on Few-Shot Learning", ACM Computing Surveys 2020)
the prior knowledge in the backbone is what keeps the model from memorising the few shots.

This module holds the pieces:

* :func:`class_task` - a task made of some classes of a dataset, labels remapped to 0..n-1
  (digits 0-4 as the source task, 5-9 as the target);
* :func:`k_shot` - a seeded, balanced sample of ``k`` examples per class (the same set for every
  method compared; the 1-shot set is part of the 5-shot set, which is part of the 10-shot set);
* :func:`find_head`, :func:`replace_head` - the head of a model and a copy with a new one;
* :func:`reinitialise` - a copy with some layers drawn afresh (transfer only the first blocks);
* :func:`save_backbone`, :func:`load_backbone` - the backbone's weights in a local file (a dict
  of tensors written by ``torch.save`` and read with ``weights_only=True``: no code runs on
  load, nothing is downloaded); a plain ``state_dict`` file from elsewhere loads too;
* :func:`linear_probe` - train the head of a model with its backbone frozen (weights *and*
  batch-norm statistics stay bit-identical).

Masks of :mod:`torch.nn.utils.prune` travel with a backbone (pruned weights stay zero through
the transfer); a backbone shrunk by structured pruning loads into a model of the same, shrunk
shapes (e.g. ``replace_head(pruned, n)``), never into the dense architecture. Chapter 17 of
the course (``17-transfer-and-few-shot.ipynb``) runs all of it on digits 0-4 -> 5-9.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import prune
from torch.utils.data import TensorDataset

from .data import Splits
from .engine import Data, History, train
from .plumbing import copy_model, layer_tensor, refresh_masked_weights
from .serialize import masked_tensors

__all__ = [
    "FORMAT",
    "class_task",
    "find_head",
    "k_shot",
    "linear_probe",
    "load_backbone",
    "reinitialise",
    "replace_head",
    "save_backbone",
]

FORMAT = "pruneplug.backbone"
VERSION = 1
#: Names a head is looked for under, as a direct child of the model, before the last child.
HEAD_NAMES = ("classifier", "fc", "head")


# --------------------------------------------------------------------------- tasks


def _tensors(dataset: Any, what: str) -> tuple[Tensor, Tensor]:
    """The ``(inputs, labels)`` of a ``TensorDataset`` with 1-d integer labels."""
    if not isinstance(dataset, TensorDataset) or len(dataset.tensors) != 2:
        raise TypeError(
            f"{what} must be a TensorDataset(inputs, labels), got {type(dataset).__name__}: "
            "wrap tensors as torch.utils.data.TensorDataset(inputs, labels)"
        )
    inputs, labels = dataset.tensors
    if labels.dim() != 1 or labels.dtype.is_floating_point:
        raise ValueError(
            f"{what} needs class indices (1-d integer labels), got labels of shape "
            f"{tuple(labels.shape)} and dtype {labels.dtype}"
        )
    return inputs, labels


def _select(dataset: TensorDataset, classes: list[int], what: str) -> TensorDataset:
    """The examples of ``classes`` in ``dataset``, label ``classes[i]`` -> ``i``."""
    inputs, labels = _tensors(dataset, what)
    if len(labels) and int(labels.min()) < 0:
        raise ValueError(
            f"{what} has negative labels ({int(labels.min())}): class indices start at 0; drop "
            "unlabelled examples (label -1) before choosing classes"
        )
    size = max([*classes, *labels.tolist()]) + 1
    remap = torch.full((size,), -1, dtype=torch.int64, device=labels.device)  # data may be on a GPU
    remap[torch.tensor(classes, device=labels.device)] = torch.arange(
        len(classes), device=labels.device
    )
    keep = remap[labels] >= 0
    return TensorDataset(inputs[keep].clone(), remap[labels[keep]])


def class_task(splits: Splits, classes: Sequence[int], name: str | None = None) -> Splits:
    """The task of telling ``classes`` apart: their examples only, label ``classes[i]`` -> ``i``.

    Every split keeps the examples of the given classes, in their order, with labels remapped
    to ``0..len(classes) - 1`` (so a model for the task has ``len(classes)`` outputs) and class
    names ``[splits.classes[c] for c in classes]``. ``class_task(digits, range(5))`` is digits
    0-4, ``class_task(digits, range(5, 10))`` digits 5-9 as labels 0-4. The tensors are copies.
    """
    if isinstance(classes, range):
        classes = list(classes)
    if (
        not isinstance(classes, Sequence)
        or not classes
        or not all(isinstance(c, int) and not isinstance(c, bool) for c in classes)
    ):
        raise TypeError(f"classes must be a non-empty list of class indices, got {classes!r}")
    classes = list(classes)
    n = len(splits.classes)
    wrong = [c for c in classes if not 0 <= c < n]
    if wrong:
        raise ValueError(
            f"classes {wrong} are not classes of {splits.name}: give indices in 0..{n - 1}"
        )
    if len(set(classes)) != len(classes):
        raise ValueError(f"classes {classes} name a class twice: give each class once")
    parts = {
        s: _select(getattr(splits, s), classes, f"{splits.name}.{s}")
        for s in ("train", "val", "test")
    }
    return Splits(
        **parts,
        classes=[splits.classes[c] for c in classes],
        name=name or f"{splits.name}[{','.join(map(str, classes))}]",
    )


def k_shot(dataset: TensorDataset, k: int, seed: int = 0) -> TensorDataset:
    """``k`` examples of every class of ``dataset``, drawn by a ``torch.Generator`` from ``seed``.

    Balanced (every class present in ``dataset`` gives exactly ``k``) and deterministic: the
    same seed gives the same examples on every machine, so every method compared trains on the
    same set. Each class's examples are drawn by one seeded permutation and the first ``k``
    taken, so for one seed the 1-shot set is part of the 5-shot set, which is part of the
    10-shot set. The result lists the classes in order (class 0's ``k`` examples first); a
    training loader shuffles it. Raises ``ValueError`` when a class has fewer than ``k``.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k={k!r}: give the number of examples per class, a whole number >= 1")
    inputs, labels = _tensors(dataset, "k_shot's dataset")
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for c in torch.unique(labels).tolist():
        members = torch.nonzero(labels == c).flatten()
        if len(members) < k:
            raise ValueError(
                f"class {c} has only {len(members)} examples, fewer than k={k}: lower k or use "
                "a larger split"
            )
        chosen.append(members[torch.randperm(len(members), generator=generator)[:k]])
    index = torch.cat(chosen)
    return TensorDataset(inputs[index].clone(), labels[index].clone())


# --------------------------------------------------------------------------- heads


def find_head(model: nn.Module, head: str | None = None) -> str:
    """The qualified name of ``model``'s head: the final ``nn.Linear``, features to classes.

    ``head`` names it explicitly (any sub-module name, e.g. ``"heads.head"``). Otherwise a
    direct child named ``classifier``, ``fc`` or ``head`` that is a Linear (``models.cnn``,
    torchvision's ResNets), else the last child of the model if it is a Linear
    (``models.mlp``'s last ``fc``). Raises ``ValueError`` naming the fix when none is found.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected a torch.nn.Module, got {type(model).__name__}")
    if head is not None:
        try:
            module = model.get_submodule(head)
        except AttributeError as error:
            raise ValueError(
                f"{type(model).__name__} has no sub-module {head!r}: pass head= the name of its "
                f"final Linear layer (one of {_linear_names(model)})"
            ) from error
        if not isinstance(module, nn.Linear):
            raise ValueError(
                f"head {head!r} of {type(model).__name__} is a {type(module).__name__}, not an "
                f"nn.Linear: pass head= the name of its final Linear layer (one of "
                f"{_linear_names(model)})"
            )
        return head
    children = dict(model.named_children())
    for name in HEAD_NAMES:
        if isinstance(children.get(name), nn.Linear):
            return name
    if children and isinstance(list(children.values())[-1], nn.Linear):
        return list(children)[-1]
    raise ValueError(
        f"cannot tell the head of {type(model).__name__}: it has no Linear child named "
        f"{', '.join(HEAD_NAMES)} and its last child is not a Linear; pass head= the name of "
        f"its final Linear layer (one of {_linear_names(model)})"
    )


def _linear_names(model: nn.Module) -> str:
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    return ", ".join(repr(n) for n in names) if names else "none: the model has no Linear layer"


def replace_head(
    model: nn.Module, num_classes: int, *, head: str | None = None, seed: int = 0
) -> nn.Module:
    """A copy of ``model`` whose head is a fresh ``nn.Linear`` with ``num_classes`` outputs.

    The backbone of the copy is a deep copy of ``model``'s (masks, shrunk shapes and mode
    included); the new head takes the old one's input width, has a bias if it had one, is
    dense and sits on the same device, initialised by PyTorch's default under ``seed`` (the
    global RNG is left as it was). ``model`` itself is not modified. A ``pruneplug_spec``
    (:mod:`pruneplug.models`) gets the new ``num_classes``, so :mod:`pruneplug.serialize` saves
    and loads the copy.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes={num_classes!r}: give the number of classes, an int >= 1")
    name = find_head(model, head)
    copied = copy_model(model)
    old = copied.get_submodule(name)
    assert isinstance(old, nn.Linear)  # find_head checked it
    weight = layer_tensor(old, "weight_orig" if hasattr(old, "weight_orig") else "weight")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    new.to(device=weight.device, dtype=weight.dtype).train(old.training)
    parent, _, child = name.rpartition(".")
    setattr(copied.get_submodule(parent), child, new)
    spec = getattr(copied, "pruneplug_spec", None)
    if isinstance(spec, dict) and "num_classes" in spec.get("kwargs", {}):
        vars(copied)["pruneplug_spec"] = {
            **spec,
            "kwargs": {**spec["kwargs"], "num_classes": num_classes},
        }
    return copied


def reinitialise(model: nn.Module, names: Sequence[str], *, seed: int = 0) -> nn.Module:
    """A copy of ``model`` whose sub-modules ``names`` are drawn afresh; the rest is kept.

    Yosinski et al. (2014) transfer the first :math:`n` layers and re-learn the others: the
    early features are general, the late ones specific to the source task, and copying those
    can hurt the target (*negative transfer*). ``reinitialise(pretrained, ["block3"])`` keeps
    blocks 1-2 of a :func:`pruneplug.models.cnn` and gives block 3 PyTorch's default
    initialisation (``reset_parameters`` of every layer inside it, batch-norm statistics
    included), under ``seed``; the global RNGs (CPU, and the GPUs the layers are on) are left
    as they were. ``model`` is not modified.
    Layers masked by ``torch.nn.utils.prune`` are refused: a fresh draw would not respect the
    mask, so reinitialise before pruning or remove the masks first.
    """
    if isinstance(names, str):
        raise TypeError(f"names must be a list of sub-module names, got the string {names!r}")
    masked = set(masked_tensors(model))
    modules = []
    for name in names:
        try:
            module = model.get_submodule(name)
        except AttributeError as error:
            raise ValueError(
                f"{type(model).__name__} has no sub-module {name!r}; its children are "
                f"{', '.join(repr(n) for n, _ in model.named_children())}"
            ) from error
        for inner_name, _ in module.named_modules():
            qualified = f"{name}.{inner_name}".rstrip(".")
            if any(t.rpartition(".")[0] == qualified for t in masked):
                raise ValueError(
                    f"{qualified!r} is masked (torch.nn.utils.prune): reinitialise before "
                    "pruning, or remove the mask first (prune.remove(module, 'weight'))"
                )
        modules.append(name)
    copied = copy_model(model)
    cuda = sorted({t.device.index or 0 for t in copied.parameters() if t.device.type == "cuda"})
    with torch.random.fork_rng(devices=cuda):  # layers on a GPU draw from its generator
        torch.manual_seed(seed)
        for name in modules:
            for inner in copied.get_submodule(name).modules():
                reset = getattr(inner, "reset_parameters", None)
                if callable(reset):
                    reset()
    return copied


def _is_backbone(key: str, head: str) -> bool:
    return not key.startswith(f"{head}.")


# --------------------------------------------------------------------------- files


def save_backbone(model: nn.Module, path: str | os.PathLike, *, head: str | None = None) -> None:
    """Write ``model``'s backbone (all but its head) to ``path``, for :func:`load_backbone`.

    The file is a dict of plain data and tensors written by ``torch.save``: ``format``,
    ``version``, ``head`` (the name left out), ``masked`` (backbone tensors masked by
    ``torch.nn.utils.prune``) and ``state_dict`` (the backbone's weights, masks and buffers).
    ``head`` as in :func:`find_head`. The model is not modified.
    """
    name = find_head(model, head)
    state = {k: v.detach().clone() for k, v in model.state_dict().items() if _is_backbone(k, name)}
    torch.save(
        {
            "format": FORMAT,
            "version": VERSION,
            "head": name,
            "masked": [t for t in masked_tensors(model) if _is_backbone(t, name)],
            "state_dict": state,
        },
        Path(path),
    )


def _read(path: str | os.PathLike) -> dict[str, Any]:
    """The contents of a backbone file, or of a plain ``state_dict`` file, as a backbone file."""
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"path must be a file path (str or pathlib.Path), got {path!r}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no backbone file at {str(path)!r}: check the path (pruneplug.transfer.save_backbone "
            "writes one; nothing is ever downloaded)"
        )
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # whatever the unpickler makes of a foreign file
        first = str(error).splitlines()[0] if str(error) else ""
        raise ValueError(
            f"{str(path)!r} is not a backbone or state_dict file ({type(error).__name__}: "
            f"{first}); write one with save_backbone or torch.save(model.state_dict(), path) - "
            "files are read with weights_only=True and never run pickled code"
        ) from error
    if isinstance(saved, dict) and saved.get("format") == FORMAT:
        if saved.get("version") != VERSION:
            raise ValueError(
                f"{str(path)!r} has backbone format version {saved.get('version')!r}, but this "
                f"pruneplug reads version {VERSION}: load it with the version that saved it"
            )
        return saved
    if isinstance(saved, dict) and saved and all(isinstance(v, Tensor) for v in saved.values()):
        masked = [k.removesuffix("_mask") for k in saved if k.endswith("_mask")]
        return {"head": None, "masked": masked, "state_dict": saved}
    raise ValueError(
        f"{str(path)!r} holds neither a backbone (save_backbone) nor a state_dict (a dict of "
        "tensors): write it with save_backbone(model, path) or torch.save(model.state_dict(), path)"
    )


def load_backbone(
    path: str | os.PathLike, model: nn.Module, *, head: str | None = None
) -> nn.Module:
    """A copy of ``model`` with the backbone weights read from ``path``; its head is kept.

    ``path`` holds a file of :func:`save_backbone`, or a plain ``state_dict`` of a whole model
    (``torch.save(model.state_dict(), path)``), whose head entries are ignored. ``model`` gives
    the architecture and the head (e.g. ``models.cnn(num_classes=5)`` for a 5-class target):
    every backbone tensor of the file must exist in it with the same shape, and every backbone
    tensor of it must be in the file, else ``ValueError`` names the layers (a backbone that was
    shrunk by structured pruning loads into a model of the same shapes, such as
    ``replace_head(pruned, n)``). Masked tensors in the file are masked in the copy, so pruned
    weights stay zero. Read with ``weights_only=True`` onto the CPU, then copied to wherever
    ``model``'s tensors are. ``model`` itself is not modified.
    """
    saved = _read(path)
    name = find_head(model, head)
    copied = copy_model(model)
    state = {k: v for k, v in saved["state_dict"].items() if _is_backbone(k, name)}
    ours = set(masked_tensors(copied))
    modules = dict(copied.named_modules())
    for qualified in saved["masked"]:
        if not _is_backbone(qualified, name) or qualified in ours:
            continue
        module_name, _, tensor_name = qualified.rpartition(".")
        module = modules.get(module_name)
        mask = state.get(f"{qualified}_mask")
        if (
            module is None
            or mask is None
            or not isinstance(getattr(module, tensor_name, None), Tensor)
        ):
            continue  # reported below as a missing or unexpected key
        if getattr(module, tensor_name).shape != mask.shape:
            _mismatch(path, f"{qualified}_mask", mask.shape, getattr(module, tensor_name).shape)
        prune.custom_from_mask(module, tensor_name, mask.to(getattr(module, tensor_name).device))
    target = {k: v for k, v in copied.state_dict().items() if _is_backbone(k, name)}
    missing = sorted(set(target) - set(state))
    unexpected = sorted(set(state) - set(target))
    if missing or unexpected:
        raise ValueError(
            f"{str(path)!r} does not fit {type(model).__name__}'s backbone: "
            + "; ".join(
                part
                for part in (
                    f"the model has {', '.join(missing)} but the file does not" if missing else "",
                    f"the file has {', '.join(unexpected)} but the model does not"
                    if unexpected
                    else "",
                )
                if part
            )
            + ". Build the model with the architecture the backbone was saved from (a masked "
            "backbone loads into a dense model of the same shapes, not the other way round)"
        )
    for key, value in state.items():
        if value.shape != target[key].shape:
            _mismatch(path, key, value.shape, target[key].shape)
    copied.load_state_dict({**copied.state_dict(), **state}, strict=True)
    refresh_masked_weights(copied)
    return copied


def _mismatch(path: str | os.PathLike, key: str, saved: torch.Size, model: torch.Size) -> None:
    layer = key.rpartition(".")[0]
    raise ValueError(
        f"{str(path)!r} does not fit the model: layer {layer!r} has {key.rpartition('.')[2]} of "
        f"shape {tuple(saved)} in the file but {tuple(model)} in the model. Build the model with "
        "the widths the backbone was saved with (for a backbone shrunk by structured pruning, "
        "load it into replace_head(pruned_model, num_classes))"
    )


# --------------------------------------------------------------------------- probing


@contextmanager
def _frozen_backbone(model: nn.Module, head: str) -> Iterator[nn.Module]:
    """For the block, ``model`` with only its head trainable and its backbone in eval mode.

    Yields a wrapper whose ``train()`` trains the head only: the backbone's batch norms keep
    their running statistics and dropout stays off, so the features are the fixed function a
    linear probe needs. Every parameter's ``requires_grad`` is restored afterwards.
    """
    flags = [(p, p.requires_grad) for p in model.parameters()]
    head_module = model.get_submodule(head)
    head_params = {id(p) for p in head_module.parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in head_params)
    try:
        yield _Probe(model, head_module)
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


class _Probe(nn.Module):
    """``model`` whose ``train(mode)`` puts only the head in ``mode``, the rest in eval mode."""

    def __init__(self, model: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.model = model
        vars(self)["head"] = head  # not registered twice: it is already inside model

    def forward(self, inputs: Tensor) -> Tensor:
        return self.model(inputs)

    def train(self, mode: bool = True) -> _Probe:
        self.training = mode
        self.model.eval()
        vars(self)["head"].train(mode)
        return self


def linear_probe(
    model: nn.Module, data: Data, *, head: str | None = None, **train_kwargs: Any
) -> History:
    """Train only the head of ``model``, in place, on ``data``; the backbone stays as it was.

    A linear probe: the backbone is frozen (no gradient, and held in eval mode so that batch
    norm statistics do not move either - its parameters and buffers end bit-identical) and the
    head learns a linear classifier on its fixed features. Keywords go to
    :func:`pruneplug.engine.train` (``epochs``, ``lr``, ``augment``, ``val_data``, ``seed``...);
    its defaults apply. Returns the :class:`~pruneplug.engine.History`. Like ``engine.train``
    it changes ``model`` (its head) in place: pass ``replace_head(...)``'s copy to keep the
    original. The modes and ``requires_grad`` flags are restored afterwards.
    """
    name = find_head(model, head)
    modes = [(m, m.training) for m in model.modules()]
    try:
        with _frozen_backbone(model, name) as probe:
            return train(probe, data, **train_kwargs)
    finally:
        for module, training in modes:
            module.training = training
