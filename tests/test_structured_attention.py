"""Structured pruner on attention and grouped convolutions: whole heads, even groups, TP beside."""

import copy

import pytest
import torch
import torch_pruning as tp
import torchvision
from torch import nn

import pruneplug
from pruneplug import Scores
from pruneplug.testing.model_state import _inconsistent


def structured(**params):
    return pruneplug.get_pruner("structured", **params)


def small_vit() -> nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(
        image_size=32,
        patch_size=8,
        num_layers=2,
        num_heads=4,
        hidden_dim=64,
        mlp_dim=128,
        num_classes=10,
    )
    nn.init.normal_(model.heads.head.weight, std=0.1)  # torchvision starts it at zero
    return model.eval()


def attention(model: nn.Module) -> list[nn.MultiheadAttention]:
    return [m for m in model.modules() if isinstance(m, nn.MultiheadAttention)]


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def head_ranked(model: nn.Module) -> Scores:
    """Unit scores rising with the channel index: head 0 (channels 0-15) scores lowest."""
    return Scores(
        unit={
            name: torch.arange(layer.weight.shape[0], dtype=torch.float)
            for name, layer in pruneplug.prunable_layers(model).items()
        }
    )


def test_vit_loses_whole_heads_in_every_layer_and_its_forward_works():
    model = small_vit()
    x = torch.randn(2, 3, 32, 32)
    pruned = structured()(model, head_ranked(model), amount=0.3).eval()
    for before, after in zip(attention(model), attention(pruned), strict=True):
        assert (after.num_heads, after.head_dim, after.embed_dim) == (3, 16, 48)
        # head 0 went: its q, k and v rows, and the residual channels 0-15 it reads and writes
        rows = torch.cat([torch.arange(16, 64) + 64 * i for i in range(3)])
        assert after.in_proj_weight.equal(before.in_proj_weight[rows][:, 16:])
        assert after.out_proj.weight.equal(before.out_proj.weight[16:, 16:])
    assert pruned.hidden_dim == pruned.conv_proj.out_channels == 48
    assert pruned.encoder.layers[0].mlp[0].out_features == 90  # 128 - round(0.3 * 128)
    assert _inconsistent(pruned) is None
    with torch.no_grad():
        assert pruned(x).shape == (2, 10)
    assert attention(model)[0].num_heads == 4 and model.hidden_dim == 64  # the input is intact


def test_vit_at_amount_zero_computes_the_same_outputs():
    model = small_vit()
    x = torch.randn(2, 3, 32, 32)
    same = structured()(model, pruneplug.get_scorer("magnitude")(model), amount=0.0).eval()
    with torch.no_grad():
        assert torch.equal(same(x), model(x))


def test_vit_shrinks_more_than_torch_pruning_whose_forward_works():
    """Torch-Pruning keeps nn.MultiheadAttention whole (num_heads given, head dims kept; its
    default breaks the forward: an embed_dim that num_heads does not divide)."""
    model = small_vit()
    x = torch.randn(1, 3, 32, 32)
    ours = structured()(model, pruneplug.get_scorer("magnitude", p=1)(model), amount=0.3)
    theirs = copy.deepcopy(model)
    tp.pruner.MetaPruner(
        theirs,
        x,
        importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=0.3,
        ignored_layers=[theirs.heads.head],
        num_heads={m: m.num_heads for m in attention(theirs)},
        prune_head_dims=False,
    ).step()
    with torch.no_grad():
        assert ours.eval()(x).shape == theirs.eval()(x).shape == (1, 10)
    assert count(ours) < count(theirs) < count(model)


