"""Unstructured pruning of weights outside Linear/Conv: attention, recurrent layers, embeddings."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

import pruneplug
from pruneplug import Scores, engine, metrics, models, schedules
from pruneplug.plumbing import effective_tensor, prunable_tensors
from pruneplug.testing import check_scorer


def tokens(n: int = 6, length: int = 7, vocab: int = 50) -> torch.Tensor:
    return torch.randint(1, vocab, (n, length), generator=torch.Generator().manual_seed(0))


class Attention(nn.Module):
    """An attention block as a plain PyTorch training loop would use it."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.attn(x, x, x, need_weights=False)[0].mean(1))


def test_the_prunable_tensors_of_attention_recurrent_and_embedding_layers():
    assert list(prunable_tensors(models.lstm_classifier(50))) == [
        "embedding.weight",
        "lstm.weight_ih_l0",
        "lstm.weight_hh_l0",
    ]
    assert list(prunable_tensors(Attention())) == ["attn.in_proj_weight"]
    cross = nn.MultiheadAttention(8, 2, kdim=4, vdim=4)  # keys and values of another width
    assert list(prunable_tensors(cross)) == ["q_proj_weight", "k_proj_weight", "v_proj_weight"]
    assert prunable_tensors(models.mlp()) == {}  # MLPs and CNNs: the layers are everything
    assert "attn.out_proj" not in pruneplug.prunable_layers(Attention())  # read directly


def test_magnitude_scores_them_and_the_unstructured_pruner_masks_them_globally():
    model = models.lstm_classifier(50, seed=0)
    scores = pruneplug.get_scorer("magnitude")(model)
    assert set(scores.tensor) == set(prunable_tensors(model)) and list(scores.weight) == [
        "classifier"
    ]
    x = tokens()
    before = model(x)
    pruneplug.get_pruner("unstructured")(model, scores, amount=0.6)
    assert metrics.global_sparsity(model) == pytest.approx(0.6, abs=1e-3)
    lstm = model.lstm
    assert prune.is_pruned(model) and hasattr(lstm, "weight_hh_l0_mask")
    assert lstm.weight_hh_l0.equal(lstm.weight_hh_l0_orig * lstm.weight_hh_l0_mask)
    sparsity = metrics.layer_sparsity(model)
    assert {"embedding.weight", "lstm.weight_ih_l0", "classifier"} <= set(sparsity)
    # the recurrent layer computes with the masked weights: the same as zeroing them by hand
    by_hand = copy.deepcopy(model)
    for name in ("weight_ih_l0", "weight_hh_l0"):
        prune.remove(by_hand.lstm, name)
    prune.remove(by_hand.embedding, "weight")
    prune.remove(by_hand.classifier, "weight")
    torch.testing.assert_close(model(x), by_hand(x))
    assert not torch.allclose(model(x), before)


def test_a_plain_training_loop_runs_on_pruned_attention():
    # the failure: a masked out_proj broke the second backward(); in_proj is read by
    # the attention's forward, so its mask applies on every call
    torch.manual_seed(0)
    model = Attention()
    pruneplug.get_pruner("unstructured")(
        model, pruneplug.get_scorer("magnitude")(model), amount=0.5
    )
    assert hasattr(model.attn, "in_proj_weight_mask")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.rand(4, 5, 8), torch.tensor([0, 1, 2, 0])
    for _ in range(3):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    kept = effective_tensor(model.attn, "in_proj_weight")
    assert kept.eq(0).sum() == model.attn.in_proj_weight_mask.eq(0).sum()  # zeros stayed zero


def test_engine_trains_a_pruned_transformer_and_keeps_its_zeros():
    model = models.transformer_classifier(50, seed=0)
    pruneplug.get_pruner("unstructured", scope="local")(
        model, pruneplug.get_scorer("random")(model), amount=0.5
    )
    data = torch.utils.data.TensorDataset(tokens(16), torch.randint(0, 2, (16,)))
    engine.train(model, data, epochs=2, lr=0.01, progress=False)
    for name, weight in metrics.prunable_weights(model).items():
        assert 1 - int(weight.count_nonzero()) / weight.numel() == pytest.approx(0.5, abs=0.01), (
            name
        )
    copy.deepcopy(model)  # still copyable after training


def test_tensor_scores_are_checked_where_they_are_made():
    model = Attention()
    good = Scores(tensor={"attn.in_proj_weight": torch.rand(24, 8)})
    good.check(model)
    with pytest.raises(ValueError, match="'attn.out_proj.weight', which is not a prunable tensor"):
        Scores(tensor={"attn.out_proj.weight": torch.rand(8, 8)}).check(model)
    with pytest.raises(ValueError, match=r"have shape \(8, 8\), expected \(24, 8\)"):
        Scores(tensor={"attn.in_proj_weight": torch.rand(8, 8)}).check(model)
    pruned = pruneplug.get_pruner("unstructured")(model, good, amount=0.25)  # tensor scores only
    assert model.attn.in_proj_weight_mask.mean().item() == pytest.approx(0.75)
    assert not hasattr(pruned.head, "weight_mask")  # unscored layers are left alone


@pytest.mark.parametrize("name", ["magnitude", "random", "lamp"])
def test_layer_scorers_still_follow_the_contract(name):
    check_scorer(type(pruneplug.get_scorer(name)))


def test_a_lottery_ticket_rewinds_recurrent_and_embedding_weights_too():
    model = models.lstm_classifier(50, seed=0)
    data = torch.utils.data.TensorDataset(tokens(16), torch.randint(0, 2, (16,)))
    ticket = schedules.lottery_ticket(
        model, data=data, rounds=1, rate=0.5, epochs=2, lr=0.01, progress=False
    )
    assert {"lstm.weight_hh_l0", "embedding.weight", "classifier"} <= set(ticket.mask)
    rewound = ticket.rewound()
    start = model.state_dict()  # rewind epoch 0: the initialisation
    assert rewound.lstm.weight_hh_l0_orig.equal(start["lstm.weight_hh_l0"])
    assert rewound.lstm.weight_hh_l0_mask.bool().equal(ticket.mask["lstm.weight_hh_l0"])
    control = ticket.reinitialised(seed=1)
    assert not control.lstm.weight_hh_l0_orig.equal(start["lstm.weight_hh_l0"])
