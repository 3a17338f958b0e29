"""mixup and CutMix: pixels and labels mixed with the same per-sample weight, seeded."""

import pytest
import torch
from pruneplug_plugins.mixing import CutMix, Mixup, beta
from torch.nn.functional import one_hot

from pruneplug.registry import Registry

N = 8
#: sample i is the constant image VALUES[i], so every output pixel says which sample it came from
VALUES = torch.linspace(0.05, 0.95, N)


def constant_images(n=N, size=16):
    return VALUES[:n].view(-1, 1, 1, 1).expand(n, 3, size, size).clone()


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


def test_registered():
    names = Registry().names("augmenter")
    assert "mixup" in names and "cutmix" in names


def test_beta_draws_have_the_beta_mean_and_variance():
    alpha = 0.4
    lam = beta(alpha, 200_000, seeded(), torch.device("cpu"))
    assert lam.min() >= 0 and lam.max() <= 1
    assert lam.mean().item() == pytest.approx(0.5, abs=0.005)
    # Var Beta(a, a) = 1 / (4 (2a + 1)) = 0.1389 for a = 0.4
    assert lam.var().item() == pytest.approx(1 / (4 * (2 * alpha + 1)), abs=0.003)
    assert torch.equal(lam[:10], beta(alpha, 200_000, seeded(), torch.device("cpu"))[:10])


@pytest.mark.parametrize("aug", [Mixup(num_classes=N), CutMix(num_classes=N)])
def test_weights_sum_to_one_and_each_pixel_is_explained_by_the_label(aug):
    images, labels = constant_images(), torch.arange(N)
    out, soft = aug(images, labels, generator=seeded())
    assert out.shape == images.shape and soft.shape == (N, N)
    assert soft.dtype == images.dtype and (soft >= 0).all()
    torch.testing.assert_close(soft.sum(1), torch.ones(N))
    assert out.min() >= 0 and out.max() <= 1
    if isinstance(aug, Mixup):  # every pixel is the label-weighted blend of the two constants
        torch.testing.assert_close(out, (soft @ VALUES).view(-1, 1, 1, 1).expand_as(out))
    else:  # the fraction of pixels from each sample is that sample's label weight
        frac = torch.stack([(out == v).float().mean((1, 2, 3)) for v in VALUES], 1)
        torch.testing.assert_close(frac, soft)
    assert (soft.max(1).values < 1).sum() >= N // 2  # most samples really were mixed


def test_cutmix_pastes_one_rectangle_of_the_partner():
    out, soft = CutMix(num_classes=N)(constant_images(), torch.arange(N), generator=seeded(3))
    for i in range(N):
        pasted = (out[i, 0] != VALUES[i]).nonzero()
        if len(pasted) == 0:
            assert soft[i, i] == 1
            continue
        (rows, cols) = pasted.max(0).values - pasted.min(0).values + 1
        assert rows * cols == len(pasted)  # a full box
        assert soft[i, i].item() == pytest.approx(1 - len(pasted) / 256)


def test_cutmix_box_has_sides_sqrt_one_minus_lambda_and_label_by_exact_area():
    aug = CutMix(alpha=1.0)
    params = aug.generate_parameters(torch.Size([4096, 1, 32, 32]), seeded(), "cpu")
    drawn = beta(1.0, 4096, seeded(), torch.device("cpu"))  # the first draw from the generator
    y0, y1, x0, x1 = params["box"].unbind(1)
    area = (y1 - y0) * (x1 - x0)
    torch.testing.assert_close(params["lam"], 1 - area.float() / 1024)
    side = ((1 - drawn).sqrt() * 32).round()
    inside = (y0 > 0) & (x0 > 0) & (y1 < 32) & (x1 < 32)  # boxes the border did not clip
    assert inside.sum() > 500
    assert torch.equal(area[inside].float(), side[inside] ** 2)
    assert (area <= side**2).all()


def test_soft_labels_in_are_mixed_with_the_drawn_weights():
    labels = 0.9 * one_hot(torch.arange(N), N).double() + 0.1 / N
    images = torch.rand(N, 1, 8, 8, dtype=torch.float64)
    aug = Mixup(alpha=1.0)
    out, soft = aug(images, labels, generator=seeded(5))
    params = aug.generate_parameters(images.shape, seeded(5), "cpu")
    lam = params["lam"].double().view(-1, 1)
    torch.testing.assert_close(soft, lam * labels + (1 - lam) * labels[params["perm"]])
    assert out.dtype == soft.dtype == torch.float64


@pytest.mark.parametrize("cls", [Mixup, CutMix])
def test_seeded_repeatable_and_drawn_per_sample(cls):
    aug, images, labels = cls(num_classes=N), torch.rand(N, 3, 16, 16), torch.arange(N)
    first, second = (
        aug(images, labels, generator=seeded(1)),
        aug(images, labels, generator=seeded(1)),
    )
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    other = aug(images, labels, generator=seeded(2))
    assert not torch.equal(first[1], other[1])
    own_weight = first[1].diagonal()
    assert len(own_weight.unique()) > N // 2  # each sample has its own lambda


@pytest.mark.parametrize("cls", [Mixup, CutMix])
def test_probability_per_sample(cls):
    images, labels = constant_images(), torch.arange(N)
    out, soft = cls(num_classes=N, p=0.0)(images, labels, generator=seeded())
    assert torch.equal(out, images) and torch.equal(soft, one_hot(labels, N).float())
    out, soft = cls(num_classes=N, p=0.5)(images, labels, generator=seeded(4))
    untouched = soft.max(1).values == 1
    assert 0 < untouched.sum() < N
    assert torch.equal(out[untouched], images[untouched])
    assert (soft.argmax(1)[untouched] == labels[untouched]).all()


def test_single_image_and_inputs_not_modified():
    image, label = torch.rand(3, 8, 8), torch.tensor([2])
    before = image.clone(), label.clone()
    out, soft = Mixup(num_classes=3)(image, label, generator=seeded())
    assert out.shape == (3, 8, 8) and torch.equal(out, image)  # a sample paired with itself
    assert soft.tolist() == [[0.0, 0.0, 1.0]]
    assert torch.equal(image, before[0]) and torch.equal(label, before[1])


@pytest.mark.parametrize(
    ("targets", "kwargs", "match"),
    [
        (None, {"num_classes": 4}, r"mixes targets: call it as aug\(images, targets\)"),
        (torch.arange(4), {}, "pass num_classes="),
        (torch.tensor([0, 1, 2, 7]), {"num_classes": 4}, r"in \[0, 3\].*got values in \[0, 7\]"),
        (torch.arange(4).int(), {"num_classes": 4}, r"int64.*targets.long\(\)"),
        (torch.rand(4, 3), {}, "non-negative rows summing to 1"),
        (torch.full((4, 2), 0.5), {"num_classes": 3}, "2 classes but num_classes=3"),
        (torch.rand(4), {}, "shape N x classes"),
        (torch.arange(3), {"num_classes": 4}, "4 images but 3 targets"),
    ],
)
def test_bad_targets_are_named(targets, kwargs, match):
    with pytest.raises(ValueError, match=match):
        CutMix(**kwargs)(torch.rand(4, 1, 8, 8), targets, generator=seeded())


def test_bad_alpha_is_refused():
    with pytest.raises(ValueError, match=r"alpha=0 is out of range"):
        Mixup(alpha=0)
