"""A1 of ``pruneplug bench attention``: accuracy against attention heads removed, beside
Torch-Pruning.

A small transformer (``models.transformer_classifier``: 2 pre-norm layers of 4 heads of 8
dimensions, MLP 64, sinusoidal positions) is trained once on the generated reviews
(:func:`pruneplug.sequences.load_reviews`, where word order matters) with the recipe of its
docstring (Adam 3e-3, cosine schedule, 20 epochs). Then every method removes the same number of
heads, 1, 2 or 3 of the 4, from every layer, and nothing else (the MLPs' hidden units stay):

* ours: the ``structured`` pruner (local) with unit scores from pruneplug's ``head_importance``
  (Michel et al. 2019's mask gradients), ``magnitude`` (L2) and ``taylor`` scorers - a head
  scores the mean of its stream channels' scores - and, as ``ours I_h``, with the per-head
  importance :math:`I_h` of Michel et al. itself (:func:`by_head_scores`);
* the anchors: Torch-Pruning's ``MetaPruner`` with its ``MagnitudeImportance`` (L2) and
  ``TaylorImportance``, ``num_heads`` of every ``nn.MultiheadAttention``,
  ``prune_num_heads=True, prune_head_dims=False``, the classifier and the MLPs ignored.

``nn.MultiheadAttention`` ties its width to the residual stream (``embed_dim`` = heads x
``head_dim``), so in both a head goes with its ``head_dim`` channels of the stream, in every
layer, with the embedding's and the position table's columns: the pruned models have the same
shapes (checked). Each is evaluated on the test split as it comes and after the same short
recovery (:data:`RECOVERY`, the same seed for every method), averaged over :data:`SEEDS`.

Torch-Pruning 1.6 needs three things to do this to ``nn.MultiheadAttention`` (each a line of
:func:`torch_pruning`): its head arithmetic reads ``out_features`` (written for qkv ``Linear``
layers), which the module lacks, so it is given ``embed_dim``; its pruning function keeps
``num_heads`` and divides the smaller ``embed_dim`` by it, so ``num_heads`` and ``head_dim`` are
set from the pruner's own count afterwards; and it follows parameters only, so the sinusoidal
position buffer is traced as a parameter, as pruneplug's pruner does by itself.
"""

from __future__ import annotations

import copy
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch_pruning as tp
from pruneplug_plugins.head_importance import head_scores
from pruneplug_plugins.structured.examples import Example, example_input
from pruneplug_plugins.structured.tracing import buffers_as_parameters, parameters_as_buffers
from torch import nn
from torch.nn import functional as F

import pruneplug
from pruneplug import Batch, Scores, engine, models, sequences

from .pruning_structured import table

#: Heads removed from every layer (of :data:`HEADS`): the table's rows.
REMOVED = (0, 1, 2, 3)
#: Heads per layer of the benchmark's transformer.
HEADS = 4
#: Recovery seeds averaged in the full run.
SEEDS = (0, 1, 2)
#: pruneplug scorers (their unit scores rank the heads) with their parameters (magnitude's
#: L2 norm, as Torch-Pruning's), and Torch-Pruning importances.
OURS: dict[str, dict[str, object]] = {"head_importance": {}, "magnitude": {"p": 2}, "taylor": {}}
ANCHORS = ("magnitude", "taylor")
#: Training batches the data-driven scores read (first ones of the unshuffled training split).
SCORE_BATCHES, SCORE_BATCH_SIZE = 8, 64


@dataclass(frozen=True)
class Training:
    """An :func:`pruneplug.engine.train` recipe."""

    epochs: int
    lr: float
    schedule: str | None = None
    optimizer: str = "adam"
    batch_size: int = 64

    def __call__(self, model: nn.Module, data: engine.Data, seed: int) -> None:
        engine.train(
            model,
            data,
            epochs=self.epochs,
            lr=self.lr,
            optimizer=self.optimizer,
            schedule=self.schedule,
            batch_size=self.batch_size,
            seed=seed,
            progress=False,
        )


#: The dense model's training: the recipe :mod:`pruneplug.sequences` documents (about 0.98).
DENSE = Training(epochs=20, lr=3e-3, schedule="cosine")
#: The recovery every pruned model gets (and the dense one, in the first row): two epochs at the
#: dense starting rate, chosen on the validation split over Adam 1e-3 / 3e-3, 1 / 2 epochs,
#: constant or cosine (with ours and TP magnitude; higher rates recovered more at 2-3 heads).
RECOVERY = Training(epochs=2, lr=3e-3)


