"""What pruning buys and costs: parameters, sparsity, MACs, latency, accuracy, before and after.

* **Parameters** count the effective model: a masked layer (``torch.nn.utils.prune``) counts its
  weight once (``weight_orig``, not the mask buffer), and *non-zero* counts the weights left
  after the mask.
* **Sparsity** is the fraction of zero weights of the prunable (Linear/Conv) layers and the
  other prunable tensors (attention ``in_proj_weight``, recurrent weights, embeddings), per
  layer and over all of them.
* **MACs** (multiply-accumulates) are counted by :class:`torch.utils.flop_counter.FlopCounterMode`
  on one forward pass (MACs = FLOPs / 2). They count dense arithmetic, which is what dense
  kernels do: zeroed (unstructured) weights still cost MACs; physically smaller (structured)
  layers do not.
* **Agreement** of two scorers: :func:`spearman` and :func:`kendall` rank correlations, and
  :func:`pruned_overlap`, how much of what each would prune is the same.
* **Latency** is the median wall time of repeated forward passes after a warm-up, under
  ``torch.inference_mode``. It varies between runs and machines, so reports can leave it out;
  :func:`interleaved_latency` times several models in turns, so that they compare fairly.

**Devices.** Every metric runs where the model is and moves what it needs there: the example
input and each batch of ``data`` go to the model's device (the model itself is never moved), and
every result is a plain Python number. Two models compared may sit on different devices.

:func:`compare` puts two models side by side in a :class:`Report`, printed as a text table or
shown as an HTML table in notebooks.
"""

from __future__ import annotations

import html
import numbers
import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from .engine import Data, evaluate
from .plumbing import (
    effective_tensor,
    evaluation_mode,
    model_device,
    prunable_targets,
)


def effective(model: nn.Module, name: str) -> Tensor:
    """The value of parameter ``name`` as the forward pass sees it (``orig * mask`` if masked)."""
    if name.endswith("_orig"):
        try:
            mask = model.get_buffer(name[: -len("_orig")] + "_mask")
        except AttributeError:
            mask = None
        if mask is not None:
            return model.get_parameter(name).detach() * mask
    return model.get_parameter(name).detach()


def count_parameters(model: nn.Module) -> dict[str, int]:
    """``{"total": ..., "nonzero": ...}`` over every parameter of the effective model."""
    total = nonzero = 0
    for name, _ in model.named_parameters():
        value = effective(model, name)
        total += value.numel()
        nonzero += int(torch.count_nonzero(value))
    return {"total": total, "nonzero": nonzero}


def prunable_weights(model: nn.Module) -> dict[str, Tensor]:
    """Every weight pruneplug prunes, as the forward pass uses it: the prunable layers' by layer
    name, then :func:`~pruneplug.plumbing.prunable_tensors` by qualified parameter name."""
    return {name: effective_tensor(*target) for name, target in prunable_targets(model).items()}


def layer_sparsity(model: nn.Module) -> dict[str, float]:
    """Fraction of zero weights of each prunable layer (and prunable tensor), by name."""
    return {
        name: 1.0 - int(torch.count_nonzero(w)) / w.numel()
        for name, w in prunable_weights(model).items()
    }


def global_sparsity(model: nn.Module) -> float:
    """Fraction of zero weights over all prunable layers and tensors together."""
    weights = list(prunable_weights(model).values())
    zeros = sum(w.numel() - int(torch.count_nonzero(w)) for w in weights)
    return zeros / sum(w.numel() for w in weights)


def macs(model: nn.Module, example_input: Tensor) -> int:
    """Multiply-accumulates of one eval-mode forward pass on ``example_input`` (a batch).

    Pass a batch of one sample for per-sample MACs, e.g. ``x[:1]``. The model's modes are
    restored afterwards. Attention and recurrent layers are counted on their plain paths
    (:func:`countable_paths`): their fused kernels are invisible to ``FlopCounterMode``.
    """
    example_input = example_input.to(model_device(model))
    counter = FlopCounterMode(display=False)
    with evaluation_mode(model), torch.no_grad(), countable_paths(), counter:
        model(example_input)
    return counter.get_total_flops() // 2


