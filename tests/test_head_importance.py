"""Head importance: E|dL/d xi_h| by hand (autograd on an explicit head mask); units; contract."""

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision
from pruneplug_plugins.head_importance import HeadImportance, head_scores
from torch import nn

import pruneplug
from pruneplug.testing import check_plugin


class Attend(nn.Module):
    """One self-attention layer (2 heads of 4), mean over tokens, a Linear classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.attn(x, x, x, need_weights=False)[0].mean(1))


def by_hand(model: Attend, x: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
    """The model's output for one sample ``x`` (L x 8) with head outputs scaled by ``xi``."""
    attn = model.attn
    q, k, v = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    heads = []
    for h in range(2):
        part = slice(4 * h, 4 * h + 4)
        weights = torch.softmax(q[:, part] @ k[:, part].T / math.sqrt(4), dim=-1)
        heads.append(xi[h] * (weights @ v[:, part]))
    out = F.linear(torch.cat(heads, -1), attn.out_proj.weight, attn.out_proj.bias)
    return model.fc(out.mean(0))


def data(n: int = 2, size: int = 3, shape=(5, 8), classes: int = 3):
    generator = torch.Generator().manual_seed(1)
    return [
        (torch.randn(size, *shape, generator=generator), torch.randint(0, classes, (size,)))
        for _ in range(n)
    ]


def test_head_scores_equal_autograd_on_an_explicit_head_mask_per_sample():
    torch.manual_seed(0)
    model = Attend().eval()
    batches = data()
    expected = torch.zeros(2)
    for inputs, targets in batches:
        for x, y in zip(inputs, targets, strict=True):
            xi = torch.ones(2, requires_grad=True)
            loss = F.cross_entropy(by_hand(model, x, xi)[None], y[None])
            expected += torch.autograd.grad(loss, xi)[0].abs()
    expected /= 6  # the mean over the samples
    with torch.no_grad():  # the hand computation is the model
        assert torch.allclose(
            by_hand(model, batches[0][0][0], torch.ones(2)), model(batches[0][0][:1])[0], atol=1e-6
        )
    assert torch.allclose(head_scores(model, batches)["attn"], expected, atol=1e-6)


def test_unit_scores_equal_autograd_on_an_explicit_unit_mask_per_sample():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3))
    batches = data(shape=(4,))
    expected = torch.zeros(5)
    for inputs, targets in batches:
        for x, y in zip(inputs, targets, strict=True):
            xi = torch.ones(5, requires_grad=True)
            loss = F.cross_entropy(model[2](model[1](model[0](x) * xi))[None], y[None])
            expected += torch.autograd.grad(loss, xi)[0].abs()
    scores = pruneplug.get_scorer("head_importance")(model, batches)
    assert torch.allclose(scores.unit["0"], expected / 6, atol=1e-6)
    assert set(scores.unit) == {"0", "2"} and not scores.weight


def test_frozen_and_fast_path_attention_is_still_scored_and_left_untouched():
    torch.manual_seed(0)
    model = nn.Sequential(nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True))
    model.append(nn.Flatten()).append(nn.Linear(40, 3))
    for p in model.parameters():
        p.requires_grad_(False)  # PyTorch would take its fused path, which has no head output
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    scores = head_scores(model, data())
    assert scores["0.self_attn"].shape == (2,) and (scores["0.self_attn"] > 0).all()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.training and not any(
        p.requires_grad or p.grad is not None for p in model.parameters()
    )
    assert all(not m._forward_hooks for m in model.modules())


def test_a_model_without_attention_has_no_head_scores_and_errors_leave_no_hooks():
    model = nn.Sequential(nn.Flatten(), nn.Linear(8, 3))
    assert head_scores(model, data(shape=(8,))) == {}
    with pytest.raises(ValueError, match="does not fit the model"):
        head_scores(model, [(torch.randn(2, 5), torch.zeros(2).long())])
    assert all(not m._forward_hooks for m in model.modules())


def test_vit_heads_and_units_feed_the_structured_pruner():
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=128,
        num_classes=10,
    ).eval()  # fmt: skip
    nn.init.normal_(model.heads.head.weight, std=0.1)  # torchvision starts it at zero
    batches = data(n=1, size=4, shape=(3, 32, 32), classes=10)
    per_head = head_scores(model, batches)
    assert [s.shape for s in per_head.values()] == [(4,), (4,)]
    scores = pruneplug.get_scorer("head_importance")(model, batches)
    pruned = pruneplug.get_pruner("structured")(model, scores, amount=0.3).eval()
    assert [m.num_heads for m in pruned.modules() if isinstance(m, nn.MultiheadAttention)] == [3, 3]
    with torch.no_grad():
        assert pruned(batches[0][0]).shape == (4, 10)


def test_head_importance_follows_the_contract():
    check_plugin(HeadImportance)
