"""D1 of ``pruneplug bench deploy``: how much faster a structured-pruned model really is.

The headline compares like with like: the pruned model against the **dense model given the same
deployment** (batch norm folded, NHWC layout: what oneDNN's CPU convolutions prefer), so the
speed-up is what pruning itself buys and can be set beside its MACs reduction. The anchor is
Torch-Pruning's pruned model (same widths as ours by construction: L1 magnitude, local) under
that same deployment, in the same run. Columns that add steps to one side only are labelled
*deployment*: they mix pruning's speed-up with what the steps would give the dense model too.

Two models: the course's reference CNN on 1x8x8 digits, whose pruned widths (8-16-32 at 75 %)
leave its time to per-operator overhead, and torchvision's ResNet-18 on 3x64x64 inputs at batch
64, whose time goes to multiply-adds, as in the networks practitioners prune. Weights are random
(speed does not depend on them); latency is the median of interleaved repeats
(:func:`~pruneplug.benchmarks.pruning_structured.interleaved_latency`).

Goals (ResNet-18 row): pruning's own speed-up at least :data:`GOALS` times its MACs reduction.

On a GPU (``pruneplug bench deploy --device cuda --dtype bfloat16``) the model is torchvision's
ResNet-50 on 3x224x224 inputs at batch 128, in the given dtype, with the goals of
:data:`GPU_GOALS`; pruning and tracing run on the CPU, the models are then moved. A column
adds CUDA graphs to both sides (:func:`cuda_graphed`): a GPU launches one kernel at a time from
Python, and a narrow pruned network spends a larger share of its time on those launches.

**D1b** (printed on a GPU only): which widths suit tensor cores, whose matrix products run
fastest when their dimensions are multiples of 8, 16 or 64. The same model and deployment as D1,
pruned with the structured pruner's ``round_to`` in :data:`ROUND_TOS` (each kept width rounded up
to a multiple, so fewer MACs are removed) at the amounts :data:`WIDTH_AMOUNTS`: speed-up over the
dense model, MACs reduction and their ratio per distinct set of widths. What rounding costs in
accuracy is P4 of ``pruneplug bench pruning``.
"""

from __future__ import annotations

import copy
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch_pruning as tp
import torchvision
from torch import Tensor, nn

import pruneplug
from pruneplug import metrics, models
from pruneplug.deploy import deploy

from ..metrics import interleaved_latency
from .pruning_structured import GOALS, budget, table, widths_of


@dataclass(frozen=True)
class Case:
    """A model to prune and time: how to build it, one sample's shape, the batch size."""

    name: str
    build: Callable[[], nn.Module]
    sample: tuple[int, ...]
    batch: int
    classifier: str  # protected: its outputs are the classes


def resnet18() -> nn.Module:
    return torchvision.models.resnet18(num_classes=10)


CASES = (
    Case("reference CNN 1x8x8", models.cnn, (1, 8, 8), 256, "classifier"),
    Case("ResNet-18 3x64x64", resnet18, (3, 64, 64), 64, "fc"),
)
#: In quick mode (the test suite) ResNet-18 runs on 3x16x16 inputs, batch 2.
QUICK_CASES = (CASES[0], Case("ResNet-18 3x16x16", resnet18, (3, 16, 16), 2, "fc"))


def resnet50() -> nn.Module:
    return torchvision.models.resnet50(num_classes=1000)


#: On a GPU: the model whose pruning Torch-Pruning's and NVIDIA's numbers are quoted for.
GPU_CASES = (Case("ResNet-50 3x224x224", resnet50, (3, 224, 224), 128, "fc"),)
#: Goals on a GPU (tensor cores): speed-up / MACs reduction per amount.
GPU_GOALS = {0.5: 0.7, 0.75: 0.5}
#: ``--dtype`` names -> dtypes.
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
#: D1b: the structured pruner's ``round_to`` values timed (1 = no rounding).
ROUND_TOS = (1, 8, 16, 32, 64)
#: D1b: fractions of channels removed. ResNets' widths are powers of two, so at 50 / 75 % every
#: kept width is already a multiple of 32 / 16 (``round_to`` 8 and 16 change nothing there);
#: 60 % keeps widths such as 26, 51, 102 and 205, which only rounding aligns.
WIDTH_AMOUNTS = (0.5, 0.6, 0.75)


