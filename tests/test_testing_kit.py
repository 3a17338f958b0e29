"""The conformance kit: it passes every registered plugin, and each rule catches a plugin that
breaks it with a message naming the rule and the fix."""

import copy
import math
import random

import pytest
import torch
from pruneplug_plugins.structured import Structured
from pruneplug_plugins.unstructured import Unstructured
from torch import nn
from torch.nn.utils import prune

import pruneplug
from pruneplug import (
    AdversarialAugmenter,
    ImageAugmenter,
    MixingAugmenter,
    Param,
    ParamError,
    Pruner,
    Scorer,
    Scores,
    TextAugmenter,
    prunable_layers,
)
from pruneplug.params import probability
from pruneplug.registry import Entry
from pruneplug.testing import (
    RULES,
    ConformanceError,
    all_plugins,
    check_augmenter,
    check_plugin,
    check_pruner,
    check_scorer,
    parametrize_plugins,
)


@parametrize_plugins()
def test_every_registered_plugin_follows_the_contract(plugin):
    check_plugin(plugin)


# --------------------------------------------------------------------------- plugins that conform


class GoodScorer(Scorer):
    name = "good_scorer"
    description = "|w| ** power per weight"
    params = (Param("power", float, 1.0, low=0.5, high=3.0, help="exponent of |w|"),)

    def score(self, model, batches, loss_fn):
        return Scores(
            weight={
                n: m.weight.detach().abs() ** self.config["power"]
                for n, m in prunable_layers(model).items()
            }
        )


class GoodDataScorer(GoodScorer):
    name = "good_data_scorer"
    needs_data = True

    def score(self, model, batches, loss_fn):
        scale = sum(float(x.mean()) for x, _ in batches)
        scores = super().score(model, batches, loss_fn)
        return Scores(weight={n: s * scale for n, s in scores.weight.items()})


class GoodAug(ImageAugmenter):
    name = "good_aug"
    description = "shift each image's brightness by a random amount"
    params = (probability(0.5),)

    def generate_parameters(self, shape, generator, device):
        return {"delta": torch.rand(shape[0], generator=generator, device=device) * 0.4 - 0.2}

    def apply(self, images, params):
        return (images + params["delta"].view(-1, 1, 1, 1).to(images)).clamp(0, 1)


class GoodMix(MixingAugmenter):
    name = "good_mix"
    description = "blend each image with a random partner, 70:30, and its label the same way"

    def generate_parameters(self, shape, generator, device):
        return {"partner": torch.randperm(shape[0], generator=generator, device=device)}

    def mix(self, images, targets, params):
        j = params["partner"]
        return 0.7 * images + 0.3 * images[j], 0.7 * targets + 0.3 * targets[j]


class GoodAttack(AdversarialAugmenter):
    name = "good_attack"
    description = "one signed gradient step up the loss"
    params = (Param("eps", float, 0.05, low=0.0, high=1.0, help="step size"),)

    def attack(self, images, targets, params, model, loss_fn):
        x = images.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(loss_fn(model(x), targets), x)
        return (images + self.config["eps"] * grad.sign()).clamp(0, 1)


class GoodText(TextAugmenter):
    name = "good_text"
    description = "swap two random words"

    def augment_one(self, text, generator):
        words = text.split()
        if len(words) > 1:
            i, j = torch.randperm(len(words), generator=generator)[:2].tolist()
            words[i], words[j] = words[j], words[i]
        return " ".join(words)


def keep_mask(scores, amount):
    """Keep-mask removing the round(amount * n) lowest scores."""
    mask = torch.ones_like(scores, dtype=torch.bool)
    mask.view(-1)[scores.flatten().topk(round(amount * scores.numel()), largest=False).indices] = 0
    return mask


