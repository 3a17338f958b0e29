"""Model helpers of the checks: snapshots, consistency, random scores."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from torch import Tensor, nn

from ..contracts import Scores, prunable_layers


@dataclass
class _Snapshot:
    state: dict[str, Tensor]
    modes: dict[str, bool]
    grad_flags: dict[str, bool]
    hooks: dict[str, tuple[int, ...]]


_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def _snapshot(model: nn.Module) -> _Snapshot:
    return _Snapshot(
        {k: v.detach().clone() for k, v in model.state_dict().items()},
        {n: m.training for n, m in model.named_modules()},
        {n: p.requires_grad for n, p in model.named_parameters()},
        {n: tuple(len(getattr(m, h, {})) for h in _HOOK_DICTS) for n, m in model.named_modules()},
    )


def _changes(before: _Snapshot, model: nn.Module) -> str | None:
    """Say how ``model`` differs from ``before``, or ``None``."""
    after = _snapshot(model)
    if before.state.keys() != after.state.keys():
        added = sorted(after.state.keys() - before.state.keys())
        gone = sorted(before.state.keys() - after.state.keys())
        return f"state_dict entries added {added} / removed {gone}"
    for key, value in before.state.items():
        new = after.state[key]
        if value.shape != new.shape:
            return f"{key!r} changed shape from {tuple(value.shape)} to {tuple(new.shape)}"
        if not torch.equal(value, new):
            return f"{key!r} changed value"
    for table, what in ((before.modes, "training mode"), (before.grad_flags, "requires_grad")):
        new_table = after.modes if table is before.modes else after.grad_flags
        for name, flag in table.items():
            if new_table.get(name) != flag:
                return f"{what} of {name or 'the model'!r} changed from {flag} to {not flag}"
    for name, counts in before.hooks.items():
        if after.hooks.get(name) != counts:
            now = after.hooks.get(name)
            return f"hooks of module {name or 'the model'!r} changed: {counts} -> {now}"
    return None


def _eval_forward(model: nn.Module, x: Tensor) -> Tensor:
    """``model(x)`` in eval mode without gradients; every module's mode is restored."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            return model(x)
    finally:
        for module, mode in modes:
            module.training = mode


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _inconsistent(model: nn.Module) -> str | None:
    """Say which layer's attributes disagree with its tensors, or ``None``."""
    for name, m in model.named_modules():
        checks: list[tuple[str, int, int]] = []
        if isinstance(m, nn.Linear):
            checks = [("out_features", m.out_features, m.weight.shape[0])]
            checks += [("in_features", m.in_features, m.weight.shape[1])]
        elif isinstance(m, nn.modules.conv._ConvNd):
            checks = [("out_channels", m.out_channels, m.weight.shape[0])]
            checks += [("in_channels", m.in_channels, m.weight.shape[1] * m.groups)]
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            checks = [
                (f"{t} length", m.num_features, len(getattr(m, t)))
                for t in ("weight", "bias", "running_mean", "running_var")
                if getattr(m, t, None) is not None
            ]
        bias = getattr(m, "bias", None)
        if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)) and bias is not None:
            checks.append(("bias length", m.weight.shape[0], len(bias)))
        for what, declared, actual in checks:
            if declared != actual:
                return f"layer {name!r}: {what} is {actual} but the layer says {declared}"
    return None


def _random_scores(model: nn.Module, generator: torch.Generator) -> Scores:
    """Distinct random per-weight and per-unit scores for every prunable layer."""
    scores = Scores()
    for name, layer in prunable_layers(model).items():
        w = cast(Tensor, layer.weight)
        scores.weight[name] = torch.rand(w.shape, generator=generator).to(w.device)
        scores.unit[name] = torch.rand(w.shape[0], generator=generator).to(w.device)
    return scores


def _clone_scores(scores: Scores) -> Scores:
    return Scores(
        {n: s.clone() for n, s in scores.weight.items()},
        {n: s.clone() for n, s in scores.unit.items()},
        {n: s.clone() for n, s in scores.tensor.items()},
    )


def _same_scores(a: Scores, b: Scores) -> bool:
    return all(
        x.keys() == y.keys() and all(torch.equal(x[n], y[n]) for n in x)
        for x, y in ((a.weight, b.weight), (a.unit, b.unit), (a.tensor, b.tensor))
    )
