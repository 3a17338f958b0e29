"""Rows P2 and P3 of ``pruneplug bench pruning``: structured pruning, accuracy and speed.

**P2 - accuracy.** The reference MLP 64-300-100-10 is trained once on the seeded digits split
(30 epochs, SGD lr 0.05); then every method removes the same number of hidden neurons per layer
(50 / 75 / 90 %) and gets the same 10 epochs of training:

* anchors: Torch-Pruning's ``MetaPruner`` (local) with magnitude, Taylor and random importance,
  then ``engine.fine_tune`` for 10 epochs with its defaults;
* ours, the documented recipe (:data:`RECIPE`): the ``structured`` pruner with a pruneplug scorer,
  then 10 epochs of training with knowledge distillation from the dense model (Hinton et al.,
  "Distilling the Knowledge in a Neural Network", 2015) as the engine's ``penalty``.

Accuracies are on the test split, averaged over the fine-tuning seeds :data:`SEEDS`.

**P3 - speed.** The reference CNN (randomly initialised: speed does not depend on the weights)
with 50 % and 75 % of its channels removed (local, L1 magnitude): MACs reduction and CPU latency
speedup at batch 256, median of interleaved repeats (each repeat times every model once, right
after an untimed run, so a load spike on the shared machine hits all of them alike). The anchor
The headline speed-up is pruning's own: the pruned model with every deployment step of
:mod:`pruneplug.deploy` (fold batch norm, channel rounding, ``torch.compile``) against the dense
model given the same steps, set beside the MACs reduction. The columns labelled *deployment*
then add the steps to the pruned model one at a time and divide by the dense model as it comes
(Torch-Pruning's pruned model as it comes is the first), so each shows what its step
contributes; they are not speed-ups due to pruning.
"""

from __future__ import annotations

import copy
import os
import statistics
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import Tensor, nn
from torch.nn import functional as F

import pruneplug
from pruneplug import data, engine, metrics, models, recovery
from pruneplug.deploy import deploy
from pruneplug.metrics import interleaved_latency

#: Fractions of hidden neurons (P2) and of channels (P3) removed.
P2_AMOUNTS = (0.5, 0.75, 0.9)
P3_AMOUNTS = (0.5, 0.75)
#: Fine-tuning seeds averaged in P2.
SEEDS = (0, 1, 2)
#: P2 targets: at least the anchors' best at 50 / 75 %, and this many points above it at 90 %.
P2_MARGIN = {0.5: 0.0, 0.75: 0.0, 0.9: 3.0}
#: Fraction of channels removed -> goal for pruning's own speed-up over its MACs reduction
#: (P3 here, D1 of ``pruneplug bench deploy``).
GOALS = {0.5: 0.8, 0.75: 0.6}


@dataclass(frozen=True)
class Recipe:
    """Our P2 recipe: scorer, one-shot structured pruning, then distillation training.

    The defaults are the documented recipe. They were chosen on the **validation** split (mean
    of 3 seeds) over batch size 16 / 32 / 64, lr 0.005-0.05, distillation weight 0.5-4 and
    temperature 2 / 4. Gradual pruning (3 or 5 steps inside the 10 epochs) and Taylor or
    ablation scores instead of magnitude did no better on validation (within one sample of 200),
    so the recipe keeps the simplest. Small batches matter most: the budget counts epochs, and
    distillation from the dense model turns each extra step into a useful one instead of
    overfitting 1,200 labels.
    """

    scorer: str = "magnitude"
    scorer_params: tuple[tuple[str, object], ...] = (("p", 2),)
    lr: float = 0.01
    batch_size: int = 16
    schedule: str | None = "cosine"
    temperature: float = 2.0
    weight: float = 2.0  # of the distillation term, added to the cross-entropy


RECIPE = Recipe()


@dataclass(frozen=True)
class Budget:
    """Epochs and repeats of a run (``quick`` shrinks them for the test suite)."""

    dense_epochs: int
    epochs: int
    seeds: tuple[int, ...]
    repeats: int
    warmup: int


def budget(quick: bool) -> Budget:
    if quick:
        return Budget(dense_epochs=1, epochs=1, seeds=(0,), repeats=3, warmup=1)
    return Budget(dense_epochs=30, epochs=10, seeds=SEEDS, repeats=50, warmup=5)


def table(title: str, header: list[str], rows: list[list[str]], notes: list[str]) -> str:
    """A fixed-width text table with a title line and notes under it."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join
    out = [title, line(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    out.append(line("-" * w for w in widths))
    out += [line(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out + notes)


# --------------------------------------------------------------------------- P2: accuracy


def hidden_layers(model: nn.Module) -> list[nn.Linear]:
    """The MLP's hidden Linear layers (every prunable layer but the classifier)."""
    layers = list(pruneplug.prunable_layers(model).values())[:-1]
    return [layer for layer in layers if isinstance(layer, nn.Linear)]


