"""Sequence models and the tiny ViT: shapes, hand counts, padding invariance, specs, errors."""

import json
import math

import pytest
import torch
from torch import nn

from pruneplug import data, engine, models


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def ragged_batch() -> torch.Tensor:
    """Three right-padded rows of 5, 2 and 1 real tokens (ids 2..19; 0 is padding)."""
    ids = torch.zeros(3, 5, dtype=torch.int64)
    ids[0] = torch.tensor([4, 9, 2, 7, 3])
    ids[1, :2] = torch.tensor([12, 5])
    ids[2, :1] = torch.tensor([19])
    return ids


def sequence_models() -> list[nn.Module]:
    return [
        models.lstm_classifier(20, embed_dim=8, hidden=16, num_classes=3),
        models.lstm_classifier(20, embed_dim=8, hidden=16, num_classes=3, bidirectional=True),
        models.transformer_classifier(20, d_model=16, heads=2, max_len=12, num_classes=3),
        models.transformer_classifier(20, d_model=16, heads=2, max_len=12, positions="learned"),
    ]


def test_lstm_sizes_against_hand_counts():
    model = models.lstm_classifier(100)
    assert [n for n, _ in model.named_children()] == ["embedding", "lstm", "classifier"]
    lstm = 4 * (32 * 64 + 64 * 64 + 2 * 64)  # four gates: input, recurrent weights, two biases
    assert n_params(model) == 100 * 32 + lstm + (64 * 2 + 2)  # 28,362
    assert model(ragged_batch()).shape == (3, 2)


def test_transformer_sizes_and_modules():
    model = models.transformer_classifier(
        100, d_model=32, heads=4, layers=2, mlp=64, max_len=26, positions="learned"
    )
    assert [n for n, _ in model.named_children()] == ["embedding", "encoder", "classifier"]
    assert isinstance(model.encoder.layers[1].self_attn, nn.MultiheadAttention)
    layer = 4 * (32 * 32 + 32) + (32 * 64 + 64) + (64 * 32 + 32) + 2 * 2 * 32  # attn, mlp, norms
    expected = 100 * 32 + 26 * 32 + 2 * layer + 2 * 32 + (32 * 2 + 2)
    assert n_params(model) == expected
    assert model(ragged_batch()).shape == (3, 2)


@pytest.mark.parametrize("index", range(4))
def test_more_padding_gives_the_same_logits(index):
    model = sequence_models()[index].eval()
    ids = ragged_batch()
    padded = torch.cat([ids, torch.zeros(3, 4, dtype=torch.int64)], 1)
    with torch.no_grad():
        logits = model(ids)
        assert torch.allclose(model(padded), logits, atol=1e-6)
        alone = torch.cat([model(ids[i : i + 1, : [5, 2, 1][i]]) for i in range(3)])
    assert torch.allclose(alone, logits, atol=1e-6)  # a row does not depend on its batch


@pytest.mark.parametrize("index", range(4))
def test_order_matters_and_a_padding_only_row_has_an_output(index):
    model = sequence_models()[index].eval()
    ids = ragged_batch()
    with torch.no_grad():
        reversed_first = ids.clone()
        reversed_first[0] = ids[0].flip(0)
        assert not torch.allclose(model(reversed_first)[0], model(ids)[0])
        assert torch.isfinite(model(torch.zeros(2, 4, dtype=torch.int64))).all()


def test_sinusoidal_positions_follow_the_formula():
    table = models.sinusoidal_positions(10, 6)
    p, i = 7, 1
    assert table.shape == (10, 6)
    assert table[p, 2 * i].item() == pytest.approx(math.sin(p / 10000 ** (2 * i / 6)), abs=1e-6)
    assert table[p, 2 * i + 1].item() == pytest.approx(math.cos(p / 10000 ** (2 * i / 6)), abs=1e-6)
    model = models.transformer_classifier(20, d_model=6, heads=2, positions="sinusoidal")
    assert "positions" not in dict(model.named_parameters())  # a fixed buffer, not trained


def test_tiny_vit_on_digits():
    digits = data.load_digits()
    model = models.tiny_vit().eval()
    images = digits.train.tensors[0][:5]
    assert model(images).shape == (5, 10)
    assert model.conv_proj.in_channels == 1 and model.seq_length == 16 + 1  # patches + class
    assert models.tiny_vit(in_channels=3, image_size=32, patch_size=4)(
        torch.rand(2, 3, 32, 32)
    ).shape == (2, 10)
    with pytest.raises(ValueError, match="image_size=8 must be a multiple of patch_size=3"):
        models.tiny_vit(patch_size=3)


@pytest.mark.parametrize(
    "make",
    [
        lambda: models.lstm_classifier(30, hidden=8, seed=3),
        lambda: models.transformer_classifier(30, d_model=8, heads=2, positions="sinusoidal"),
        lambda: models.build("tiny_vit", hidden=16, heads=2, seed=5),
    ],
)
def test_spec_rebuilds_the_same_model_and_the_global_rng_is_untouched(make):
    state = torch.get_rng_state()
    model = make()
    assert torch.equal(torch.get_rng_state(), state)
    spec = json.loads(json.dumps(model.pruneplug_spec))
    assert same_weights(models.build(spec["builder"], **spec["kwargs"]), model)


def test_arguments_are_checked():
    with pytest.raises(ValueError, match=r"lstm_classifier: hidden must be positive int\(s\)"):
        models.lstm_classifier(10, hidden=0)
    with pytest.raises(ValueError, match="padding_idx must be an id in 0..9, got 10"):
        models.lstm_classifier(10, padding_idx=10)
    with pytest.raises(ValueError, match="d_model=30 must be a multiple of heads=4"):
        models.transformer_classifier(10, d_model=30)
    with pytest.raises(ValueError, match="unknown positions 'rotary'; choose one of learned"):
        models.transformer_classifier(10, positions="rotary")
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\), got 1.5"):
        models.transformer_classifier(10, dropout=1.5)
    model = models.transformer_classifier(10, max_len=4)
    with pytest.raises(ValueError, match="has 5 tokens but .* max_len=4: build it with a larger"):
        model(torch.ones(1, 5, dtype=torch.int64))
    with pytest.raises(
        ValueError, match=r"token ids of shape N x L \(int64\), got shape \(2, 3, 4\)"
    ):
        models.lstm_classifier(10)(torch.rand(2, 3, 4))
    with pytest.raises(ValueError, match="or for token sequences lstm_classifier"):
        models.build("gpt")


def test_tiny_vit_learns_the_digits():
    digits = data.load_digits()
    model = models.tiny_vit()
    engine.train(model, digits.train, epochs=8, lr=3e-3, optimizer="adam", progress=False)
    assert engine.evaluate(model, digits.test)["accuracy"] > 0.8