@dataclass(frozen=True)
class Budget:
    """What a run trains and on how much data (``quick`` shrinks it for the test suite)."""

    sizes: dict[str, int] | None  # load_reviews sizes; None: the default splits
    dense: Training
    recovery: Training
    seeds: tuple[int, ...]


def budget(quick: bool) -> Budget:
    if quick:
        return Budget(
            sizes={"train": 256, "val": 0, "test": 256},
            dense=Training(epochs=2, lr=3e-3),
            recovery=Training(epochs=1, lr=3e-3),
            seeds=(0,),
        )
    return Budget(sizes=None, dense=DENSE, recovery=RECOVERY, seeds=SEEDS)


def attention(model: nn.Module) -> list[nn.MultiheadAttention]:
    return [m for m in model.modules() if isinstance(m, nn.MultiheadAttention)]


def mlp_hidden(model: nn.Module) -> list[str]:
    """Names of the encoder layers' first MLP layers, whose hidden units every method keeps."""
    return [
        f"{name}.linear1"
        for name, module in model.named_modules()
        if isinstance(module, nn.TransformerEncoderLayer)
    ]


def ours(scorer: str, dense: nn.Module, heads: int, batches: list[Batch]) -> nn.Module:
    """The ``structured`` pruner with ``scorer``'s unit scores: ``heads`` fewer per layer."""
    scores = pruneplug.get_scorer(scorer, **OURS[scorer])(dense, batches)
    pruner = pruneplug.get_pruner("structured", protect=",".join(mlp_hidden(dense)))
    return pruner(dense, scores, amount=heads / HEADS)


def by_head_scores(dense: nn.Module, heads: int, batches: list[Batch]) -> nn.Module:
    r"""The ``structured`` pruner ranking heads by Michel et al.'s :math:`I_h` itself
    (:func:`~pruneplug_plugins.head_importance.head_scores`), averaged over the layers: each
    layer's :math:`I_h` is given to the ``head_dim`` stream channels of head :math:`h` that
    the layer's ``linear2`` writes (the pruner reads unit scores of prunable layers only)."""
    per_head = head_scores(dense, batches)
    units = {}
    for name, module in dense.named_modules():
        if isinstance(module, nn.TransformerEncoderLayer):
            score = per_head[f"{name}.self_attn"]
            units[f"{name}.linear2"] = score.repeat_interleave(module.self_attn.head_dim)
    pruner = pruneplug.get_pruner("structured", protect=",".join(mlp_hidden(dense)))
    return pruner(dense, Scores(unit=units), amount=heads / HEADS)


def torch_pruning(importance: str, dense: nn.Module, heads: int, batches: list[Batch]) -> nn.Module:
    """Torch-Pruning's MetaPruner removing ``heads`` heads per layer (see the module docstring
    for the three adjustments ``nn.MultiheadAttention`` needs)."""
    model = copy.deepcopy(dense).eval()
    modules = attention(model)
    for module in modules:  # its head arithmetic reads the qkv layer's out_features
        module.out_features = module.embed_dim
    promoted = buffers_as_parameters(model)  # the sinusoidal positions, seen as a parameter
    estimator = {
        "magnitude": tp.importance.MagnitudeImportance(p=2),
        "taylor": tp.importance.TaylorImportance(),
    }[importance]
    ratio = heads / HEADS
    pruner = tp.pruner.MetaPruner(
        model,
        example_input(model, Example()),
        importance=estimator,
        pruning_ratio=ratio,  # > 0 lets the stream's group be pruned; its head dims stay
        num_heads={m: m.num_heads for m in modules},
        prune_num_heads=True,
        prune_head_dims=False,
        head_pruning_ratio=ratio,
        ignored_layers=[model.get_submodule(n) for n in ["classifier", *mlp_hidden(model)]],
        unwrapped_parameters=[(getattr(m, n), getattr(m, n).dim() - 1) for m, n, _ in promoted],
    )
    if importance == "taylor":  # Taylor importance reads the gradients of the training loss
        model.zero_grad()
        for inputs, targets in batches:
            (F.cross_entropy(model(inputs), targets) / len(batches)).backward()
    pruner.step()
    model.zero_grad()
    parameters_as_buffers(promoted)
    for module in modules:  # its pruning function kept num_heads: set them from its count
        del module.out_features
        module.num_heads = pruner.num_heads[module]
        module.head_dim = module.embed_dim // module.num_heads
    return model