@pytest.mark.parametrize("batch_first", [True, False])
def test_transformer_encoder_layer_loses_heads_and_hidden_units(batch_first):
    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Linear(6, 32)
            self.layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=batch_first)
            self.out = nn.Linear(32, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.embed(x)
            h = self.layer(h if batch_first else h.transpose(0, 1))
            return self.out(h.mean(1 if batch_first else 0))

    torch.manual_seed(0)
    model = Encoder().eval()
    x = torch.randn(2, 5, 6)
    scores = pruneplug.get_scorer("magnitude")(model)
    pruned = structured(example_shape="5x6")(model, scores, amount=0.5).eval()
    attn = pruned.layer.self_attn
    assert (attn.num_heads, attn.head_dim, attn.embed_dim) == (2, 8, 16)
    assert pruned.embed.out_features == pruned.layer.norm1.normalized_shape[0] == 16
    assert pruned.layer.linear1.out_features == 32
    with torch.no_grad():
        assert pruned(x).shape == (2, 3)
        same = structured(example_shape="5x6")(model, scores, amount=0.0).eval()
        assert torch.equal(same(x), model(x))
    kept = structured(example_shape="5x6", protect="layer.self_attn")(model, scores, amount=0.5)
    assert kept.layer.self_attn.num_heads == 4 and kept.layer.linear1.out_features == 32


def test_heads_go_by_threshold_and_by_fraction_under_global_scope():
    model = small_vit()
    scores = head_ranked(model)  # head h scores 16 h + 7.5 on average in every layer
    pruned = structured()(model, scores, threshold=30.0)  # heads 0 and 1 go
    assert [m.num_heads for m in attention(pruned)] == [2, 2]
    pruned = structured(scope="global")(model, scores, amount=0.3)  # heads: always 1 of 4
    assert [m.num_heads for m in attention(pruned)] == [3, 3]


def test_grouped_convolutions_shrink_evenly_per_group():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 8, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, groups=2), nn.Flatten(), nn.Linear(288, 3)
    )
    # first conv: position p of each group of 4 scores p (+ 10 in the second group)
    scores = Scores(
        unit={
            "0": torch.tensor([0.0, 1, 2, 3, 10, 11, 12, 13]),
            "2": torch.tensor([3.0, 2, 1, 0, 3, 2, 1, 0]),
        }
    )
    pruned = structured(example_shape="2x8x8")(model, scores, amount=0.5)
    keep_in, keep_out = torch.tensor([2, 3, 6, 7]), torch.tensor([0, 1, 4, 5])
    assert pruned[0].weight.equal(model[0].weight[keep_in])
    assert pruned[2].groups == 2 and pruned[2].weight.shape == (4, 2, 3, 3)
    assert pruned[2].weight.equal(model[2].weight[keep_out][:, 2:])
    with torch.no_grad():
        assert pruned(torch.randn(1, 2, 8, 8)).shape == (1, 3)
    assert _inconsistent(pruned) is None


def test_a_grouped_regnet_stage_prunes_like_torch_pruning():
    torch.manual_seed(0)
    model = torchvision.models.regnet_x_400mf(num_classes=10).eval()
    model.trunk_output = model.trunk_output[:1]  # one stage keeps the test fast
    model.fc = nn.Linear(32, 10)
    x = torch.randn(1, 3, 32, 32)
    ours = structured()(model, pruneplug.get_scorer("magnitude", p=1)(model), amount=0.3)
    theirs = copy.deepcopy(model)
    tp.pruner.MetaPruner(
        theirs,
        x,
        importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=0.3,
        ignored_layers=[theirs.fc],
    ).step()
    with torch.no_grad():
        assert ours.eval()(x).shape == (1, 10)
    assert abs(count(ours) - count(theirs)) <= 0.01 * count(model)
    assert count(ours) < 0.75 * count(model)


class Recurrent(nn.Module):
    """Linear -> recurrent layer -> two readers: the last output and the final hidden state."""

    def __init__(self, cls: type[nn.RNNBase], batch_first: bool, **kwargs) -> None:
        super().__init__()
        self.batch_first = batch_first
        self.a = nn.Linear(4, 6)
        self.rnn = cls(6, 8, batch_first=batch_first, **kwargs)
        self.b, self.c = nn.Linear(8, 3), nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, hidden = self.rnn(self.a(x))
        h = hidden[0] if isinstance(hidden, tuple) else hidden
        return self.b(out[:, -1] if self.batch_first else out[-1]) + self.c(h[-1])


