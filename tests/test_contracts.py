"""The base classes check their inputs before any plugin code runs."""

import pytest
import torch
from torch import nn

import pruneplug
from pruneplug import ImageAugmenter, Scores, TextAugmenter
from pruneplug.contracts import check_amount
from pruneplug.params import probability


def test_prunable_layers_refuses_a_model_without_any():
    with pytest.raises(ValueError, match="ReLU has no prunable layers"):
        pruneplug.prunable_layers(nn.ReLU())


def test_scores_check_names_shapes_and_nan():
    model = nn.Sequential(nn.Linear(3, 2))
    with pytest.raises(ValueError, match="not a prunable layer.*prunable layers are: 0"):
        Scores(weight={"1": torch.ones(2, 3)}).check(model)
    with pytest.raises(ValueError, match=r"shape \(3, 2\), expected \(2, 3\)"):
        Scores(weight={"0": torch.ones(3, 2)}).check(model)
    with pytest.raises(ValueError, match="NaN or inf"):
        Scores(unit={"0": torch.tensor([1.0, float("nan")])}).check(model)
    with pytest.raises(ValueError, match="empty"):
        Scores().check(model)


def test_units_are_summed_from_weights_unless_given():
    scores = Scores(weight={"a": torch.tensor([[1.0, 2.0], [3.0, 4.0]])}, unit={"b": torch.ones(2)})
    units = scores.units()
    assert units["a"].tolist() == [3.0, 7.0] and units["b"].tolist() == [1.0, 1.0]


@pytest.mark.parametrize(
    ("amount", "threshold", "match"),
    [
        (1.0, None, r"amount=1.0 is out of range.*\[0, 1\)"),
        (-0.1, None, "out of range"),
        (None, None, "exactly one of amount"),
        (0.5, 0.1, "exactly one of amount"),
        (None, float("nan"), "finite number"),
        ("0.5", None, "must be a number"),
    ],
)
def test_amount_and_threshold_are_checked(amount, threshold, match):
    with pytest.raises((ValueError, TypeError), match=match):
        check_amount(amount, threshold)


def test_failed_prune_leaves_the_model_untouched():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruner = pruneplug.get_pruner("unstructured")
    scores = pruneplug.get_scorer("magnitude")(model)
    with pytest.raises(ValueError):
        pruner(model, scores, amount=1.0)
    scores.weight["0"][0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        pruner(model, scores, amount=0.5)
    after = model.state_dict()
    assert after.keys() == before.keys() and all(after[k].equal(before[k]) for k in before)


class Invert(ImageAugmenter):
    name = "invert"
    description = "1 - x"
    params = (probability(0.5),)

    def apply(self, images, params):
        return 1 - images


def test_image_input_checks():
    aug = Invert()
    with pytest.raises(TypeError, match="float in \\[0, 1\\].*uint8"):
        aug(torch.zeros(1, 1, 2, 2, dtype=torch.uint8))
    with pytest.raises(ValueError, match="must be in \\[0, 1\\], got \\[0, 2\\]"):
        aug(torch.tensor([[[[0.0, 2.0]]]]))
    with pytest.raises(ValueError, match="N x C x H x W"):
        aug(torch.zeros(2, 2))
    with pytest.raises(ValueError, match="empty"):
        aug(torch.zeros(0, 1, 2, 2))
    with pytest.raises(ValueError, match="one target per image"):
        aug(torch.zeros(2, 1, 2, 2), torch.zeros(3, dtype=torch.long))


def test_probability_is_drawn_per_sample_and_seeded():
    x = torch.zeros(64, 1, 2, 2)
    out = Invert(p=0.5)(x, generator=torch.Generator().manual_seed(1))
    again = Invert(p=0.5)(x, generator=torch.Generator().manual_seed(1))
    flipped = out.flatten(1).eq(1).all(1)
    assert out.equal(again) and 10 < flipped.sum() < 54
    assert Invert(p=0.0)(x).equal(x) and Invert(p=1.0)(x).eq(1).all()
    single = Invert(p=1.0)(torch.zeros(1, 2, 2))
    assert single.shape == (1, 2, 2) and single.eq(1).all()


class Upper(TextAugmenter):
    name = "upper"
    description = "upper-case"

    def augment_one(self, text, generator):
        return text.upper()


def test_text_input_checks():
    assert Upper()(["a b"]) == ["A B"]
    with pytest.raises(TypeError, match="list of strings"):
        Upper()("a b")
    with pytest.raises(ValueError, match="empty"):
        Upper()([])
    with pytest.raises(ValueError, match=r"texts\[1\] is empty"):
        Upper()(["a", "  "])