@contextmanager
def countable_paths() -> Iterator[None]:
    """Run attention and recurrent layers as the matrix products ``FlopCounterMode`` counts.

    In eval mode under ``no_grad`` ``nn.TransformerEncoderLayer`` and ``nn.MultiheadAttention``
    take a fused fast path, scaled dot-product attention a flash kernel, and ``nn.LSTM`` /
    ``nn.GRU`` oneDNN's or cuDNN's fused layer; the counter has no formula for those (a whole
    transformer counted as its classifier's 64 MACs). The same arithmetic, unfused, is counted
    in full; the settings are restored afterwards.
    """
    fast = torch.backends.mha.get_fastpath_enabled()
    onednn = torch.backends.mkldnn.set_flags(_enabled=False, _fp32_precision=None)[0]
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel(SDPBackend.MATH), torch.backends.cudnn.flags(enabled=False):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)
        torch.backends.mkldnn.set_flags(_enabled=onednn, _fp32_precision=None)


def latency(model: nn.Module, example_input: Tensor, repeats: int = 20, warmup: int = 3) -> float:
    """Median seconds of one forward pass on ``example_input`` (after ``warmup`` passes).

    Runs in eval mode under ``torch.inference_mode``; the model's modes are restored afterwards.
    """
    _check_timing(repeats, warmup)
    device = model_device(model)
    example_input = example_input.to(device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    times = []
    with evaluation_mode(model), torch.inference_mode():
        for i in range(warmup + repeats):
            sync()
            start = time.perf_counter()
            model(example_input)
            sync()
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_latency(
    runs: Mapping[str, tuple[Callable[[Tensor], object], Tensor]],
    repeats: int = 20,
    warmup: int = 3,
) -> dict[str, float]:
    """Median seconds per forward of each ``name -> (model, input)``, timing them in turns.

    A model is any callable of the input: a module, or e.g. a compiled or graph-replaying one.

    Every turn times each model once, right after an untimed run of it, so a load spike on a
    shared machine hits all of them alike and no model pays for the caches the previous one
    filled: the way to compare models, where :func:`latency` times one. On a GPU the device is
    synchronised around each timed call (kernels run asynchronously). Modules run in eval mode
    (each module's own mode restored afterwards), as :func:`latency` runs them.
    """
    _check_timing(repeats, warmup)

    def sync(x: Tensor) -> None:
        if x.device.type == "cuda":
            torch.cuda.synchronize(x.device)

    # a module gets its input where it is (a callable of any other kind, as given)
    runs = {
        name: (model, x.to(model_device(model)) if isinstance(model, nn.Module) else x)
        for name, (model, x) in runs.items()
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    modules = [m for m, _ in runs.values() if isinstance(m, nn.Module)]
    with ExitStack() as modes, torch.inference_mode():
        for module in modules:
            modes.enter_context(evaluation_mode(module))
        for step in range(warmup + repeats):
            for name, (model, x) in runs.items():
                model(x)
                sync(x)
                start = time.perf_counter()
                model(x)
                sync(x)
                if step >= warmup:
                    times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def _check_timing(repeats: object, warmup: object) -> None:
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats={repeats!r}: give a whole number >= 1")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup={warmup!r}: give a whole number >= 0")


_time_forward = latency  # ``summary`` and ``compare`` take a ``latency`` flag of the same name


def summary(
    model: nn.Module, example_input: Tensor, data: Data | None = None, *, latency: bool = True
) -> dict[str, float]:
    """Every metric of one model: parameters, non-zero, global sparsity, MACs, latency, accuracy.

    Keys: ``parameters``, ``nonzero``, ``sparsity``, ``macs``, ``latency_ms`` (when
    ``latency``), ``accuracy`` (when ``data`` is given, a Dataset or DataLoader).
    """
    counts = count_parameters(model)
    result: dict[str, float] = {
        "parameters": counts["total"],
        "nonzero": counts["nonzero"],
        "sparsity": global_sparsity(model),
        "macs": macs(model, example_input),
    }
    if latency:
        result["latency_ms"] = 1000 * _time_forward(model, example_input)
    if data is not None:
        result["accuracy"] = evaluate(model, data)["accuracy"]
    return result


#: Row label and formatter of each :func:`summary` key, in report order.
ROWS: dict[str, tuple[str, str]] = {
    "parameters": ("parameters", "{:,.0f}"),
    "nonzero": ("non-zero parameters", "{:,.0f}"),
    "sparsity": ("global sparsity", "{:.2%}"),
    "macs": ("MACs", "{:,.0f}"),
    "latency_ms": ("latency (ms)", "{:.3f}"),
    "accuracy": ("accuracy", "{:.2%}"),
}


@dataclass
class Report:
    """Two models' metrics side by side, with the ratio after / before.

    ``rows`` maps a :func:`summary` key to ``(before, after)``; ``report["macs"]`` gives that
    pair. ``str(report)`` is an aligned text table; notebooks show ``_repr_html_``.
    """

    rows: dict[str, tuple[float, float]]

    def __getitem__(self, key: str) -> tuple[float, float]:
        return self.rows[key]

    def table(self) -> list[list[str]]:
        """The cells, header first: metric, before, after, after / before."""
        cells = [["metric", "before", "after", "after / before"]]
        for key, (before, after) in self.rows.items():
            label, fmt = ROWS[key]
            ratio = f"{after / before:.3f}" if before else "-"
            cells.append([label, fmt.format(before), fmt.format(after), ratio])
        return cells

    def __str__(self) -> str:
        cells = self.table()
        widths = [max(len(row[i]) for row in cells) for i in range(4)]
        aligns = [str.ljust, str.rjust, str.rjust, str.rjust]
        lines = [
            "  ".join(align(c, w) for align, c, w in zip(aligns, row, widths, strict=True))
            for row in cells
        ]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        header, *body = self.table()
        head = "".join(f"<th>{html.escape(c)}</th>" for c in header)
        rows = "".join(
            "<tr>"
            + f'<td style="text-align:left">{html.escape(row[0])}</td>'
            + "".join(f'<td style="text-align:right">{html.escape(c)}</td>' for c in row[1:])
            + "</tr>"
            for row in body
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def compare(
    before_model: nn.Module,
    after_model: nn.Module,
    example_input: Tensor,
    data: Data | None = None,
    *,
    latency: bool = True,
) -> Report:
    """A :class:`Report` of both models' :func:`summary`; ``latency=False`` leaves timing out
    (for output that must repeat exactly, e.g. notebooks checked by nbval)."""
    before = summary(before_model, example_input, data, latency=latency)
    after = summary(after_model, example_input, data, latency=latency)
    return Report({key: (before[key], after[key]) for key in ROWS if key in before})


# --------------------------------------------------------------------------- scorer agreement


def _host(scores: Tensor) -> np.ndarray:
    """``scores`` flattened into a NumPy array on the host (SciPy's statistics run there)."""
    return scores.detach().flatten().cpu().numpy()


def spearman(a: Tensor, b: Tensor) -> float:
    """Spearman's rank correlation of two score tensors (ties get their average rank)."""
    from scipy.stats import spearmanr

    return float(spearmanr(_host(a), _host(b)).statistic)


def kendall(a: Tensor, b: Tensor) -> float:
    """Kendall's tau-b of two score tensors (the tie-corrected variant)."""
    from scipy.stats import kendalltau

    return float(kendalltau(_host(a), _host(b)).statistic)


def pruned_overlap(a: Tensor, b: Tensor, amount: float) -> float:
    """Share of the ``amount`` lowest-scored items under ``a`` that are also lowest under ``b``.

    This is how much two scorers agree on *what to prune* at that amount (1 = same set).
    """
    if a.numel() != b.numel():
        raise ValueError(
            f"pruned_overlap compares two scorings of the same items, got {a.numel()} and "
            f"{b.numel()} scores: score the same layer"
        )
    if isinstance(amount, bool) or not isinstance(amount, numbers.Real) or not 0 < amount <= 1:
        raise ValueError(f"amount={amount!r}: give the fraction pruned, in (0, 1]")
    a, b = a.flatten(), b.flatten()
    k = max(1, round(amount * a.numel()))
    low_a = set(a.topk(k, largest=False).indices.tolist())
    low_b = set(b.topk(k, largest=False).indices.tolist())
    return len(low_a & low_b) / k