def shrink_first_hidden_layer(model, units, amount, *, and_next):
    """Remove the lowest-scored units of fc1 (and fc2's matching inputs when ``and_next``)."""
    fc1, fc2 = model.fc1, model.fc2
    keep = units["fc1"].topk(round((1 - amount) * fc1.out_features)).indices.sort().values
    fc1.weight = nn.Parameter(fc1.weight.detach()[keep])
    fc1.bias = nn.Parameter(fc1.bias.detach()[keep])
    fc1.out_features = len(keep)
    if and_next:
        fc2.weight = nn.Parameter(fc2.weight.detach()[:, keep])
        fc2.in_features = len(keep)
    return model


class HandStructured(Pruner):
    """A structured pruner for MLPs with layers fc1, fc2: prunes fc1's units in a copy."""

    name = "hand_structured"
    description = "remove the lowest-scored neurons of fc1"
    structured = True
    in_place = False
    and_next = True

    def prune(self, model, scores, *, amount, threshold):
        target = model if self.in_place else copy.deepcopy(model)
        return shrink_first_hidden_layer(target, scores.units(), amount, and_next=self.and_next)


@pytest.mark.parametrize(
    "plugin",
    [
        GoodScorer,
        GoodScorer(power=2.0),
        GoodDataScorer,
        GoodAug,
        GoodMix,
        GoodAttack,
        GoodText,
    ],  # fmt: skip
    ids=lambda p: getattr(p, "name", ""),
)
def test_conforming_plugins_pass(plugin):
    check_plugin(plugin)


def test_a_structured_pruner_passes_on_the_model_it_supports():
    model = nn.Sequential()
    model.add_module("flatten", nn.Flatten())
    model.add_module("fc1", nn.Linear(64, 10))
    model.add_module("relu", nn.ReLU())
    model.add_module("fc2", nn.Linear(10, 3))
    check_pruner(HandStructured, model=model, example=torch.rand(4, 1, 8, 8))


# --------------------------------------------------------------------------- broken plugins


class NotAPlugin:
    name = "not_a_plugin"
    description = "has the attributes but no base class"
    params = ()


def scorer(cls_name, **attrs):
    return type(cls_name, (GoodScorer,), attrs)


def broken_defaults_init(self, **params):
    self.config = {}


def falls_back_to_defaults(self, **params):
    try:
        GoodScorer.__init__(self, **params)
    except ParamError:
        GoodScorer.__init__(self)


def returns_dict(self, model, batches, loss_fn):
    return {"weight": {}}


def one_unit_too_many(self, model, batches, loss_fn):
    return Scores(unit={n: torch.rand(m.weight.shape[0] + 1) for n, m in
                        prunable_layers(model).items()})  # fmt: skip


def keeps_the_graph(self, model, batches, loss_fn):
    return Scores(weight={n: m.weight.abs() for n, m in prunable_layers(model).items()})


def leaves_eval_mode(self, model, batches, loss_fn):
    model.eval()
    return GoodScorer.score(self, model, batches, loss_fn)


def leaves_train_mode(self, model, batches, loss_fn):
    model.eval()
    scores = GoodScorer.score(self, model, batches, loss_fn)
    model.train()  # "restores" a mode it never read
    return scores


def writes_into_batches(self, model, batches, loss_fn):
    for x, _ in batches:
        x.mul_(2)
    return GoodScorer.score(self, model, batches, loss_fn)


def updates_batch_norm(self, model, batches, loss_fn):
    for x, _ in batches:
        model(x)  # a forward in training mode moves the batch-norm statistics
    return GoodScorer.score(self, model, batches, loss_fn)


def uses_python_random(self, model, batches, loss_fn):
    return Scores(
        weight={n: m.weight.detach().abs() + random.random()
                for n, m in prunable_layers(model).items()}
    )  # fmt: skip


class SkipsTheChecks(Unstructured):
    def __call__(self, model, scores, *, amount=None, threshold=None):
        return self.prune(model, scores, amount=amount, threshold=threshold)


class PrunesTheBest(Unstructured):
    def prune(self, model, scores, *, amount, threshold):
        flipped = Scores(weight={n: -s for n, s in scores.weight.items()})
        return super().prune(model, flipped, amount=amount, threshold=threshold)


