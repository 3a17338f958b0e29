"""D2 of ``pruneplug bench deploy``: int8 quantisation and structured pruning side by side.

One table, :func:`quantization_table`, for the reference CNN on the digits:

* **dense float**: ``models.cnn()`` trained on the seeded digits split;
* **pruned float**: the dense model with 50 % of its channels removed by the ``structured``
  pruner (magnitude scores, local), then fine-tuned;
* **int8**: the dense model after :func:`pruneplug.quantize.post_training_quantize`
  (calibrated on 8 batches of 64 training images);
* **pruned + int8**: the pruned model, quantised the same way.

Every model gets the same deployment: eval mode, ``torch.compile`` (TorchInductor) with frozen
weights, called under ``torch.inference_mode``
(:func:`pruneplug.inference.compile_for_inference` for the float models; int8 models are
deployed so by construction, and run oneDNN int8 kernels). Latency is the median of
interleaved repeats at batch 256 (:func:`pruneplug.metrics.interleaved_latency`: each repeat
times every model once, right after an untimed run), and
the speed-up divides the dense float model's latency by each row's. Sizes are
:func:`pruneplug.inference.size_on_disk` (the ``state_dict`` as ``torch.save`` writes it; float
models with batch norm folded, as deployed). Accuracy is on the test split, computed by the
deployed (compiled) models.

Outside quick mode two more rows show a model whose multiply-adds dominate its time:
torchvision's ResNet-18 (10 classes, random weights, random 3x32x32 inputs calibrating it), as
float and as int8 - latency and size only, its speed-up relative to its own float row.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
from torch import Tensor, nn

import pruneplug
from pruneplug import data, engine, models
from pruneplug.benchmarks.pruning_structured import budget, table
from pruneplug.deploy import fold_batchnorm
from pruneplug.inference import compile_for_inference, predict, size_on_disk
from pruneplug.metrics import interleaved_latency
from pruneplug.quantize import post_training_quantize

#: Batch size of the latency measurement (and of the accuracy pass, padded).
BATCH = 256
#: Fraction of each layer's channels that the structured pruner removes.
AMOUNT = 0.5
#: Column headers, each saying what it holds.
HEADER = [
    "model",
    "size on disk (bytes)",
    "size / dense float",
    "latency, batch 256 (ms)",
    "speed-up over dense float",
    "test accuracy (%)",
]


def accuracy(model: Callable[[Tensor], Tensor], split: torch.utils.data.TensorDataset) -> float:
    """Test accuracy in % of a deployed model, in padded batches of :data:`BATCH`."""
    inputs, targets = split.tensors
    predicted = predict(model, inputs, batch_size=BATCH).argmax(1)
    return 100 * (predicted == targets).float().mean().item()


def dense_epochs(quick: bool) -> int:
    """Training epochs of the dense CNN (SGD, lr 0.05)."""
    return 2 if quick else 15


def digits_models(quick: bool) -> tuple[data.Splits, nn.Module, nn.Module]:
    """The digits split, the trained dense CNN and its structured-pruned, fine-tuned copy."""
    run = budget(quick)
    splits = data.load_digits(seed=0)
    dense = models.cnn()
    engine.train(dense, splits.train, epochs=dense_epochs(quick), lr=0.05, seed=0, progress=False)
    scores = pruneplug.get_scorer("magnitude")(dense)
    pruned = pruneplug.get_pruner("structured")(dense, scores, amount=AMOUNT)
    engine.fine_tune(pruned, splits.train, epochs=run.epochs, seed=0, progress=False)
    return splits, dense.eval(), pruned.eval()


def resnet_rows(repeats: int, warmup: int) -> list[list[str]]:
    """Float and int8 ResNet-18 on random 3x32x32 inputs: size and latency only."""
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(BATCH, 3, 32, 32, generator=generator)
    resnet = models.torchvision_model("resnet18", num_classes=10).eval()
    calibration = torch.rand(4 * 32, 3, 32, 32, generator=generator)
    int8 = post_training_quantize(resnet, calibration, max_batches=4, batch_size=32)
    runs: dict[str, tuple[nn.Module, Tensor]] = {
        "float": (compile_for_inference(resnet), x),
        "int8": (int8, x),
    }
    seconds = interleaved_latency(runs, repeats, warmup)
    float_size = size_on_disk(fold_batchnorm(resnet))
    rows = []
    for name, model in (("float", resnet), ("int8", int8)):
        size = float_size if name == "float" else size_on_disk(model)
        rows.append(
            [
                f"resnet18 {name} (3x32x32)",
                f"{size:,}",
                f"{size / float_size:.2f}",
                f"{1e3 * seconds[name]:.2f}",
                f"{seconds['float'] / seconds[name]:.2f}x",
                "-",
            ]
        )
    return rows


def quantization_table(quick: bool) -> str:
    """The table of the module docstring as text (``quick``: a tiny run for the test suite)."""
    run = budget(quick)
    load = os.getloadavg()[0]
    splits, dense, pruned = digits_models(quick)
    calibration = splits.loader("train", batch_size=64, shuffle=False)
    pruned_name = f"pruned float ({AMOUNT:.0%} channels)"
    deployed: dict[str, nn.Module] = {
        "dense float": compile_for_inference(dense),
        pruned_name: compile_for_inference(pruned),
        "int8": post_training_quantize(dense, calibration),
        f"pruned ({AMOUNT:.0%}) + int8": post_training_quantize(pruned, calibration),
    }
    # float models as deployed: batch norm folded (Inductor folds it too); int8: the graph
    sources = {"dense float": fold_batchnorm(dense), pruned_name: fold_batchnorm(pruned)}
    sizes = {name: size_on_disk(sources.get(name, model)) for name, model in deployed.items()}
    # accuracy first: the first call compiles each model for batches of BATCH, as timed next
    accuracies = {name: accuracy(model, splits.test) for name, model in deployed.items()}
    x = splits.test.tensors[0][:BATCH]
    seconds = interleaved_latency({k: (m, x) for k, m in deployed.items()}, run.repeats, run.warmup)
    base_size, base_time = sizes["dense float"], seconds["dense float"]
    rows = [
        [
            name,
            f"{sizes[name]:,}",
            f"{sizes[name] / base_size:.2f}",
            f"{1e3 * seconds[name]:.2f}",
            f"{base_time / seconds[name]:.2f}x",
            f"{accuracies[name]:.1f}",
        ]
        for name in deployed
    ]
    if not quick:
        rows += resnet_rows(repeats=max(5, run.repeats // 5), warmup=2)
    notes = [
        "size: torch.save of the state_dict (float: batch norm folded; int8: int8 weights, "
        "per-channel scales and zero points, float biases); the same weights in float32 take "
        "4 bytes each, in int8 1",
        f"latency: median of {run.repeats} interleaved repeats, every model compiled by "
        "torch.compile with frozen weights, called in inference mode (int8: oneDNN int8 "
        "kernels); speed-up: dense float latency / the row's",
        f"accuracy: digits test split ({len(splits.test)} images), computed by the compiled "
        f"models; dense: {dense_epochs(quick)} epochs; pruned: structured, magnitude scores, "
        f"local, fine-tuned {run.epochs} epoch(s); int8: post-training quantisation, 8 "
        "calibration batches of 64 training images",
        *(
            []
            if quick
            else [
                "resnet18: random weights and inputs (latency and size only); its speed-up is "
                "over its own float row"
            ]
        ),
        f"{torch.get_num_threads()} thread(s); load average {load:.2f} before, "
        f"{os.getloadavg()[0]:.2f} after (the machine is shared: timings are noisy under load)",
    ]
    title = "D2  int8 quantisation and structured pruning, reference CNN on digits (CPU)"
    return table(title, HEADER, rows, notes)


def run(quick: bool = False) -> None:
    """Print the table (``quick``: a tiny run for the test suite)."""
    print(quantization_table(quick))