#: Column name -> ``prune(dense, heads, batches)``: the methods compared, in the table's order.
METHODS: dict[str, Callable[[nn.Module, int, list[Batch]], nn.Module]] = {
    **{f"ours {scorer}": partial(ours, scorer) for scorer in OURS},
    "ours I_h": by_head_scores,
    **{f"TP {importance}": partial(torch_pruning, importance) for importance in ANCHORS},
}


def accuracy(model: nn.Module, task: sequences.TextTask) -> float:
    """Test accuracy in %."""
    return 100 * engine.evaluate(model, task.test)["accuracy"]


def recovered(model: nn.Module, task: sequences.TextTask, run: Budget, seed: int) -> float:
    """Test accuracy in % of a copy of ``model`` after the recovery training."""
    model = copy.deepcopy(model)
    run.recovery(model, task.train, seed)
    return accuracy(model, task)


def shapes(model: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(name, tuple(p.shape)) for name, p in model.state_dict().items()]


def attention_table(quick: bool) -> str:
    run = budget(quick)
    task = sequences.load_reviews(sizes=run.sizes)
    dense = models.transformer_classifier(len(task.vocab), heads=HEADS, max_len=task.length)
    run.dense(dense, task.train, 0)
    dense.eval()
    batches = list(task.loader("train", batch_size=SCORE_BATCH_SIZE, shuffle=False))
    batches = batches[:SCORE_BATCHES]
    dense_after = statistics.mean(recovered(dense, task, run, seed) for seed in run.seeds)
    rows = []
    for heads in REMOVED:
        cells: list[float] = []
        pruned: list[nn.Module] = [dense]
        if heads == 0:  # every method leaves the dense model
            cells = [accuracy(dense, task), dense_after] * len(METHODS)
        else:
            pruned = [prune(dense, heads, batches) for prune in METHODS.values()]
            for model in pruned:
                after = [recovered(model, task, run, seed) for seed in run.seeds]
                cells += [accuracy(model, task), statistics.mean(after)]
        assert all(shapes(m) == shapes(pruned[0]) for m in pruned), "the methods' widths differ"
        stream = attention(pruned[0])[0].embed_dim
        size = sum(p.numel() for p in pruned[0].parameters())
        rows.append([f"{heads} of {HEADS}", str(stream), f"{size:,}", *(f"{c:.1f}" for c in cells)])
    header = ["heads removed", "stream", "params"]
    header += [f"{name}{phase}" for name in METHODS for phase in ("", " +rec")]
    n_train, n_test = len(task.train), len(task.test)
    notes = [
        f"generated reviews (load_reviews, seed 0): train {n_train:,} / test {n_test:,}; "
        f"transformer_classifier d_model 32, {HEADS} heads x 8, 2 layers, MLP 64, trained once "
        f"({run.dense.epochs} epochs Adam {run.dense.lr:g} {run.dense.schedule or 'constant'})",
        "heads removed: from every layer (the same heads: they share the residual stream); "
        "stream: the stream's width left (embedding, positions, norms); params: of every "
        "method's pruned model (the same shapes, checked); MLP hidden units are never removed",
        "each method's first column: test accuracy in % of the pruned model as it comes (no "
        "training; one pruning per method, so no seeds); '+rec': after recovery "
        f"({run.recovery.epochs} epoch(s) Adam lr {run.recovery.lr:g}, batch "
        f"{run.recovery.batch_size}), mean of {len(run.seeds)} seed(s); in the 0 row every "
        "column is the dense model (before, and after the same recovery)",
        "ours X: pruneplug's structured pruner ranking heads by scorer X's unit scores "
        "(magnitude: L2, as TP's) of the layers writing the stream (the MLPs' linear2), "
        "averaged over each head's channels and the layers; "
        f"data-driven scores read {SCORE_BATCHES} training batches of {SCORE_BATCH_SIZE}; "
        "ours I_h: the same pruner ranking heads by head_importance's per-head I_h (Michel et "
        "al.'s mask gradient of each head, head_scores), averaged over the layers",
        "TP X: Torch-Pruning MetaPruner, its X importance (magnitude: L2) of every layer of "
        "the stream's group (embedding, q/k/v, out_proj, norms, MLPs, classifier) averaged per "
        "head, prune_num_heads=True, prune_head_dims=False (Taylor: gradients of the same "
        "batches); nn.MultiheadAttention needs 3 adjustments, see the module docstring",
    ]
    title = "A1  attention heads removed, transformer_classifier on reviews: test accuracy (%)"
    return table(title, header, rows, notes)


def run(quick: bool = False) -> None:
    """Print the A1 table (``quick``: a tiny run for the test suite)."""
    print(attention_table(quick))