class ZeroesWeights(Unstructured):
    def prune(self, model, scores, *, amount, threshold):
        layers = prunable_layers(model)
        with torch.no_grad():
            for name, s in scores.weight.items():
                layers[name].weight.mul_(keep_mask(s, amount))
        return model


class PrunesACopy(Unstructured):
    def prune(self, model, scores, *, amount, threshold):
        return super().prune(copy.deepcopy(model), scores, amount=amount, threshold=threshold)


class HalfTheAmount(Unstructured):
    def prune(self, model, scores, *, amount, threshold):
        amount = None if amount is None else amount / 2
        return super().prune(model, scores, amount=amount, threshold=threshold)


class OverwritesMasks(Unstructured):
    def prune(self, model, scores, *, amount, threshold):
        layers = prunable_layers(model)
        for name, s in scores.weight.items():
            mask = keep_mask(s, amount).float() if threshold is None else (s >= threshold).float()
            if hasattr(layers[name], "weight_mask"):
                layers[name].weight_mask.copy_(mask)
            else:
                prune.custom_from_mask(layers[name], "weight", mask)
        return model


class NormalisesScoresInPlace(Unstructured):
    def prune(self, model, scores, *, amount, threshold):
        for s in scores.weight.values():
            s.div_(s.max())
        return super().prune(model, scores, amount=amount, threshold=None)


class RemovesNothing(Structured):
    def prune(self, model, scores, *, amount, threshold):
        return copy.deepcopy(model)


BrokenCoupling = type("BrokenCoupling", (HandStructured,), {"and_next": False})
InPlace = type("InPlace", (HandStructured,), {"in_place": True})


def aug(cls_name, base=GoodAug, **attrs):
    return type(cls_name, (base,), attrs)


def returns_a_pair(self, images, params):  # the contract before v2
    return images.clone(), None


def returns_float64(self, images, params):
    return images.double()


def forgets_to_clamp(self, images, params):
    return images + 0.2


def clamps_in_place(self, images, params):
    return images.clamp_(0.1, 0.9)


def one_delta_per_batch(self, shape, generator, device):
    return {"delta": torch.rand((), generator=generator, device=device) * 0.4 - 0.2}


def centres_on_the_batch_mean(self, images, params):
    return (images - images.mean() + 0.5).clamp(0, 1)


def stretches_the_batch_range(self, images, params):  # autocontrast over the batch, not a sample
    return (images - images.amin()) / (images.amax() - images.amin())


def returns_channels_last(self, images, params):
    return images.permute(0, 2, 3, 1).contiguous()  # as many values, another shape


def ignores_applied(self, images, params, *, targets=None, model=None, loss_fn=None):
    return self.apply(images, params), None


def reverses_targets(self, images, params, targets, model, loss_fn):  # overrides the dispatch
    return GoodAug.apply(self, images, params), targets.flip(0)


def adds_targets(self, images, targets, params):
    j = params["partner"]
    return 0.7 * images + 0.3 * images[j], targets + targets[j]


def freezes_the_model(self, images, targets, params, model, loss_fn):
    model.requires_grad_(False)  # "the attack needs no parameter gradients"
    return GoodAttack.attack(self, images, targets, params, model, loss_fn)


def noisy_scores(self, model, batches, loss_fn):
    scores = GoodScorer.score(self, model, batches, loss_fn)
    return Scores(weight={n: s + torch.rand_like(s) for n, s in scores.weight.items()})


def global_rng(self, shape, generator, device):
    return {"delta": torch.rand(shape[0], device=device) * 0.4 - 0.2}


def python_random_swap(self, text, generator):
    words = text.split()
    random.shuffle(words)
    return " ".join(words)


def returns_words(self, text, generator):
    return text.split()


def overwrites_the_list(self, texts, *, generator=None):
    out = TextAugmenter.__call__(self, texts, generator=generator)
    texts[:] = out
    return out