@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU, nn.RNN])
@pytest.mark.parametrize("batch_first", [True, False])
def test_recurrent_hidden_units_go_from_every_gate_and_every_reader(cls, batch_first):
    torch.manual_seed(0)
    model = Recurrent(cls, batch_first).eval()
    x = torch.randn(2, 5, 4) if batch_first else torch.randn(5, 2, 4)
    # hidden unit j is read by column j of b and c: columns 0-3 score lowest
    scores = Scores(
        weight={"b": torch.arange(8.0).expand(3, 8), "c": torch.arange(8.0).expand(3, 8)},
        unit={"a": torch.arange(6.0)},
    )
    pruned = structured(example_shape="5x4")(model, scores, amount=0.5).eval()
    gates = {nn.LSTM: 4, nn.GRU: 3, nn.RNN: 1}[cls]
    keep = torch.arange(4, 8)
    rows = torch.cat([keep + 8 * g for g in range(gates)])
    assert (pruned.rnn.hidden_size, pruned.rnn.input_size) == (4, 3)
    assert pruned.rnn.weight_ih_l0.equal(model.rnn.weight_ih_l0[rows][:, 3:])
    assert pruned.rnn.weight_hh_l0.equal(model.rnn.weight_hh_l0[rows][:, keep])
    assert pruned.rnn.bias_hh_l0.equal(model.rnn.bias_hh_l0[rows])
    assert pruned.b.weight.equal(model.b.weight[:, keep])
    assert pruned.c.weight.equal(model.c.weight[:, keep])
    with torch.no_grad():
        assert pruned(x).shape == (2, 3)
        same = structured(example_shape="5x4")(model, scores, amount=0.0).eval()
        assert torch.equal(same(x), model(x))


def test_multi_layer_and_bidirectional_recurrence_is_refused_naming_the_fix():
    for kwargs, why in (({"num_layers": 2}, "has 2 layers"), ({"bidirectional": True}, "is bidi")):
        model = Recurrent(nn.LSTM, True, **kwargs)
        if kwargs.get("bidirectional"):
            model.b = nn.Linear(16, 3)
        model.c = nn.Linear(8, 3)
        scores = pruneplug.get_scorer("magnitude")(model)
        with pytest.raises(ValueError, match=f"LSTM 'rnn' {why}.*protect='rnn'"):
            structured(example_shape="5x4")(model, scores, amount=0.5)
        pruned = structured(example_shape="5x4", protect="rnn")(model, scores, amount=0.5)
        assert pruned.rnn.hidden_size == 8 and pruned.a.out_features == 3  # its input shrank
        with torch.no_grad():
            assert pruned(torch.randn(2, 5, 4)).shape == (2, 3)


class RowLSTM(nn.Module):
    """An LSTM reading the model's input directly (digit rows as time steps)."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(8, 32, batch_first=True)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.lstm(x.squeeze(1))
        return self.fc(h[-1])


def test_a_recurrent_layer_reading_the_model_input_loses_hidden_units():
    # autograd reaches such a layer only through its weight (as a first convolution): it was
    # left out of the graph, and silently unpruned
    model = RowLSTM().eval()
    pruner = pruneplug.get_pruner("structured", example_shape="1x8x8")
    pruned = pruner(model, pruneplug.get_scorer("magnitude")(model), amount=0.5)
    assert pruned.lstm.hidden_size == 16 and pruned.lstm.input_size == 8
    assert pruned.lstm.weight_ih_l0.shape == (64, 8) and pruned.fc.in_features == 16
    assert pruned(torch.rand(3, 1, 8, 8)).shape == (3, 10)
