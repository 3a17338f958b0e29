r"""Training-time help for pruning: sparse training before it, distillation after it.

Everything here is a **penalty** for :func:`pruneplug.engine.train`: a callable
``penalty(model, inputs, logits) -> scalar Tensor`` added to the loss at every step, so it
combines with any schedule of :mod:`pruneplug.schedules` (``engine.train(..., penalty=p)``).

* **Sparse training** - :func:`l1_penalty`: :math:`\lambda \sum |w|` over the weights of the
  prunable (Linear / Conv) layers, which drives unimportant weights towards zero so that removing
  them later costs less; or :math:`\lambda \sum |\gamma|` over batch-norm scales, which drives
  whole channels towards zero for structured pruning ("network slimming", Liu et al., "Learning
  Efficient Convolutional Networks through Network Slimming", ICCV 2017).
* **Knowledge distillation** - :func:`distillation_penalty`: the student also matches the
  temperature-softened outputs of a teacher (typically the dense model before pruning),
  :math:`w \, T^2 \, \mathrm{KL}(\mathrm{softmax}(z_t/T) \,\|\, \mathrm{softmax}(z_s/T))`
  (Hinton et al., "Distilling the Knowledge in a Neural Network", 2015). The :math:`T^2` keeps
  the gradient scale independent of :math:`T`. Added to the engine's cross-entropy, the loss is
  Hinton's mix of hard and soft targets.
* **Attention transfer** - :func:`attention_transfer_penalty`: for conv nets, the student's
  spatial attention maps match the teacher's at chosen layer pairs (Zagoruyko & Komodakis,
  "Paying More Attention to Attention", ICLR 2017). The map of an activation :math:`A`
  (``N x C x H x W``) is :math:`Q = \mathrm{vec}(\frac{1}{C}\sum_c |A_c|^p)`, :math:`p = 2`,
  normalised to unit L2 norm per sample; the penalty is
  :math:`\frac{\beta}{2} \sum_j \mathrm{mean}\big((Q^j_s - Q^j_t)^2\big)`, as in the authors'
  code (``at_loss``), with their :math:`\beta = 1000`. It reads activations with forward hooks,
  so it is a context manager that removes them on exit (or call ``close()``).
* :func:`distill` trains a student with these penalties - :func:`pruneplug.engine.train` with
  the penalty filled in. Plain fine-tuning is :func:`pruneplug.engine.fine_tune`.

**Devices.** The student trains where :func:`pruneplug.engine.train` puts it (where it is, or
``device=``). The teacher is never moved: it runs where its parameters are, on the batch moved
to it, and its outputs (logits, attention maps) come back to the student's device
(:func:`pruneplug.engine.forward_on`). So a teacher on the CPU works with a student on a GPU;
for speed put both on the same device (``teacher.to(device)``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .engine import Data, History, Penalty, evaluation_mode, forward_on, train
from .plumbing import layer_tensor, prunable_layers

BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _check_positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}={value!r}: give a number")
    if not (value >= 0 if allow_zero else value > 0) or value == float("inf"):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name}={value!r}: give a finite number {bound}")


def _check_model(what: str, model: Any) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"{what} must be a torch.nn.Module, got {type(model).__name__}")


# --------------------------------------------------------------------------- sparse training


class L1Penalty:
    r"""``strength * sum |x|`` over the prunable weights (``on="weights"``) or BN scales (``"bn"``).

    Masked weights count as the forward pass sees them (``weight_orig * weight_mask``), so
    weights already pruned add nothing.
    """

    def __init__(self, strength: float, on: str) -> None:
        _check_positive("strength", strength, allow_zero=True)
        if on not in ("weights", "bn"):
            raise ValueError(
                f"on={on!r}: choose 'weights' (L1 on Linear/Conv weights) or 'bn' (L1 on batch "
                "norm scales, network slimming)"
            )
        self.strength = float(strength)
        self.on = on

    def tensors(self, model: nn.Module) -> list[Tensor]:
        """The tensors the penalty sums over, as the last forward pass used them."""
        if self.on == "weights":
            return [layer_tensor(layer) for layer in prunable_layers(model).values()]
        scales: list[Tensor] = [
            m.weight for m in model.modules() if isinstance(m, BATCH_NORMS) and m.affine
        ]
        if not scales:
            raise ValueError(
                f"{type(model).__name__} has no batch norm layer with a learnable scale, so "
                "l1_penalty(on='bn') has nothing to penalise: use on='weights'"
            )
        return scales

    def __call__(self, model: nn.Module, inputs: Tensor, logits: Tensor) -> Tensor:
        first, *rest = self.tensors(model)  # never empty: tensors() raises instead
        total = first.abs().sum()
        for tensor in rest:
            total = total + tensor.abs().sum()
        return self.strength * total

    def __repr__(self) -> str:
        return f"l1_penalty({self.strength:g}, on={self.on!r})"


def l1_penalty(strength: float, on: str = "weights") -> L1Penalty:
    r"""Sparse-training penalty :math:`\lambda \sum |x|` for :func:`pruneplug.engine.train`.

    Args:
        strength: :math:`\lambda` (a sum, not a mean: scale it to the number of weights; for the
            64-300-100-10 MLP on weights, 1e-5 to 3e-4 - chapter 04 uses 3e-4; on batch-norm
            scales, about 0.01 to 0.03).
        on: ``"weights"`` - the weights of every Linear / Conv layer (then prune unstructured or
            by unit norm); ``"bn"`` - the scales :math:`\gamma` of every batch norm (network
            slimming, then prune channels with the ``bn_scale`` scorer).
    """
    return L1Penalty(strength, on)


# --------------------------------------------------------------------------- distillation


def distillation_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    r"""Hinton's soft-target loss, averaged over the batch.

    :math:`T^2 \, \mathrm{KL}(\mathrm{softmax}(z_t/T) \,\|\, \mathrm{softmax}(z_s/T))`.
    """
    log_student = F.log_softmax(student_logits / temperature, dim=1)
    log_teacher = F.log_softmax(teacher_logits / temperature, dim=1)
    kl = F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True)
    return temperature**2 * kl


def _teacher_forward(teacher: nn.Module, inputs: Tensor) -> Tensor:
    """The teacher's output in eval mode without gradients (its modes are restored).

    The teacher runs on its own device; the output comes back on the inputs' device.
    """
    with evaluation_mode(teacher), torch.no_grad():
        return forward_on(teacher, inputs)


class DistillationPenalty:
    """``weight * T^2 * KL(teacher || student)`` on temperature-``T`` softmaxes (see module doc)."""

    def __init__(self, teacher: nn.Module, temperature: float, weight: float) -> None:
        _check_model("teacher", teacher)
        _check_positive("temperature", temperature)
        _check_positive("weight", weight, allow_zero=True)
        self.teacher = teacher
        self.temperature = float(temperature)
        self.weight = float(weight)

    def __call__(self, model: nn.Module, inputs: Tensor, logits: Tensor) -> Tensor:
        target = _teacher_forward(self.teacher, inputs)
        if target.shape != logits.shape:
            raise ValueError(
                f"the teacher gives outputs of shape {tuple(target.shape)} but the student "
                f"{tuple(logits.shape)}: distil between models with the same classes"
            )
        return self.weight * distillation_loss(logits, target, self.temperature)

    def __repr__(self) -> str:
        return (
            f"distillation_penalty({type(self.teacher).__name__}, temperature="
            f"{self.temperature:g}, weight={self.weight:g})"
        )


def distillation_penalty(
    teacher: nn.Module, temperature: float = 4.0, weight: float = 1.0
) -> DistillationPenalty:
    r"""Knowledge distillation from ``teacher`` as an engine penalty (Hinton et al. 2015).

    Each step runs the teacher on the same (augmented) batch in eval mode without gradients and
    adds ``weight * T^2 * KL(softmax(teacher/T) || softmax(student/T))`` to the student's
    cross-entropy. The teacher is used as it is (not copied) and left unchanged, on its own
    device: the batch is moved to it and its logits back (see the module's "Devices").
    """
    return DistillationPenalty(teacher, temperature, weight)


def attention_map(activation: Tensor, p: float = 2.0) -> Tensor:
    r"""Spatial attention map of ``activation`` (``N x C x ...``): ``N x (H*W...)``, unit L2 rows.

    :math:`Q = \frac{1}{C}\sum_c |A_c|^p`, flattened and divided by its L2 norm per sample
    (Zagoruyko & Komodakis 2017).
    """
    if activation.dim() < 3:
        raise ValueError(
            f"an attention map needs an activation N x C x H x W (or N x C x L), got shape "
            f"{tuple(activation.shape)}: pair convolutional layers, not Linear ones"
        )
    return F.normalize(activation.abs().pow(p).mean(1).flatten(1), dim=1)


class AttentionTransfer:
    """Attention-transfer penalty; holds forward hooks until :meth:`close` (or the ``with`` ends).

    Made by :func:`attention_transfer_penalty`. During the student's forward pass the hooks
    store the activations of the student's layers; when called as a penalty it runs the
    teacher on the same inputs (eval mode, no gradients) and compares the attention maps.
    """

    def __init__(
        self,
        teacher: nn.Module,
        student: nn.Module,
        layer_pairs: Sequence[tuple[str, str]],
        beta: float,
        p: float,
    ) -> None:
        _check_model("teacher", teacher)
        _check_model("student", student)
        _check_positive("beta", beta, allow_zero=True)
        _check_positive("p", p)
        given = [tuple(pair) for pair in layer_pairs]
        if not given or any(len(pair) != 2 for pair in given):
            raise ValueError(
                "layer_pairs must be a non-empty list of (student_layer, teacher_layer) names, "
                "e.g. [('block2', 'block2'), ('block3', 'block3')]"
            )
        pairs = [(s, t) for s, t in given]
        student_layers = [_module(student, "student", s) for s, _ in pairs]
        teacher_layers = [_module(teacher, "teacher", t) for _, t in pairs]
        self.teacher, self.student = teacher, student
        self.pairs: list[tuple[str, str]] = pairs
        self.beta, self.p = float(beta), float(p)
        self._student_out: dict[int, Tensor] = {}
        self._teacher_out: dict[int, Tensor] = {}
        self._handles = [
            layer.register_forward_hook(_store(self._student_out, i))
            for i, layer in enumerate(student_layers)
        ] + [
            layer.register_forward_hook(_store(self._teacher_out, i))
            for i, layer in enumerate(teacher_layers)
        ]

    @property
    def closed(self) -> bool:
        """True once the hooks are removed; the penalty can no longer be used."""
        return not self._handles

    def close(self) -> None:
        """Remove every hook from the student and the teacher (safe to call twice)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._student_out.clear()
        self._teacher_out.clear()

    def __enter__(self) -> AttentionTransfer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __call__(self, model: nn.Module, inputs: Tensor, logits: Tensor) -> Tensor:
        if self.closed:
            raise RuntimeError(
                "this attention-transfer penalty is closed (its hooks are removed): make a new "
                "one with attention_transfer_penalty(...)"
            )
        if model is not self.student:
            raise ValueError(
                "the model being trained is not the student this penalty hooks: pass the same "
                "model to attention_transfer_penalty(teacher, student, ...) and to train()"
            )
        if len(self._student_out) != len(self.pairs):
            raise RuntimeError(
                "the student's hooked layers did not run in the last forward pass: check "
                "layer_pairs names layers used by the student's forward"
            )
        self._teacher_out.clear()
        _teacher_forward(self.teacher, inputs)
        total = logits.new_zeros(())
        for i, (s_name, t_name) in enumerate(self.pairs):
            q_s = attention_map(self._student_out[i], self.p)
            q_t = attention_map(self._teacher_out[i], self.p).to(q_s.device)
            if q_s.shape != q_t.shape:
                raise ValueError(
                    f"student layer {s_name!r} gives a {tuple(self._student_out[i].shape[2:])} "
                    f"map but teacher layer {t_name!r} gives "
                    f"{tuple(self._teacher_out[i].shape[2:])}: pair layers with the same spatial "
                    "size"
                )
            total = total + (q_s - q_t).pow(2).mean()
        self._student_out.clear()
        return self.beta / 2 * total

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"attention_transfer_penalty(pairs={self.pairs}, beta={self.beta:g}) [{state}]"


def _module(model: nn.Module, role: str, name: str) -> nn.Module:
    modules = dict(model.named_modules())
    if name not in modules or name == "":
        names = ", ".join(n for n in modules if n) or "none"
        raise ValueError(f"the {role} has no layer {name!r}; its layers are: {names}")
    return modules[name]


def _store(table: dict[int, Tensor], index: int) -> Any:
    def hook(module: nn.Module, args: Any, output: Any) -> None:
        if not isinstance(output, Tensor):
            raise TypeError(
                f"layer {type(module).__name__} returns {type(output).__name__}, not a tensor: "
                "pair layers whose output is an activation map"
            )
        table[index] = output

    return hook


def attention_transfer_penalty(
    teacher: nn.Module,
    student: nn.Module,
    layer_pairs: Sequence[tuple[str, str]],
    beta: float = 1000.0,
    p: float = 2.0,
) -> AttentionTransfer:
    r"""Attention transfer (Zagoruyko & Komodakis 2017) as an engine penalty.

    Args:
        teacher, student: the models; hooks are put on both right away.
        layer_pairs: ``(student_layer, teacher_layer)`` module names whose outputs
            (``N x C x H x W``, same ``H x W`` in each pair) are compared, e.g. the end of each
            stage.
        beta: weight :math:`\beta` of :math:`\frac{\beta}{2}\sum_j \mathrm{mean}((Q_s - Q_t)^2)`.
        p: exponent of the attention map.

    Use it as a context manager so the hooks go away whatever happens::

        with attention_transfer_penalty(dense, pruned, [("block3", "block3")]) as at:
            engine.train(pruned, data, penalty=at)
    """
    return AttentionTransfer(teacher, student, layer_pairs, beta, p)


class CombinedPenalty:
    """The sum of several penalties."""

    def __init__(self, penalties: Iterable[Penalty]) -> None:
        self.penalties = list(penalties)
        if not all(callable(p) for p in self.penalties):
            raise TypeError("every penalty must be callable as penalty(model, inputs, logits)")

    def __call__(self, model: nn.Module, inputs: Tensor, logits: Tensor) -> Tensor:
        return sum((p(model, inputs, logits) for p in self.penalties), logits.new_zeros(()))

    def __repr__(self) -> str:
        return " + ".join(map(repr, self.penalties)) or "no penalty"


def combine(*penalties: Penalty | None) -> CombinedPenalty:
    """One penalty that adds up several (``None`` entries are skipped), e.g. L1 + distillation."""
    return CombinedPenalty(p for p in penalties if p is not None)


def distill(
    student: nn.Module,
    teacher: nn.Module,
    data: Data,
    *,
    temperature: float = 4.0,
    weight: float = 1.0,
    attention_pairs: Sequence[tuple[str, str]] | None = None,
    beta: float = 1000.0,
    penalty: Penalty | None = None,
    **train_kwargs: Any,
) -> History:
    """Train ``student`` in place with distillation from ``teacher``; return the History.

    :func:`pruneplug.engine.train` with ``penalty`` = :func:`distillation_penalty` (plus
    :func:`attention_transfer_penalty` over ``attention_pairs`` when given, plus any extra
    ``penalty``); every other keyword (``epochs``, ``lr``, ``val_data``, ``seed``...) goes to
    ``train``. Attention hooks are removed when training ends, also on error. ``device=``
    moves the student only; the teacher runs where it is (see the module's "Devices").
    """
    kd = distillation_penalty(teacher, temperature, weight)
    if attention_pairs is None:
        return train(student, data, penalty=combine(kd, penalty), **train_kwargs)
    with attention_transfer_penalty(teacher, student, attention_pairs, beta) as at:
        return train(student, data, penalty=combine(kd, at, penalty), **train_kwargs)