def text(cls_name, **attrs):
    return type(cls_name, (GoodText,), attrs)


BROKEN = [
    (NotAPlugin, "declaration.base", "does not derive"),
    (scorer("Spaced", name="my scorer"), "declaration.name", "'my scorer'"),
    (scorer("Undescribed", description=""), "declaration.description", "description is ''"),
    (
        scorer("Helpless", params=(Param("power", float, 1.0, low=0.5, high=3.0),)),
        "declaration.params",
        "'power' has help ''",
    ),
    (
        scorer("Infinite", params=(Param("power", float, 1.0, low=0.5, high=math.inf, help="x"),)),
        "declaration.json",
        "Out of range float values are not JSON compliant",
    ),
    (scorer("NoConfig", __init__=broken_defaults_init), "params.defaults", "config['power']"),
    (scorer("Forgiving", __init__=falls_back_to_defaults), "params.rejected", "was accepted"),
    (scorer("ReturnsDict", score=returns_dict), "runs", "returned dict, not pruneplug.Scores"),
    (scorer("TooMany", score=one_unit_too_many), "scores.shapes", "expected (4,)"),
    (scorer("KeepsGraph", score=keeps_the_graph), "scores.values", "requires grad"),
    (scorer("LeavesEval", score=leaves_eval_mode), "model_untouched", "training mode"),
    (scorer("LeavesTrain", score=leaves_train_mode), "model_untouched", "training mode"),
    (
        type("UpdatesStats", (GoodDataScorer,), {"score": updates_batch_norm}),
        "model_untouched",
        "'bn1.running_mean' changed value",
    ),
    (
        type("WritesBatches", (GoodDataScorer,), {"score": writes_into_batches}),
        "inputs_untouched",
        "batches",
    ),
    (scorer("Noisy", score=uses_python_random), "deterministic", "differ"),
    (SkipsTheChecks, "pruner.bad_call", "amount=1.0 was accepted"),
    (PrunesTheBest, "pruner.respects_scores", "removed weights score"),
    (ZeroesWeights, "unstructured.masks", "is_pruned(model) is False"),
    (HalfTheAmount, "unstructured.sparsity", "amount=0.5 removed"),
    (OverwritesMasks, "unstructured.compose", "brought back"),
    (NormalisesScoresInPlace, "inputs_untouched", "changed the scores in place"),
    (RemovesNothing, "structured.smaller", "pruning left"),
    (BrokenCoupling, "structured.consistent", "forward pass after pruning"),
    (InPlace, "inputs_untouched", "the model passed in was changed"),
    (aug("ReturnsAPair", apply=returns_a_pair), "runs", "returned a tuple"),
    (aug("Float64", apply=returns_float64), "image.shape", "torch.float64"),
    (aug("Unclamped", apply=forgets_to_clamp), "image.range", "the output spans"),
    (aug("ClampsInPlace", apply=clamps_in_place), "inputs_untouched", "images or targets"),
    (aug("BatchDelta", generate_parameters=one_delta_per_batch), "image.per_sample", "shape ()"),
    (
        aug("BatchMean", apply=centres_on_the_batch_mean),
        "image.per_sample",
        "differently alone than within the batch",
    ),
    (
        aug("BatchRange", apply=stretches_the_batch_range),
        "image.per_sample",
        "differently alone than within the batch",
    ),
    (aug("ChannelsLast", apply=returns_channels_last), "runs", "of the same N x C x H x W shape"),
    (aug("IgnoresP", transform=ignores_applied), "image.p", "p=0"),
    (aug("ReversesTargets", _apply=reverses_targets), "image.targets", "targets came back"),
    (aug("AddsTargets", GoodMix, mix=adds_targets), "mixing.targets", "sum to"),
    (aug("GlobalRng", generate_parameters=global_rng), "generator", "global random state"),
    (scorer("NoisyScores", score=noisy_scores), "generator", "global random state"),
    (PrunesACopy, "unstructured.in_place", "instead of the model it was given"),
    (aug("Freezes", GoodAttack, attack=freezes_the_model), "model_untouched", "requires_grad"),
    (text("PythonRandom", augment_one=python_random_swap), "generator", "global random state"),
    (text("Words", augment_one=returns_words), "text.output", "['the', 'film'"),
    (text("OverwritesList", __call__=overwrites_the_list), "inputs_untouched", "texts"),
]


