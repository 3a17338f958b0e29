"""FGSM and PGD: raise the loss inside the eps-ball and [0, 1]; the model is left as it was."""

import pytest
import torch
from pruneplug_plugins.adversarial import FGSM, PGD
from torch import nn
from torch.nn.functional import cross_entropy

from pruneplug.registry import Registry

EPS = 0.05


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def trained():
    """A linear classifier trained on 4 separable classes of 1 x 4 x 4 images in [0, 1]."""
    g = seeded(0)
    means = torch.rand(4, 1, 4, 4, generator=g) * 0.6 + 0.2
    labels = torch.arange(128) % 4
    images = (means[labels] + 0.05 * torch.randn(128, 1, 4, 4, generator=g)).clamp(0, 1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 4))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(200):
        opt.zero_grad()
        cross_entropy(model(images), labels).backward()
        opt.step()
    model.zero_grad(set_to_none=True)
    assert (model(images).argmax(1) == labels).float().mean() > 0.95
    return model.eval(), images, labels


def loss(model, images, labels):
    with torch.no_grad():
        return cross_entropy(model(images), labels).item()


def test_registered():
    names = Registry().names("augmenter")
    assert "fgsm" in names and "pgd" in names


def test_fgsm_is_one_signed_gradient_step(trained):
    model, images, labels = trained
    x = images.clone().requires_grad_(True)
    cross_entropy(model(x), labels).backward()
    expected = (images + EPS * x.grad.sign()).clamp(0, 1)
    out, same_labels = FGSM(eps=EPS)(images, labels, model=model)
    torch.testing.assert_close(out, expected)
    assert same_labels is labels and not out.requires_grad


@pytest.mark.parametrize("aug", [FGSM(eps=EPS), PGD(eps=EPS, alpha=EPS / 4, steps=10)])
def test_attack_raises_the_loss_within_the_ball(trained, aug):
    model, images, labels = trained
    out, _ = aug(images, labels, model=model, generator=seeded())
    assert (out - images).abs().max() <= EPS + 1e-6
    assert out.min() >= 0 and out.max() <= 1 and out.shape == images.shape
    assert loss(model, out, labels) > loss(model, images, labels) + 0.05


def test_pgd_is_at_least_as_strong_as_fgsm(trained):
    model, images, labels = trained
    fgsm, _ = FGSM(eps=EPS)(images, labels, model=model)
    pgd, _ = PGD(eps=EPS, alpha=EPS / 4, steps=20)(images, labels, model=model, generator=seeded())
    assert loss(model, pgd, labels) >= loss(model, fgsm, labels) - 1e-6


def test_pgd_random_start_is_seeded(trained):
    model, images, labels = trained
    aug = PGD(eps=EPS, alpha=EPS / 8, steps=1)
    first, _ = aug(images, labels, model=model, generator=seeded(1))
    again, _ = aug(images, labels, model=model, generator=seeded(1))
    other, _ = aug(images, labels, model=model, generator=seeded(2))
    assert torch.equal(first, again) and not torch.equal(first, other)
    plain, _ = PGD(eps=EPS, alpha=EPS, steps=1, random_start=False)(images, labels, model=model)
    fgsm, _ = FGSM(eps=EPS)(images, labels, model=model)
    torch.testing.assert_close(plain, fgsm)  # one full step from x is FGSM


def test_model_parameters_grads_and_modes_are_untouched():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Flatten(),
        nn.Linear(4 * 6 * 6, 3),
    )
    model.train()
    model[3].eval()  # a submodule deliberately in another mode keeps it
    model[5].weight.grad = torch.ones_like(model[5].weight)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images, labels = torch.rand(6, 3, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    saved = images.clone()
    for aug in (FGSM(eps=EPS), PGD(eps=EPS, steps=3)):
        first, _ = aug(images, labels, model=model, generator=seeded())
        second, _ = aug(images, labels, model=model, generator=seeded())
        assert torch.equal(first, second)  # eval mode: no dropout draws, no batch statistics
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # incl. BN running stats
    assert torch.equal(model[5].weight.grad, torch.ones_like(model[5].weight))
    assert all(p.grad is None for n, p in model.named_parameters() if n != "5.weight")
    assert [m.training for m in model] == [True, True, True, False, True, True]
    assert torch.equal(images, saved)


def test_works_under_no_grad_and_with_a_custom_loss(trained):
    model, images, labels = trained
    soft = torch.nn.functional.one_hot(labels, 4).float()
    with torch.no_grad():
        out, _ = FGSM(eps=EPS)(images, soft, model=model, loss_fn=cross_entropy)
    assert loss(model, out, labels) > loss(model, images, labels)


@pytest.mark.parametrize("cls", [FGSM, PGD])
def test_works_under_inference_mode_and_refuses_a_loss_per_sample(trained, cls):
    model, images, labels = trained
    expected, _ = cls(eps=EPS)(images, labels, model=model, generator=seeded())
    with torch.inference_mode():
        out, _ = cls(eps=EPS)(images, labels, model=model, generator=seeded())
    assert torch.equal(out, expected)
    per_sample = nn.CrossEntropyLoss(reduction="none")
    with pytest.raises(ValueError, match=r"loss_fn returned \(128,\), not a scalar"):
        cls(eps=EPS)(images, labels, model=model, loss_fn=per_sample)


@pytest.mark.parametrize("cls", [FGSM, PGD])
def test_probability_per_sample(trained, cls):
    model, images, labels = trained
    out, _ = cls(eps=EPS, p=0.0)(images, labels, model=model, generator=seeded())
    assert torch.equal(out, images)
    out, _ = cls(eps=EPS, p=0.5)(images, labels, model=model, generator=seeded())
    changed = (out != images).flatten(1).any(1)
    assert 0.3 < changed.float().mean() < 0.7


def test_missing_model_or_targets_are_named(trained):
    model, images, labels = trained
    with pytest.raises(ValueError, match=r"needs the model: call it as aug\(images, targets"):
        FGSM()(images, labels)
    with pytest.raises(ValueError, match="true labels: call it as aug\\(images, targets, model"):
        PGD()(images, model=model)
    with pytest.raises(ValueError, match="image values must be in"):
        FGSM()(images * 2, labels, model=model)
