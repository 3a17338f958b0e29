r"""Lottery tickets: iterative magnitude pruning with weight rewinding, and its control.

A dense network :math:`f(x; \theta)` with initial weights :math:`\theta_0` contains a subnetwork
:math:`f(x; m \odot \theta_0)` (a binary mask :math:`m`) that, trained alone, matches the dense
network's accuracy: Frankle & Carbin, "The Lottery Ticket Hypothesis: Finding Sparse, Trainable
Neural Networks", ICLR 2019. Deeper networks need the weights of a slightly trained network
instead, :math:`\theta_k` after :math:`k` epochs ("late rewinding"; Frankle, Dziugaite, Roy &
Carbin, "Linear Mode Connectivity and the Lottery Ticket Hypothesis", ICML 2020).

:func:`lottery_ticket` finds the ticket by iterative magnitude pruning (IMP) with rewinding:

1. train the dense network for :math:`T` epochs, keeping :math:`\theta_k` (:math:`k = 0`: the
   initialisation); :math:`m_0 = 1`;
2. for rounds :math:`r = 1 .. R`: prune the fraction :math:`p` of the weights still alive,
   :math:`m_r = m_{r-1} \wedge \mathrm{keep}(|m_{r-1} \odot \theta^{(r-1)}_T|)`, so the sparsity
   is :math:`s_r = 1 - (1 - p)^r`; **rewind** to :math:`m_r \odot \theta_k`; retrain
   :math:`T - k` epochs to :math:`\theta^{(r)}_T`;
3. the winning ticket is :math:`(m_R, \theta_k)`, returned trained as :math:`m_R \odot
   \theta^{(R)}_T`.

The control of both papers, :func:`random_reinit`, trains the same mask from a fresh random
initialisation, :math:`m_R \odot \theta'_0`, with the same budget: where the ticket learns
faster or better than the control, the initial values matter, not only the mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import prune
from tqdm.auto import tqdm

from ..contracts import LossFn, layer_tensor
from ..engine import Data, History, derived_seed, format_cell, pick_device, train
from ..plumbing import copy_model, model_device, prunable_targets, prunable_tensors
from .steps import Pruned, PrunerLike, ScorerLike, Step, check_count, require_mask_pruner

Mask = dict[str, Tensor]


@dataclass
class Ticket:
    r"""What :func:`lottery_ticket` returns: the trained ticket and how it was found.

    The per-round lists have ``rounds + 1`` entries; entry 0 is the dense run.

    Attributes:
        model: the winning ticket trained after the last round, :math:`m_R \odot
            \theta^{(R)}_T`, masked with :mod:`torch.nn.utils.prune` (``weight_orig`` and
            ``weight_mask`` on every prunable layer).
        masks: per round, ``{layer name: bool tensor}`` on the CPU, True = kept; ``masks[0]``
            keeps everything and each mask is contained in the one before.
        sparsity: per round, the fraction of the prunable layers' weights that ``masks[r]``
            removes (:math:`1 - (1-p)^r` up to rounding to whole weights).
        histories: per round, the :class:`~pruneplug.engine.History` of its training run
            (``histories[0]``: the dense run of ``epochs``; then ``epochs - rewind_epoch`` each).
        rewind_state: :math:`\theta_k`, the dense model's ``state_dict`` after ``rewind_epoch``
            epochs (0: as given), on the CPU; every round starts from it.
        rewind_epoch: :math:`k`.
        retrain_kwargs: the keywords of the last round's ``train(model, **retrain_kwargs)``
            call (data, epochs, seed, learning rate...), which :func:`random_reinit` replays.
    """

    model: nn.Module
    masks: list[Mask]
    sparsity: list[float]
    histories: list[History]
    rewind_state: dict[str, Tensor]
    rewind_epoch: int
    retrain_kwargs: dict[str, Any]

    @property
    def mask(self) -> Mask:
        """The final mask :math:`m_R` (``masks[-1]``)."""
        return self.masks[-1]

    @property
    def accuracy(self) -> list[float | None]:
        """Per round, the validation accuracy at the end of its run (None without val_data)."""
        return [history[-1]["val_accuracy"] for history in self.histories]

    def rewound(self) -> nn.Module:
        r"""A new copy of the untrained ticket, :math:`m_R \odot \theta_k`."""
        return with_mask(unpruned(self.model, self.mask), self.rewind_state, self.mask)

    def reinitialised(self, seed: int) -> nn.Module:
        r"""A new copy of the final mask on a fresh initialisation, :math:`m_R \odot \theta'_0`.

        :math:`\theta'_0` is drawn by every module's own ``reset_parameters()`` on the CPU from
        an RNG seeded with ``seed`` (the caller's random stream is left as it was), then moved
        to where the ticket is, so a seed gives the same values on every device.
        """
        model = unpruned(self.model, self.mask)
        device = model_device(model)
        model.to("cpu")
        lacking = [
            name or type(model).__name__
            for name, module in model.named_modules()
            if next(module.parameters(recurse=False), None) is not None
            and not hasattr(module, "reset_parameters")
        ]
        if lacking:
            raise ValueError(
                f"cannot draw a fresh initialisation: module {lacking[0]!r} holds parameters but "
                "has no reset_parameters() method; give it one that initialises its parameters"
            )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for module in model.modules():
                reset = getattr(module, "reset_parameters", None)
                if callable(reset):
                    reset()
        targets, tensors = prunable_targets(model), prunable_tensors(model)
        # a target's unmasked tensor in the state dict: "<layer>.weight", or the tensor's name
        keys = {name: name if name in tensors else f"{name}.weight" for name in self.mask}
        if self.rewind_epoch == 0 and all(
            torch.equal(layer_tensor(*targets[name]).detach(), self.rewind_state[keys[name]])
            for name in self.mask
        ):
            raise ValueError(
                f"seed={seed} draws exactly the ticket's own initialisation (the model was "
                "built with this seed), so the control would be the ticket itself: pass "
                "another seed"
            )
        return with_mask(model.to(device), model.state_dict(), self.mask)

    def __repr__(self) -> str:
        rows = [("round", "sparsity", "val_accuracy")]
        for r, (sparsity, accuracy) in enumerate(zip(self.sparsity, self.accuracy, strict=True)):
            rows.append((str(r), format_cell(sparsity), format_cell(accuracy)))
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
        head = f"Ticket(rewind_epoch={self.rewind_epoch}, {len(self.masks) - 1} rounds)"
        return "\n".join([head, *lines])


def host_state(model: nn.Module) -> dict[str, Tensor]:
    """A copy of ``model.state_dict()`` on the CPU."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def keep_masks(model: nn.Module) -> Mask:
    """Every prunable target's mask (layers' weights, attention, recurrent and embedding
    weights) as a CPU bool tensor (all True where unpruned)."""
    masks = {}
    for name, (module, attribute) in prunable_targets(model).items():
        mask = getattr(module, f"{attribute}_mask", None)
        masks[name] = (
            torch.ones(layer_tensor(module, attribute).shape, dtype=torch.bool)
            if mask is None
            else mask.detach().to("cpu").bool()
        )
    return masks


def mask_sparsity(mask: Mask) -> float:
    """The fraction of weights a mask removes, over all its layers."""
    kept = sum(int(m.sum()) for m in mask.values())
    return 1 - kept / sum(m.numel() for m in mask.values())


def with_mask(dense: nn.Module, state: dict[str, Tensor], mask: Mask) -> nn.Module:
    r"""A copy of the unpruned ``dense`` holding ``state`` with ``mask`` applied, :math:`m \odot
    \theta`, as :func:`torch.nn.utils.prune.custom_from_mask` masks (``weight_orig`` holds
    ``state`` exactly)."""
    model = copy_model(dense)
    model.load_state_dict(state)
    targets = prunable_targets(model)
    for name, keep in mask.items():
        module, attribute = targets[name]
        weight = layer_tensor(module, attribute)
        prune.custom_from_mask(module, attribute, keep.to(weight.device, weight.dtype))
    return model


def unpruned(model: nn.Module, mask: Mask) -> nn.Module:
    """A copy of a model masked by :func:`with_mask` with the masks taken off again."""
    model = copy_model(model)
    targets = prunable_targets(model)
    for name in mask:
        prune.remove(*targets[name])
    return model


def lottery_ticket(
    model: nn.Module,
    *,
    data: Data,
    rounds: int = 5,
    rate: float = 0.2,
    epochs: int = 10,
    rewind_epoch: int = 0,
    scorer: ScorerLike = "magnitude",
    pruner: PrunerLike = "unstructured",
    val_data: Data | None = None,
    loss_fn: LossFn | None = None,
    seed: int = 0,
    progress: bool = True,
    **train_kwargs: Any,
) -> Ticket:
    r"""Find a lottery ticket of ``model`` by iterative magnitude pruning with rewinding.

    Trains a copy of ``model`` densely for ``epochs`` (:func:`pruneplug.engine.train`, seed
    ``seed``), keeping its weights :math:`\theta_k` after ``rewind_epoch`` epochs; then, in each
    of ``rounds`` rounds, prunes the fraction ``rate`` (:math:`p`) of the weights still alive,
    rewinds the survivors to :math:`m_r \odot \theta_k` and retrains ``epochs - rewind_epoch``
    epochs (seed ``derived_seed(seed, r)``). The sparsity after round :math:`r` is
    :math:`1 - (1-p)^r` (``rate=0.2``: 20, 36, 48.8, 59, 67.2 % in 5 rounds; 10 rounds: 89.3 %).
    ``model`` itself is never changed; the same ``seed`` gives the same ticket (on one machine).

    Args:
        model: the dense network as initialised (:math:`\theta_0`); not already pruned.
        data, val_data: the training data; the validation data, evaluated after every epoch
            (:attr:`Ticket.accuracy`).
        rounds, rate: :math:`R` rounds of pruning :math:`p` of the remaining weights each.
            Frankle & Carbin prune 20 % per round for fully connected layers (10-15 % for
            convolutions).
        epochs: :math:`T`, the training budget of the dense run.
        rewind_epoch: :math:`k`, 0 (the initialisation; Frankle & Carbin 2019) up to
            ``epochs - 1`` (late rewinding, Frankle et al. 2020, who count iterations; here
            epochs).
        scorer, pruner: a plugin object or name, as in the other schedules. Magnitude and global
            unstructured pruning by default (Frankle & Carbin's choice for VGG-19 and
            ResNet-18); ``pruneplug.get_pruner("unstructured", scope="local")`` prunes each
            layer by the same rate, as they do for LeNet and the small Conv nets. It must be a
            mask (unstructured) pruner: rewinding puts the survivors back in place, which a
            physically smaller layer has no room for.
        loss_fn: the training loss (default cross-entropy), also given to scorers that need one.
        progress: a bar over the rounds.
        train_kwargs: to every :func:`~pruneplug.engine.train` run (``lr``, ``optimizer``,
            ``batch_size``, ``schedule``, ``penalty``, ``device``...). Each retraining is a new
            run: the optimiser's momentum and a learning-rate ``schedule`` start afresh over
            ``epochs - rewind_epoch`` epochs (the 2020 paper resumes the dense run's schedule at
            :math:`k`; with the default constant rate the two agree). ``device=`` moves the copy
            there; otherwise it trains where ``model`` is.

    Returns:
        a :class:`Ticket`: the trained ticket, the mask per round, per-round sparsity and
        histories, :math:`\theta_k`; :func:`random_reinit` trains its control.
    """
    check_count("rounds", rounds)
    check_count("epochs", epochs)
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate < 1:
        raise ValueError(
            f"rate={rate!r} is out of range: give the fraction of the remaining weights to "
            "prune each round, a number in (0, 1), e.g. 0.2 (Frankle & Carbin's rate for fully "
            "connected layers)"
        )
    if (
        isinstance(rewind_epoch, bool)
        or not isinstance(rewind_epoch, int)
        or not 0 <= rewind_epoch < epochs
    ):
        raise ValueError(
            f"rewind_epoch={rewind_epoch!r} is outside the dense run of epochs={epochs}: give a "
            f"whole number in [0, {epochs - 1}] (0 rewinds to the initialisation), or train "
            "for more epochs"
        )
    if prune.is_pruned(model):
        raise ValueError(
            f"{type(model).__name__} is already pruned (it has torch.nn.utils.prune masks): a "
            "lottery ticket is searched from the dense network; pass the unpruned model, or "
            "make its masks permanent first with torch.nn.utils.prune.remove"
        )
    step = Step(scorer, pruner, data, loss_fn)
    require_mask_pruner(
        step,
        "lottery_ticket()",
        "it returns a smaller model, into which the rewound weights do not fit; use "
        "pruner='unstructured'",
    )
    dense = copy_model(model)
    device = train_kwargs.pop("device", None)
    if device is not None:
        dense.to(pick_device(device))
    user_hook = train_kwargs.pop("on_epoch_end", None)
    common = {"val_data": val_data, "loss_fn": loss_fn, "progress": False, **train_kwargs}
    if user_hook is not None:
        common["on_epoch_end"] = user_hook
    rewind_state = host_state(dense)  # theta_0, replaced by theta_k when k > 0

    def keep_rewind_state(epoch: int, trained: nn.Module) -> None:
        nonlocal rewind_state
        if user_hook is not None:
            user_hook(epoch, trained)
        if epoch == rewind_epoch:
            rewind_state = host_state(trained)

    trained = copy_model(dense)
    dense_run = {**common, "on_epoch_end": keep_rewind_state}
    histories = [train(trained, data, epochs=epochs, seed=seed, **dense_run)]
    masks = [keep_masks(trained)]
    retrain: dict[str, Any] = {}
    for r in tqdm(range(1, rounds + 1), desc="rounds", disable=not progress):
        masks.append(keep_masks(step(trained, 1 - (1 - rate) ** r)))
        trained = with_mask(dense, rewind_state, masks[-1])
        retrain = {
            "data": data,
            "epochs": epochs - rewind_epoch,
            "seed": derived_seed(seed, r),
            **common,
        }
        histories.append(train(trained, **retrain))
    return Ticket(
        model=trained,
        masks=masks,
        sparsity=[mask_sparsity(mask) for mask in masks],
        histories=histories,
        rewind_state=rewind_state,
        rewind_epoch=rewind_epoch,
        retrain_kwargs=retrain,
    )


def random_reinit(ticket: Ticket, *, seed: int = 1, progress: bool = True) -> Pruned:
    r"""The control of a ticket: its mask on a fresh random initialisation, trained the same way.

    Trains :meth:`Ticket.reinitialised` (:math:`m_R \odot \theta'_0`, ``seed`` drawing
    :math:`\theta'_0`) with exactly the last round's training run (``ticket.retrain_kwargs``:
    data, ``epochs - rewind_epoch`` epochs, the data order's seed, learning rate...), so the
    initial values are the only difference. Frankle & Carbin (2019) find the ticket better and
    faster to train than this control at high sparsity. ``seed`` must differ from the one the
    model was built with, or :math:`\theta'_0 = \theta_0` (refused when ``rewind_epoch=0``).
    Returns ``Pruned(model, history, sparsity)``, ``sparsity`` per epoch (constant).
    """
    model = ticket.reinitialised(seed)
    history = train(model, **{**ticket.retrain_kwargs, "progress": progress})
    return Pruned(model, history, [ticket.sparsity[-1]] * len(history))
