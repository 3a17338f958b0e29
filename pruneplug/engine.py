"""Training, evaluation and fine-tuning: one seeded loop that every chapter and plugin shares.

:func:`train` is a plain mini-batch loop (SGD with momentum or Adam, an optional per-epoch
learning-rate schedule from :mod:`torch.optim.lr_scheduler`) with three hooks that cover what
pruning recipes add to training:

* ``penalty(model, inputs, logits)`` is added to the loss (L1 sparsity, distillation from a
  teacher, attention transfer);
* ``augment(inputs, targets)`` transforms each training batch (and may return soft targets);
* ``on_epoch_end(epoch, model)`` runs after each epoch (gradual pruning, logging).

Runs are repeatable: the global RNG is seeded with ``seed`` for the run (and restored
afterwards, so a call does not shift the caller's random stream) and the training loader
shuffles with its own generator seeded by ``seed``; on CPU two calls with the same seed give
bit-identical weights. Models pruned with :mod:`torch.nn.utils.prune` train as they are: the
optimiser updates ``weight_orig`` and the mask keeps pruned weights at exactly zero.

**Devices.** ``device=None`` (the default of :func:`train`, :func:`fine_tune` and
:func:`evaluate`) runs where the model's parameters are: the model is never moved behind the
caller's back. A device given explicitly moves the model there in place, as ``model.to(device)``
does, before anything else. Every batch is moved to that device as it is used, so the data may
live anywhere; other models that a penalty runs (a distillation teacher) run where their own
parameters are (:func:`forward_on`). :func:`pick_device` is the helper for choosing a device
(CUDA when present).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sized
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .plumbing import evaluation_mode, model_device, refresh_masked_weights, scalar_loss

LossFn = Callable[[Tensor, Tensor], Tensor]
Penalty = Callable[[nn.Module, Tensor, Tensor], Tensor]
Augment = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
EpochHook = Callable[[int, nn.Module], None]
Data = Dataset | DataLoader

OPTIMIZERS = ("sgd", "adam")
#: Per-epoch schedules: name -> (optimizer, epochs) -> scheduler. ``step`` divides the rate by 10
#: after each third of the run (twice: at epochs round(E / 3) and round(2 E / 3), those inside the
#: run), ``exponential`` multiplies it by 0.9 each epoch, ``cosine`` anneals it to zero over the
#: run (Loshchilov & Hutter, "SGDR", ICLR 2017).
SCHEDULES: dict[str, Callable[[torch.optim.Optimizer, int], Any]] = {
    "step": lambda opt, epochs: torch.optim.lr_scheduler.MultiStepLR(
        opt, sorted({round(epochs * k / 3) for k in (1, 2)} & set(range(1, epochs))), gamma=0.1
    ),
    "exponential": lambda opt, epochs: torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.9),
    "cosine": lambda opt, epochs: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs),
}
COLUMNS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr")


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` as a checked :class:`torch.device`; ``None`` picks CUDA when present, else CPU.

    A helper for choosing where to put a model (``model.to(pick_device())``); the training
    functions themselves read ``device=None`` as "where the model is" (:func:`training_device`).
    Raises ``ValueError`` for a string that names no device and for a CUDA device this machine
    lacks, rather than failing later inside a kernel.
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(
            f"device={device!r} is not a device: give 'cpu', 'cuda', 'cuda:1', a torch.device, "
            "or None (run where the model is)"
        ) from error
    if chosen.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(
                f"device={str(device)!r} was asked for but CUDA is not available here: pass "
                "device='cpu' or device=None (where the model is)"
            )
        if chosen.index is not None and chosen.index >= count:
            raise ValueError(
                f"device={str(device)!r} was asked for but this machine has {count} CUDA "
                f"device(s), cuda:0 to cuda:{count - 1}"
            )
    return chosen


def training_device(model: nn.Module, device: str | torch.device | None) -> torch.device:
    """The device a training function runs ``model`` on (the device policy of this module).

    ``None``: where the model's parameters are, and nothing is moved. Anything else is checked
    by :func:`pick_device` and the model is moved there **in place** (``model.to(device)``).
    """
    if device is None:
        return model_device(model)
    chosen = pick_device(device)
    model.to(chosen)
    return chosen


def forward_on(model: nn.Module, inputs: Tensor) -> Tensor:
    """``model(inputs)`` run where ``model`` lives; the output comes back on the inputs' device.

    How a training step uses a second model (a teacher) that may sit on another device than the
    one being trained: the batch goes to the model, not the model to the batch, so the caller's
    model is never moved. A model without parameters or buffers runs on the inputs' device.
    """
    output = model(inputs.to(model_device(model, default=inputs.device)))
    return output.to(inputs.device)


def derived_seed(seed: int, *keys: int) -> int:
    """The seed of part ``keys`` of a run seeded ``seed`` (round ``r`` of a schedule: ``(r,)``).

    Independent of every other ``(seed, keys)``, unlike ``seed + r``, with which round 1 of seed
    0 would replay round 0 of seed 1 and runs "with different seeds" would share batch orders.
    NumPy's :class:`~numpy.random.SeedSequence` hashes the pair into a well-mixed 63-bit seed.
    """
    state = np.random.SeedSequence([seed, *keys]).generate_state(1, dtype=np.uint64)
    return int(state[0] >> np.uint64(1))


def make_loader(data: Data, batch_size: int, *, shuffle: bool, seed: int) -> DataLoader:
    """``data`` as a loader: a DataLoader is used as is, a Dataset gets a seeded one."""
    if isinstance(data, DataLoader):
        return data
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(data, batch_size=batch_size, shuffle=shuffle, generator=generator)


def check_data(data: Any, what: str) -> None:
    """Raise a clear error for anything but a non-empty Dataset or DataLoader."""
    if not isinstance(data, (Dataset, DataLoader)):
        raise TypeError(
            f"{what} must be a torch Dataset or DataLoader, got {type(data).__name__}: wrap "
            "tensors as torch.utils.data.TensorDataset(inputs, targets)"
        )
    dataset = data.dataset if isinstance(data, DataLoader) else data
    if not isinstance(dataset, Sized):  # an IterableDataset: checked while iterating
        return
    if len(dataset) == 0:
        raise ValueError(f"{what} is empty: give at least one (input, target) sample")


def hard_labels(targets: Tensor) -> Tensor:
    """Class indices of ``targets``: indices as given, soft (N x classes) targets by argmax."""
    return targets.argmax(1) if targets.dim() == 2 else targets


class History:
    """Per-epoch results of :func:`train`: one row per epoch with the columns in ``COLUMNS``.

    ``history["val_accuracy"]`` gives a column as a list, ``history[0]`` the first row (a dict);
    ``val_loss`` and ``val_accuracy`` are ``None`` without validation data. ``epoch`` counts
    from 1; ``lr`` is the learning rate used during that epoch; ``train_loss`` is the mean of
    the minimised objective (loss plus penalty) and ``train_accuracy`` is measured on the
    (augmented) training batches as they were seen.
    """

    def __init__(self, rows: list[dict[str, Any]] | None = None) -> None:
        self.rows: list[dict[str, Any]] = list(rows or [])

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: str | int) -> Any:
        if isinstance(key, int):
            return self.rows[key]
        if key not in COLUMNS:
            raise KeyError(f"no column {key!r} in the history; columns: {', '.join(COLUMNS)}")
        return [row[key] for row in self.rows]

    def __repr__(self) -> str:
        cells = [list(COLUMNS)]
        for row in self.rows:
            cells.append([format_cell(row[c]) for c in COLUMNS])
        widths = [max(len(r[i]) for r in cells) for i in range(len(COLUMNS))]
        lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
        return f"History({len(self.rows)} epochs)\n" + "\n".join(lines)

    def plot(self, ax: Any = None) -> Any:
        """Plot losses (left axis) and accuracies (right axis) per epoch; return the Axes."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(6, 3.5))
        epochs = self["epoch"]
        twin = ax.twinx()
        for column, axis, style in (
            ("train_loss", ax, "-"),
            ("val_loss", ax, "-"),
            ("train_accuracy", twin, "--"),
            ("val_accuracy", twin, "--"),
        ):
            values = self[column]
            if all(v is not None for v in values):
                axis.plot(epochs, values, style, marker="o", label=column)
        ax.set(xlabel="epoch", ylabel="loss")
        twin.set(ylabel="accuracy", ylim=(0, 1.02))
        handles = ax.get_legend_handles_labels()
        twin_handles = twin.get_legend_handles_labels()
        ax.legend(handles[0] + twin_handles[0], handles[1] + twin_handles[1], loc="center right")
        return ax


