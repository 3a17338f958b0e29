"""The unstructured pruner: exact rate/threshold semantics, local vs global, PyTorch masks."""

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

import pruneplug
from pruneplug import Scores
from pruneplug.plumbing import refresh_masked_weights


def two_layers() -> nn.Sequential:
    model = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
        model[1].weight.copy_(torch.tensor([[10.0, 20.0], [30.0, 40.0]]))
    return model


def magnitude(model):
    return pruneplug.get_scorer("magnitude")(model)


def test_global_rate_ranks_across_layers():
    model = two_layers()
    pruneplug.get_pruner("unstructured", scope="global")(model, magnitude(model), amount=0.5)
    assert model[0].weight_mask.tolist() == [[0, 0], [0, 1]]  # the layer keeps its best weight
    assert model[1].weight_mask.tolist() == [[1, 1], [1, 1]]


def test_local_rate_prunes_each_layer_alike():
    model = two_layers()
    pruneplug.get_pruner("unstructured", scope="local")(model, magnitude(model), amount=0.5)
    assert model[0].weight_mask.tolist() == [[0, 0], [1, 1]]
    assert model[1].weight_mask.tolist() == [[0, 0], [1, 1]]


def test_threshold_removes_scores_below_it_and_refuses_to_empty_a_layer():
    model = two_layers()
    pruneplug.get_pruner("unstructured")(model, magnitude(model), threshold=3.0)
    assert model[0].weight.tolist() == [[0, 0], [3, 4]]
    with pytest.raises(ValueError, match="remove every weight of layer '0'"):
        pruneplug.get_pruner("unstructured")(two_layers(), magnitude(two_layers()), threshold=5.0)


def test_pytorch_mask_convention_and_composition():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 10))
    original = model[0].weight.detach().clone()
    pruner = pruneplug.get_pruner("unstructured", scope="local")
    pruner(model, magnitude(model), amount=0.5)
    first = model[0].weight_mask.clone()
    random_scores = Scores(
        weight={n: torch.rand_like(m.weight) for n, m in pruneplug.prunable_layers(model).items()}
    )
    pruner(model, random_scores, amount=0.8)  # reaches 80 %, never revives a pruned weight
    assert prune.is_pruned(model)
    assert model[0].weight_orig.equal(original)
    assert (model[0].weight_mask <= first).all()
    assert model[0].weight_mask.mean().item() == pytest.approx(0.2)
    assert isinstance(
        model[0]._forward_pre_hooks[next(iter(model[0]._forward_pre_hooks))], prune.PruningContainer
    )
    prune.remove(model[0], "weight")
    assert not hasattr(model[0], "weight_orig") and (
        model[0].weight == 0
    ).float().mean() == pytest.approx(0.8)


def test_per_unit_scores_alone_are_refused():
    model = two_layers()
    with pytest.raises(ValueError, match="needs per-weight scores"):
        pruneplug.get_pruner("unstructured")(model, Scores(unit={"0": torch.ones(2)}), amount=0.5)


def test_a_pruned_model_can_be_copied():
    # prune.custom_from_mask computes `weight` with autograd on: a non-leaf tensor, which
    # copy.deepcopy refuses; the pruner's call recomputes it outside autograd
    model = two_layers()
    pruneplug.get_pruner("unstructured")(model, magnitude(model), amount=0.5)
    assert model[0].weight.is_leaf
    copied = copy.deepcopy(model)
    assert copied[0].weight.equal(model[0].weight) and prune.is_pruned(copied)
    model(torch.rand(3, model[0].in_features)).sum()  # a forward with autograd on ...
    with pytest.raises(RuntimeError, match="deepcopy"):
        copy.deepcopy(model)  # ... makes `weight` non-leaf again (PyTorch's behaviour)
    refresh_masked_weights(model)
    assert copy.deepcopy(model)[0].weight.equal(model[0].weight)