def anchor(
    dense: nn.Module, importance: str, amount: float, splits: data.Splits, run: Budget, seed: int
) -> float:
    """Torch-Pruning MetaPruner (local) + ``engine.fine_tune``: test accuracy in %."""
    model = copy.deepcopy(dense)
    layers = hidden_layers(model)
    kept = {layer: layer.out_features - round(amount * layer.out_features) for layer in layers}
    estimator = {
        "magnitude": tp.importance.MagnitudeImportance(p=2),
        "taylor": tp.importance.TaylorImportance(),
        "random": tp.importance.RandomImportance(),
    }[importance]
    x, y = splits.train.tensors
    pruner = tp.pruner.MetaPruner(
        model,
        x[:1],
        importance=estimator,
        # a ratio per layer that keeps exactly as many neurons as ours (int() truncates)
        pruning_ratio_dict={
            layer: 1 - (k + 1e-6) / layer.out_features for layer, k in kept.items()
        },
        ignored_layers=[list(pruneplug.prunable_layers(model).values())[-1]],
    )
    if importance == "taylor":  # Taylor importance reads the gradients of the training loss
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
    torch.manual_seed(seed)  # random importance draws from the global generator
    pruner.step()
    model.zero_grad()
    assert [layer.out_features for layer in layers] == list(kept.values())
    engine.fine_tune(model, splits.train, epochs=run.epochs, seed=seed, progress=False)
    return 100 * engine.evaluate(model, splits.test)["accuracy"]


def prune_ours(
    dense: nn.Module, amount: float, splits: data.Splits, recipe: Recipe, round_to: int = 1
) -> nn.Module:
    """The first half of our recipe: score ``dense``, prune it (structured, local, ``round_to``)."""
    scorer = pruneplug.get_scorer(recipe.scorer, **dict(recipe.scorer_params))
    batches = splits.loader("train", batch_size=256, shuffle=False) if scorer.needs_data else None
    scores = scorer(dense, batches)
    return pruneplug.get_pruner("structured", round_to=round_to)(dense, scores, amount=amount)


def ours(
    dense: nn.Module,
    amount: float,
    splits: data.Splits,
    run: Budget,
    seed: int,
    recipe: Recipe,
    round_to: int = 1,
) -> float:
    """Our recipe: score, prune (structured, local), train with distillation: test acc in %."""
    model = prune_ours(dense, amount, splits, recipe, round_to)
    engine.train(
        model,
        splits.train,
        epochs=run.epochs,
        lr=recipe.lr,
        batch_size=recipe.batch_size,
        schedule=recipe.schedule,
        penalty=recovery.distillation_penalty(dense, recipe.temperature, recipe.weight),
        seed=seed,
        progress=False,
    )
    return 100 * engine.evaluate(model, splits.test)["accuracy"]


def dense_mlp(splits: data.Splits, run: Budget) -> nn.Module:
    """The digits benchmark's dense MLP 64-300-100-10: ``run.dense_epochs`` of SGD, seed 0."""
    dense = models.mlp()
    engine.train(dense, splits.train, epochs=run.dense_epochs, lr=0.05, seed=0, progress=False)
    return dense


def p2(quick: bool) -> str:
    run = budget(quick)
    splits = data.load_digits(seed=0)
    dense = dense_mlp(splits, run)
    dense_acc = 100 * engine.evaluate(dense, splits.test)["accuracy"]
    rows = []
    for amount in P2_AMOUNTS:
        got = {
            name: statistics.mean(anchor(dense, name, amount, splits, run, s) for s in run.seeds)
            for name in ("magnitude", "taylor", "random")
        }
        mine = statistics.mean(ours(dense, amount, splits, run, s, RECIPE) for s in run.seeds)
        target = max(got.values()) + P2_MARGIN[amount]
        widths = "-".join(
            str(n.out_features - round(amount * n.out_features)) for n in hidden_layers(dense)
        )
        rows.append(
            [
                f"{amount:.0%}",
                widths,
                *(f"{v:.1f}" for v in got.values()),
                f"{mine:.1f}",
                f">= {target:.1f}",
                "yes" if mine >= target else "NO",
            ]
        )
    header = [
        "removed",
        "hidden",
        "TP magnitude",
        "TP taylor",
        "TP random",
        "ours",
        "target",
        "met",
    ]
    n_train, n_val, n_test = len(splits.train), len(splits.val), len(splits.test)
    notes = [
        f"digits split (seed 0): train {n_train:,} / val {n_val:,} / test {n_test:,}; test "
        f"accuracy in %, mean of {len(run.seeds)} fine-tuning seed(s); dense MLP {dense_acc:.1f} %",
        f"every method: {run.epochs} epochs after pruning. Anchors: Torch-Pruning MetaPruner, "
        "local, then engine.fine_tune defaults",
        f"ours: structured pruner (local) + {RECIPE.scorer} scores {dict(RECIPE.scorer_params)}, "
        f"SGD lr {RECIPE.lr} {RECIPE.schedule}, batch {RECIPE.batch_size}, distillation "
        f"T={RECIPE.temperature} weight {RECIPE.weight} from the dense model (chosen on val)",
    ]
    title = "P2  structured pruning, MLP 64-300-100-10 on digits: accuracy (%)"
    return table(title, header, rows, notes)