def format_cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if value < 1e-3 else f"{value:.4f}"
    return str(value)


def check_train_args(
    epochs: int,
    lr: float,
    optimizer: str,
    momentum: float,
    weight_decay: float,
    batch_size: int,
    schedule: str | None,
) -> None:
    """Raise an error naming the argument and its allowed values before any work is done."""
    for name, count in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"{name}={count!r}: give a whole number >= 1")
    for name, value in (("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{name}={value!r}: give a number")
        if not math.isfinite(value) or value < 0 or (name == "lr" and value == 0):
            bound = "> 0" if name == "lr" else ">= 0"
            raise ValueError(f"{name}={value!r}: give a finite number {bound}")
    if momentum >= 1:  # each step would add more than the whole previous velocity: it diverges
        raise ValueError(f"momentum={momentum!r}: give a number in [0, 1), e.g. 0.9")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of: {', '.join(OPTIMIZERS)}")
    if schedule is not None and schedule not in SCHEDULES:
        raise ValueError(
            f"unknown schedule {schedule!r}; choose one of: {', '.join(SCHEDULES)} (or None for "
            "a constant learning rate)"
        )


def train(
    model: nn.Module,
    data: Data,
    *,
    epochs: int = 10,
    lr: float = 0.1,
    optimizer: str = "sgd",
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    batch_size: int = 64,
    schedule: str | None = None,
    val_data: Data | None = None,
    loss_fn: LossFn | None = None,
    penalty: Penalty | None = None,
    augment: Augment | None = None,
    on_epoch_end: EpochHook | None = None,
    device: str | torch.device | None = None,
    seed: int = 0,
    progress: bool = True,
) -> History:
    """Train ``model`` in place on ``data`` and return its :class:`History`.

    Args:
        model: any classifier returning logits (masked ``torch.nn.utils.prune`` models too).
        data, val_data: a Dataset (a loader shuffled by ``seed`` is made; the validation one is
            not shuffled) or a DataLoader (used as is).
        epochs, lr, batch_size: the usual; ``lr`` is the starting rate of a ``schedule``.
        optimizer: ``"sgd"`` (with ``momentum``) or ``"adam"``; ``weight_decay`` for both.
        schedule: ``None`` (constant), ``"step"``, ``"exponential"`` or ``"cosine"``, stepped
            once per epoch (see ``SCHEDULES``).
        loss_fn: ``loss_fn(logits, targets)``; default cross-entropy, which accepts class
            indices or soft (N x classes) targets.
        penalty: ``penalty(model, inputs, logits) -> scalar`` added to the loss at each step.
        augment: ``augment(inputs, targets) -> (inputs, targets)`` on each training batch.
        on_epoch_end: ``on_epoch_end(epoch, model)`` after each epoch (``epoch`` from 1).
        device: where to train. ``None`` (default): where the model's parameters are, and
            the model is not moved. A device (``"cuda"``, ``"cpu"``, a :class:`torch.device`)
            moves the model there in place, like ``model.to(device)``. Batches are moved to
            the training device one by one wherever ``data`` keeps them.
        seed: seeds the global RNG for the run (restored afterwards) and the shuffling.
        progress: show a tqdm bar over epochs; ``False`` prints nothing at all.
    """
    check_train_args(epochs, lr, optimizer, momentum, weight_decay, batch_size, schedule)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**63:
        raise ValueError(f"seed={seed!r}: give a whole number in [0, 2**63)")
    seed = int(seed)  # a NumPy integer too
    check_data(data, "data")
    if val_data is not None:
        check_data(val_data, "val_data")
    if getattr(augment, "modality", None) == "text":
        raise TypeError(
            f"augment={augment!r} is a text augmenter, which cannot augment image batches: "
            "pass an image augmenter (pruneplug.get_augmenter('rotation'), a Compose of them) "
            "or augment the texts before making the dataset"
        )
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError(
            f"{type(model).__name__} has no trainable parameters: unfreeze some "
            "(p.requires_grad_(True)) before training"
        )
    device = training_device(model, device)
    params = [p for p in model.parameters() if p.requires_grad]
    loss_fn = loss_fn or nn.functional.cross_entropy
    loader = make_loader(data, batch_size, shuffle=True, seed=seed)
    cuda = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        if optimizer == "sgd":
            opt: torch.optim.Optimizer = torch.optim.SGD(
                params, lr=lr, momentum=momentum, weight_decay=weight_decay
            )
        else:
            opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
        scheduler = SCHEDULES[schedule](opt, epochs) if schedule else None
        history = History()
        bar = tqdm(range(1, epochs + 1), desc="train", unit="epoch", disable=not progress)
        for epoch in bar:
            row: dict[str, Any] = {"epoch": epoch, "lr": opt.param_groups[0]["lr"]}
            try:
                row.update(train_epoch(model, loader, opt, loss_fn, penalty, augment, device))
            except FloatingPointError as error:
                raise FloatingPointError(f"epoch {epoch} of {epochs}: {error}") from None
            if scheduler is not None:
                scheduler.step()
            refresh_masked_weights(model)
            row["val_loss"] = row["val_accuracy"] = None
            if val_data is not None:
                val = evaluate(model, val_data, loss_fn=loss_fn, device=device)
                row.update(val_loss=val["loss"], val_accuracy=val["accuracy"])
            history.rows.append(row)
            bar.set_postfix({k: round(v, 4) for k, v in row.items() if isinstance(v, float)})
            if on_epoch_end is not None:
                on_epoch_end(epoch, model)
    return history


def augmented(augment: Augment, inputs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """``augment(inputs, targets)``, checked: it must return an ``(inputs, targets)`` pair."""
    out = augment(inputs, targets)
    if not (isinstance(out, tuple) and len(out) == 2 and all(isinstance(t, Tensor) for t in out)):
        raise TypeError(
            f"augment must return an (inputs, targets) pair of tensors, got "
            f"{type(out).__name__}: an image augmenter called with targets returns one "
            "(aug(x, y)); a function of your own must return (x, y)"
        )
    return out


def largest_magnitude(tensors: list[Tensor]) -> Tensor:
    """The largest absolute value over ``tensors`` (NaN if any holds NaN), in a few kernels: the
    infinity norm, which unlike the 2-norm cannot overflow for finite values."""
    return torch.nn.utils.get_total_norm(tensors, norm_type=math.inf)


def train_epoch(
    model: nn.Module,
    loader: DataLoader,
    opt: torch.optim.Optimizer,
    loss_fn: LossFn,
    penalty: Penalty | None,
    augment: Augment | None,
    device: torch.device,
) -> dict[str, float]:
    """One pass over ``loader``; returns the mean objective and the accuracy on the batches."""
    model.train()
    total_loss, correct, seen = 0.0, 0, 0
    for batch, (inputs, targets) in enumerate(loader):
        inputs, targets = inputs.to(device), targets.to(device)
        if augment is not None:
            inputs, targets = augmented(augment, inputs, targets)
        logits = model(inputs)
        loss = scalar_loss(loss_fn(logits, targets))
        if penalty is not None:
            loss = loss + penalty(model, inputs, logits)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        largest = largest_magnitude(grads) if grads else loss.new_zeros(())
        right = (logits.argmax(1) == hard_labels(targets)).sum()
        # the one wait of the batch (a GPU runs ahead until here): loss, gradient, hits
        checked = [loss.detach(), largest, right]  # float32 each: bfloat16 would round counts
        value, gradient, hits = torch.stack([t.float() for t in checked]).tolist()
        if not (math.isfinite(value) and math.isfinite(gradient)):
            what = (
                f"loss of batch {batch} is {value}"
                if not math.isfinite(value)
                else f"gradient of batch {batch} holds {gradient}"
            )
            raise FloatingPointError(
                f"training diverged: the {what} (the model keeps its weights from before this "
                "step). Lower the learning rate, or check the inputs and the penalty (a too "
                "strong penalty, one not differentiable where it is evaluated such as sqrt at "
                "0, inputs with NaN or inf)"
            )
        opt.step()
        n = len(inputs)
        total_loss += value * n
        correct += round(hits)
        seen += n
    if seen == 0:
        raise ValueError("the training data yielded no batch: give at least one sample")
    weights = [p.detach() for p in model.parameters()]
    if weights and not torch.isfinite(largest_magnitude(weights)):
        raise FloatingPointError(  # the last step had finite gradients and a too large rate
            "training diverged: the last optimiser step of the epoch left NaN or inf weights; "
            "lower the learning rate"
        )
    return {"train_loss": total_loss / seen, "train_accuracy": correct / seen}


def evaluate(
    model: nn.Module,
    data: Data,
    *,
    loss_fn: LossFn | None = None,
    batch_size: int = 256,
    device: str | torch.device | None = None,
) -> dict[str, float]:
    """Mean loss and accuracy of ``model`` on ``data``: ``{"loss": ..., "accuracy": ...}``.

    Runs in eval mode under ``torch.no_grad`` and restores each sub-module's mode afterwards.
    ``device=None`` runs where the model's parameters are (nothing is moved); a device given
    explicitly moves the model there in place (see :func:`training_device`). Batches are moved
    to that device one by one. Soft targets count as their argmax class.
    """
    check_data(data, "data")
    device = training_device(model, device)
    loss_fn = loss_fn or nn.functional.cross_entropy
    loader = make_loader(data, batch_size, shuffle=False, seed=0)
    total_loss, correct, seen = 0.0, 0, 0
    with evaluation_mode(model), torch.no_grad():
        for inputs, targets in loader:
            inputs, targets = inputs.to(device), targets.to(device)
            logits = model(inputs)
            n = len(inputs)
            total_loss += loss_fn(logits, targets).item() * n
            correct += (logits.argmax(1) == hard_labels(targets)).sum().item()
            seen += n
    if seen == 0:
        raise ValueError("the evaluation data yielded no batch: give at least one sample")
    return {"loss": total_loss / seen, "accuracy": correct / seen}


#: What :func:`fine_tune` changes from :func:`train`: a 10x smaller rate for fewer epochs, so
#: a pruned network recovers without forgetting what the dense one learnt.
FINE_TUNE_DEFAULTS: dict[str, Any] = {"lr": 0.01, "epochs": 5}


def fine_tune(model: nn.Module, data: Data, **kwargs: Any) -> History:
    """:func:`train` with fine-tuning defaults (``lr=0.01``, ``epochs=5``); any can be overridden.

    Used after pruning to recover accuracy; masked weights stay zero. Devices as in
    :func:`train`: ``device=None`` fine-tunes where the model is.
    """
    return train(model, data, **{**FINE_TUNE_DEFAULTS, **kwargs})