@pytest.mark.parametrize(
    "plugin, rule, problem", BROKEN, ids=[f"{r}-{c.__name__}" for c, r, _ in BROKEN]
)
def test_each_broken_rule_is_named_with_its_fix(plugin, rule, problem):
    with pytest.raises(ConformanceError) as caught:
        check_plugin(plugin)
    error = caught.value
    assert isinstance(error, AssertionError)
    assert error.rule == rule, str(error)
    assert problem in error.problem, str(error)
    message = str(error)
    assert f"breaks rule {rule!r}" in message
    assert RULES[rule].what in message and f"how to fix: {RULES[rule].fix}" in message
    assert getattr(plugin, "__qualname__", "") in error.plugin


def test_every_rule_has_a_broken_plugin_that_breaks_it():
    assert {rule for _, rule, _ in BROKEN} == set(RULES)


def test_a_skipped_rule_is_not_checked():
    unclamped = aug("Unclamped", apply=forgets_to_clamp)
    check_plugin(unclamped, skip={"image.range"})
    with pytest.raises(ValueError, match="unknown rule.*'image.rang'|image.rang"):
        check_plugin(unclamped, skip={"image.rang"})


def test_an_object_is_checked_with_its_own_parameters():
    strict = scorer("Strict", params=(Param("power", float, 1.0, low=0.5, high=3.0, help="e"),))
    check_plugin(strict(power=3.0))
    with pytest.raises(ConformanceError, match="'power'"):
        check_plugin(scorer("NoConfig", __init__=broken_defaults_init)())


def test_a_problem_raised_by_the_plugin_is_reported_with_the_input():
    def crashes(self, model, batches, loss_fn):
        raise RuntimeError("boom")

    with pytest.raises(ConformanceError, match="scoring Sequential raised RuntimeError: boom"):
        check_scorer(scorer("Crashes", score=crashes))


def test_own_model_and_data():
    model = nn.Sequential(nn.Conv2d(3, 5, 3), nn.Flatten(), nn.Linear(5 * 4 * 4, 2))
    check_scorer(GoodDataScorer, model=model, example=torch.rand(3, 3, 6, 6))
    check_pruner(Unstructured, model=model, example=torch.rand(3, 3, 6, 6))
    check_augmenter(GoodAug, images=torch.rand(3, 1, 5, 7))
    check_augmenter(GoodText, texts=["one two three"])
    with pytest.raises(ValueError, match="give example="):
        check_scorer(GoodScorer, model=model)


def test_the_random_states_are_restored():
    torch.manual_seed(5)
    random.seed(5)
    expected = (torch.rand(3), random.random())
    torch.manual_seed(5)
    random.seed(5)
    check_plugin(GoodAug)
    check_plugin(GoodText)
    assert torch.equal(torch.rand(3), expected[0]) and random.random() == expected[1]


def test_all_plugins_and_parametrize_ids():
    entries = all_plugins()
    assert all(isinstance(e, Entry) for e in entries)
    assert {("scorer", "magnitude"), ("pruner", "unstructured")} <= {
        (e.kind, e.name) for e in entries
    }
    assert {e.kind for e in all_plugins("augmenter")} == {"augmenter"}
    mark = parametrize_plugins("scorer")
    assert mark.name == "parametrize" and mark.args[0] == "plugin"
    assert pruneplug.get_registry().entry("scorer", "magnitude").cls in mark.args[1]
    assert "scorer:magnitude" in mark.kwargs["ids"]