# --------------------------------------------------------------------------- P3: speed


def torch_pruning_cnn(dense: nn.Module, amount: float, x: Tensor) -> nn.Module:
    """The anchor: Torch-Pruning MetaPruner, L1 magnitude, local, classifier ignored."""
    model = copy.deepcopy(dense)
    classifier = list(pruneplug.prunable_layers(model).values())[-1]
    tp.pruner.MetaPruner(
        model,
        x[:1],
        importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=amount,
        ignored_layers=[classifier],
    ).step()
    return model.eval()


#: P3's deployment steps, each adding one to the previous (except that the compiled model takes
#: NCHW input: TorchInductor picks its own layouts, and NHWC input measured slower under it):
#: column -> (round_to, fold BN, NHWC, torch.compile).
STEPS = {
    "ours as is": (1, False, False, False),
    "+fold BN": (1, True, False, False),
    "+NHWC": (1, True, True, False),
    "+round_to 8": (8, True, True, False),
    "+compile": (8, True, False, True),
}
#: The column with every step applied, timed against the dense model given the same steps.
FINAL = "+compile"


def widths_of(model: nn.Module) -> str:
    layers = pruneplug.prunable_layers(model).values()
    return "-".join(str(pruneplug.plumbing.effective_weight(m).shape[0]) for m in layers)


def p3(quick: bool) -> str:
    run = budget(quick)
    load = os.getloadavg()[0]
    dense = models.cnn().eval()
    x = torch.rand(256, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    nhwc = x.to(memory_format=torch.channels_last)
    scores = pruneplug.get_scorer("magnitude", p=1)(dense)
    dense_macs = metrics.macs(dense, x[:1])
    rows, notes = [], []
    for amount in P3_AMOUNTS:
        anchor_model = torch_pruning_cnn(dense, amount, x)
        runs = {"dense": (dense, x), "dense deployed": (deploy(dense, compiled=True), x)}
        runs["TP as is"] = (anchor_model, x)
        pruned = {}
        for column, (round_to, fold_bn, channels_last, compiled) in STEPS.items():
            if round_to not in pruned:
                pruner = pruneplug.get_pruner("structured", round_to=round_to)
                pruned[round_to] = pruner(dense, scores, amount=amount).eval()
            model = deploy(
                pruned[round_to], fold_bn=fold_bn, channels_last=channels_last, compiled=compiled
            )
            runs[column] = (model, nhwc if channels_last else x)
        assert widths_of(anchor_model) == widths_of(pruned[1]), "anchor and ours differ"
        if widths_of(pruned[8]) == widths_of(pruned[1]):
            notes.append(
                f"{amount:.0%}: round_to 8 leaves the widths {widths_of(pruned[1])} as they are "
                "(multiples of 8): its column differs from +NHWC by timing noise only"
            )
        seconds = interleaved_latency(runs, run.repeats, run.warmup)
        speed = {name: seconds["dense"] / s for name, s in seconds.items()}
        reduction = dense_macs / metrics.macs(pruned[1], x[:1])
        alone = seconds["dense deployed"] / seconds[FINAL]
        goal = GOALS[amount]
        rows.append(
            [
                f"{amount:.0%}",
                widths_of(pruned[8]),
                f"{reduction:.1f}x",
                f"{alone:.1f}x",
                f"{alone / reduction:.2f}",
                f">= {goal}",
                "yes" if alone / reduction >= goal else "NO",
                *(f"{speed[k]:.1f}x" for k in ("TP as is", *STEPS)),
            ]
        )
    header = ["removed", "widths", "MACs red.", "speed-up", "ratio", "goal", "met"]
    header += ["deployment: TP as is", *STEPS]
    notes = [
        "speed-up: what pruning alone buys, both models given every deployment step (fold BN, "
        "round_to 8, torch.compile); ratio: speed-up / MACs red.; goal as in "
        "`pruneplug bench deploy` (D1). This CNN's narrow layers spend their time on per-op "
        "overhead, not multiply-adds: D1 times ResNet-18, whose time is multiply-adds",
        "deployment columns: latency speed-up over the dense CNN as it comes "
        f"({1e3 * seconds['dense']:.2f} ms per batch of 256), median of {run.repeats} "
        "interleaved repeats; each adds one deployment step to the pruned model only, so they "
        "mix pruning with what the steps give any model; TP as is: Torch-Pruning's pruned "
        "model as it comes",
        "+compile: torch.compile (TorchInductor) of the folded model, NCHW input, compiled "
        "before timing: a narrow network's time goes to per-op overhead, which fused kernels cut",
        *notes,
        f"{torch.get_num_threads()} thread(s); load average {load:.2f} before, "
        f"{os.getloadavg()[0]:.2f} after (the machine is shared: timings are noisy under load)",
    ]
    title = "P3  structured pruning, reference CNN, batch 256 on CPU: MACs and latency"
    return table(title, header, rows, notes)


def run(quick: bool = False) -> None:
    """Print the P2 and P3 tables (``quick``: a tiny run for the test suite)."""
    print(p2(quick))
    print()
    print(p3(quick))