def torch_pruning(dense: nn.Module, amount: float, x: Tensor, classifier: str) -> nn.Module:
    """The anchor: Torch-Pruning's MetaPruner, L1 magnitude, local, the classifier ignored."""
    model = copy.deepcopy(dense)
    tp.pruner.MetaPruner(
        model,
        x[:1],
        importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=amount,
        ignored_layers=[model.get_submodule(classifier)],
    ).step()
    return model.eval()


#: What :func:`~pruneplug.metrics.interleaved_latency` times: name -> (model or callable, input).
Runs = dict[str, tuple[Callable[[Tensor], object], Tensor]]


def same_deployment(
    model: nn.Module, x: Tensor, device: torch.device, dtype: torch.dtype
) -> tuple[nn.Module, Tensor]:
    """The headline deployment, given to every model alike: BN folded, NHWC model and input,
    on ``device`` in ``dtype``."""
    deployed = deploy(model, channels_last=True).to(device, dtype)
    return deployed, x.to(device, dtype, memory_format=torch.channels_last)


def cuda_graphed(model: Callable[[Tensor], object], x: Tensor) -> Callable[[Tensor], object]:
    """``model``'s forward on inputs shaped like ``x`` (on a CUDA device), captured once as a
    CUDA graph: each call copies its input into the graph's and replays every kernel with one
    launch, so a narrow model no longer pays a launch per layer (PyTorch's recipe: warm up on a
    side stream, then capture). The returned output tensor is overwritten by the next call."""
    static = x.clone()
    stream = torch.cuda.Stream(x.device)
    stream.wait_stream(torch.cuda.current_stream(x.device))
    with torch.inference_mode(), torch.cuda.stream(stream):
        for _ in range(3):  # cuDNN picks its algorithms outside the capture
            model(static)
    torch.cuda.current_stream(x.device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.inference_mode(), torch.cuda.graph(graph, stream=stream):
        out = model(static)

    def replay(inputs: Tensor) -> object:
        static.copy_(inputs)
        graph.replay()
        return out

    return replay


def case_rows(
    case: Case,
    quick: bool,
    device: torch.device,
    dtype: torch.dtype,
    goals: dict[float, float],
) -> list[list[str]]:
    """One row per amount: MACs reduction, speed-ups (ours, anchor) and their ratios."""
    run = budget(quick)
    torch.manual_seed(0)
    dense = case.build().eval()
    x = torch.rand(case.batch, *case.sample, generator=torch.Generator().manual_seed(0))
    scores = pruneplug.get_scorer("magnitude", p=1)(dense)
    pruner = pruneplug.get_pruner("structured", scope="local", protect=case.classifier)
    dense_macs = metrics.macs(dense, x[:1])
    rows = []
    for amount, goal in goals.items():
        ours = pruner(dense, scores, amount=amount).eval()
        anchor = torch_pruning(dense, amount, x, case.classifier)
        if metrics.macs(anchor, x[:1]) != metrics.macs(ours, x[:1]):
            raise AssertionError(f"{case.name}: Torch-Pruning's widths differ from ours")
        runs: Runs = {
            "dense": same_deployment(dense, x, device, dtype),
            "ours": same_deployment(ours, x, device, dtype),
            "TP": same_deployment(anchor, x, device, dtype),
            "dense as is": (copy.deepcopy(dense).to(device, dtype), x.to(device, dtype)),
        }
        graphed = device.type == "cuda" and capture_graphs(runs, f"{case.name} {amount:.0%}")
        seconds = interleaved_latency(runs, run.repeats, run.warmup)
        reduction = dense_macs / metrics.macs(ours, x[:1])
        speedup = seconds["dense"] / seconds["ours"]
        ratio = round(speedup / reduction, 2)  # the goal is judged on the printed ratio
        rows.append(
            [
                case.name,
                f"{amount:.0%}",
                f"{1e3 * seconds['dense']:.2f}",
                f"{reduction:.1f}x",
                f"{speedup:.2f}x",
                f"{ratio:.2f}",
                f">= {goal}",
                "yes" if ratio >= goal else "NO",
                f"{seconds['dense'] / seconds['TP']:.2f}x",
                f"{seconds['dense as is'] / seconds['ours']:.2f}x",
            ]
        )
        if graphed:
            both = seconds["dense graphed"] / seconds["ours graphed"]
            rows[-1].append(f"{both:.2f}x ({both / reduction:.2f})")
        elif device.type == "cuda":
            rows[-1].append("failed")
    return rows


#: The runs of D1 that are also timed as CUDA graphs.
GRAPHED = ("dense", "ours")


def capture_graphs(runs: Runs, what: str) -> bool:
    """Add ``"dense graphed"`` and ``"ours graphed"`` (:func:`cuda_graphed`) to ``runs``; a
    capture that fails is warned about and reported in the table, not a lost run."""
    try:
        graphed = {f"{n} graphed": (cuda_graphed(*runs[n]), runs[n][1]) for n in GRAPHED}
    except RuntimeError as error:
        warnings.warn(f"{what}: CUDA graph capture failed: {error}", stacklevel=2)
        return False
    runs.update(graphed)
    return True


def checked(device: str, dtype: str) -> torch.device:
    """``device`` as a ``torch.device``, once it and ``dtype`` are known to be usable here."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    where = torch.device(device)
    if where.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: no CUDA device here; run with --device cpu")
    return where


def machine(where: torch.device, load: float) -> str:
    """The notes' last words: the GPU and torch version, or the CPU threads; the load average."""
    return (
        (
            f"{torch.cuda.get_device_name(where)}, torch {torch.__version__}"
            if where.type == "cuda"
            else f"{torch.get_num_threads()} thread(s)"
        )
        + f"; load average {load:.2f} before, {os.getloadavg()[0]:.2f} after (timings on a "
        "shared machine are noisy)"
    )


def speed_table(quick: bool, device: str = "cpu", dtype: str = "float32") -> str:
    """The D1 table: one row per model and amount, on ``device`` in ``dtype``."""
    where = checked(device, dtype)
    load = os.getloadavg()[0]
    on_gpu = where.type == "cuda"
    cases = QUICK_CASES if quick else (GPU_CASES if on_gpu else CASES)
    goals = GPU_GOALS if on_gpu else GOALS
    rows = [row for case in cases for row in case_rows(case, quick, where, DTYPES[dtype], goals)]
    header = [
        "model",
        "removed",
        "dense ms",
        "MACs red.",
        "speed-up",
        "ratio",
        "goal",
        "met",
        "TP speed-up",
        "deployment",
    ] + (["CUDA graphs (ratio)"] if on_gpu else [])
    run = budget(quick)
    notes = [
        "speed-up: dense / pruned latency, both deployed alike (BN folded, NHWC model and "
        "input; 'dense ms' is that dense model per batch); ratio: speed-up / MACs red.",
        "TP speed-up: Torch-Pruning's pruned model (same widths), same deployment, same run",
        "deployment: our pruned model deployed against the dense model as it comes (NCHW, BN "
        "unfolded): pruning plus what the deployment steps give any model; not a headline",
        *(
            [
                "CUDA graphs: dense / pruned latency, both deployed alike and each replayed as "
                "one CUDA graph (one launch a call instead of one a kernel); ratio: that / MACs "
                "red."
            ]
            if on_gpu
            else []
        ),
        f"structured pruner, L1 magnitude, local, classifier protected; median of {run.repeats} "
        f"interleaved repeats; {dtype}; " + machine(where, load),
    ]
    title = f"D1  structured pruning, {'GPU' if on_gpu else 'CPU'} latency, same deployment"
    return table(title, header, rows, notes)


def width_divisor(model: nn.Module, classifier: str) -> int:
    """The largest number dividing every output width of ``model``'s prunable layers but the
    classifier's (64 for a dense ResNet)."""
    layers = pruneplug.prunable_layers(model)
    widths = [
        pruneplug.plumbing.effective_weight(m).shape[0]
        for name, m in layers.items()
        if name != classifier
    ]
    return math.gcd(*widths)


def width_rows(
    case: Case, quick: bool, device: torch.device, dtype: torch.dtype
) -> list[list[str]]:
    """One row per amount and distinct set of widths among the ``round_to`` values; each
    amount's models are timed in one interleaved run with the dense model."""
    run = budget(quick)
    torch.manual_seed(0)
    dense = case.build().eval()
    x = torch.rand(case.batch, *case.sample, generator=torch.Generator().manual_seed(0))
    scores = pruneplug.get_scorer("magnitude", p=1)(dense)
    dense_macs = metrics.macs(dense, x[:1])
    rows = []
    for amount in WIDTH_AMOUNTS:
        distinct: dict[str, tuple[list[int], nn.Module]] = {}  # widths -> (round_tos, model)
        for round_to in ROUND_TOS:
            pruner = pruneplug.get_pruner(
                "structured", scope="local", protect=case.classifier, round_to=round_to
            )
            model = pruner(dense, scores, amount=amount).eval()
            distinct.setdefault(widths_of(model), ([], model))[0].append(round_to)
        runs = {"dense": same_deployment(dense, x, device, dtype)}
        for widths, (_, model) in distinct.items():
            runs[widths] = same_deployment(model, x, device, dtype)
        seconds = interleaved_latency(runs, run.repeats, run.warmup)
        for widths, (round_tos, model) in distinct.items():
            reduction = dense_macs / metrics.macs(model, x[:1])
            speedup = seconds["dense"] / seconds[widths]
            rows.append(
                [
                    case.name,
                    f"{amount:.0%}",
                    "/".join(map(str, round_tos)),
                    str(width_divisor(model, case.classifier)),
                    f"{1e3 * seconds['dense']:.2f}",
                    f"{1e3 * seconds[widths]:.2f}",
                    f"{reduction:.1f}x",
                    f"{speedup:.2f}x",
                    f"{speedup / reduction:.2f}",
                ]
            )
    return rows


def widths_table(quick: bool, device: str = "cpu", dtype: str = "float32") -> str:
    """The D1b table: D1's model pruned with each ``round_to``, on ``device`` in ``dtype``.

    ``pruneplug bench deploy`` prints it on a GPU only (tensor cores are what it measures).
    """
    where = checked(device, dtype)
    load = os.getloadavg()[0]
    on_gpu = where.type == "cuda"
    case = QUICK_CASES[1] if quick else (GPU_CASES[0] if on_gpu else CASES[1])
    rows = width_rows(case, quick, where, DTYPES[dtype])
    header = [
        "model",
        "removed",
        "round_to",
        "widths gcd",
        "dense ms",
        "pruned ms",
        "MACs red.",
        "speed-up",
        "ratio",
    ]
    run = budget(quick)
    notes = [
        "round_to: the values giving this row's widths (one model, timed once); widths gcd: the "
        "largest number dividing every pruned layer's output width (the classifier's excluded)",
        "each kept width is rounded UP to a multiple of round_to: fewer MACs removed, in the hope "
        "of a faster kernel; speed-up: dense / pruned latency, both deployed as in D1 (BN "
        "folded, NHWC); ratio: speed-up / MACs red.; ms per batch of "
        f"{case.batch}",
        "at 50 / 75 % a ResNet's widths are already multiples of 32 / 16: round_to 8 and 16 "
        "change nothing there; 60 % keeps unaligned widths",
        f"structured pruner, L1 magnitude, local, classifier protected; each amount's models "
        f"timed with the dense one, median of {run.repeats} interleaved repeats; {dtype}; "
        + machine(where, load),
    ]
    title = (
        f"D1b  widths on {'GPU tensor cores' if on_gpu else 'CPU'}: structured pruning with "
        "round_to, same deployment"
    )
    return table(title, header, rows, notes)


def run(quick: bool = False, *, device: str = "cpu", dtype: str = "float32") -> None:
    """Print the D1 table, and on a GPU the D1b table (``quick``: a tiny run for the test
    suite)."""
    print(speed_table(quick, device, dtype))
    if torch.device(device).type == "cuda":
        print()
        print(widths_table(quick, device, dtype))
