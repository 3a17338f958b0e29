"""Transfer and few-shot learning: tasks, k-shot samples, backbone files, heads, linear probes."""

from __future__ import annotations

import statistics

import pytest
import torch
from torch import nn
from torch.nn.utils import prune
from torch.utils.data import TensorDataset

from pruneplug import data, engine, models, transfer


@pytest.fixture(scope="module")
def digits() -> data.Splits:
    return data.load_digits(seed=0)


@pytest.fixture(scope="module")
def tasks(digits: data.Splits) -> tuple[data.Splits, data.Splits]:
    return transfer.class_task(digits, range(5)), transfer.class_task(digits, range(5, 10))


def _states_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --------------------------------------------------------------------------- tasks


def test_class_task_keeps_the_classes_and_remaps_their_labels(digits: data.Splits) -> None:
    task = transfer.class_task(digits, [7, 2])
    assert task.classes == ["7", "2"]
    for split in ("train", "val", "test"):
        images, labels = getattr(task, split).tensors
        full_images, full_labels = getattr(digits, split).tensors
        assert labels.unique().tolist() == [0, 1]
        for new, old in ((0, 7), (1, 2)):
            assert torch.equal(images[labels == new], full_images[full_labels == old])
    # copies: changing the task leaves the splits alone
    task.train.tensors[0].zero_()
    assert digits.train.tensors[0].sum() > 0


@pytest.mark.parametrize(
    ("classes", "error", "match"),
    [([], TypeError, "non-empty"), ([3, 10], ValueError, r"\[10\]"), ([1, 1], ValueError, "twice")],
)
def test_class_task_refuses_bad_classes(
    digits: data.Splits, classes: list[int], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        transfer.class_task(digits, classes)


def test_k_shot_is_balanced_deterministic_and_nested(tasks: tuple[data.Splits, ...]) -> None:
    target = tasks[1]
    five = transfer.k_shot(target.train, 5, seed=3)
    assert torch.bincount(five.tensors[1]).tolist() == [5] * 5
    again = transfer.k_shot(target.train, 5, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(five.tensors, again.tensors, strict=True))
    other = transfer.k_shot(target.train, 5, seed=4)
    assert not torch.equal(five.tensors[0], other.tensors[0])
    one, ten = transfer.k_shot(target.train, 1, seed=3), transfer.k_shot(target.train, 10, seed=3)
    # for one seed, the 1-shot set is part of the 5-shot set, which is part of the 10-shot set
    for c in range(5):
        first = [x.flatten().tolist() for x in one.tensors[0][one.tensors[1] == c]]
        fives = [x.flatten().tolist() for x in five.tensors[0][five.tensors[1] == c]]
        tens = [x.flatten().tolist() for x in ten.tensors[0][ten.tensors[1] == c]]
        assert first == fives[:1] and fives == tens[:5]


def test_k_shot_errors() -> None:
    small = TensorDataset(torch.zeros(3, 2), torch.tensor([0, 0, 1]))
    with pytest.raises(ValueError, match="class 1 has only 1 examples, fewer than k=2"):
        transfer.k_shot(small, 2)
    with pytest.raises(ValueError, match="k=0"):
        transfer.k_shot(small, 0)
    with pytest.raises(TypeError, match="TensorDataset"):
        transfer.k_shot([(torch.zeros(2), 0)], 1)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- heads


def test_find_head_of_the_reference_models_and_a_clear_error_otherwise() -> None:
    assert transfer.find_head(models.cnn()) == "classifier"
    assert transfer.find_head(models.mlp()) == "fc3"
    nested = nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.ReLU(), nn.Linear(4, 2)))
    assert transfer.find_head(nested, head="1.1") == "1.1"
    with pytest.raises(ValueError, match=r"pass head= the name of its final Linear.*'0', '1.1'"):
        transfer.find_head(nested)
    with pytest.raises(ValueError, match="is a ReLU, not an nn.Linear"):
        transfer.find_head(nested, head="1.0")
    with pytest.raises(ValueError, match="no sub-module 'fc9'"):
        transfer.find_head(models.mlp(), head="fc9")


@pytest.mark.parametrize("build", [models.cnn, models.mlp])
def test_replace_head_copies_the_backbone_and_leaves_the_model_alone(build) -> None:
    model = build(num_classes=10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    new = transfer.replace_head(model, 3, seed=1)
    assert _states_equal(model, build(num_classes=10))  # unchanged
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    name = transfer.find_head(new)
    head = new.get_submodule(name)
    assert isinstance(head, nn.Linear) and head.out_features == 3
    for key, value in new.state_dict().items():
        if not key.startswith(name):
            assert torch.equal(value, before[key])
    assert new.eval()(torch.rand(2, 1, 8, 8)).shape == (2, 3)
    assert new.pruneplug_spec["kwargs"]["num_classes"] == 3
    assert _states_equal(transfer.replace_head(model, 3, seed=1), new)  # seeded
    with pytest.raises(ValueError, match="num_classes=0"):
        transfer.replace_head(model, 0)


def test_reinitialise_draws_the_named_layers_afresh() -> None:
    model = models.cnn(widths=(8, 8, 8))
    with torch.no_grad():
        model.block3.bn.running_mean.fill_(3.0)
    fresh = transfer.reinitialise(model, ["block3"], seed=5)
    assert torch.equal(fresh.block1.conv.weight, model.block1.conv.weight)
    assert not torch.equal(fresh.block3.conv.weight, model.block3.conv.weight)
    assert fresh.block3.bn.running_mean.abs().sum() == 0  # statistics reset too
    assert model.block3.bn.running_mean[0] == 3.0  # the model is not modified
    assert _states_equal(transfer.reinitialise(model, ["block3"], seed=5), fresh)
    with pytest.raises(ValueError, match="no sub-module 'block9'"):
        transfer.reinitialise(model, ["block9"])
    prune.l1_unstructured(model.block3.conv, "weight", 0.5)
    with pytest.raises(ValueError, match="'block3.conv' is masked"):
        transfer.reinitialise(model, ["block3"])


# --------------------------------------------------------------------------- files


def test_backbone_round_trip_is_exact_and_keeps_the_new_head(tmp_path) -> None:
    source = models.cnn(num_classes=5, widths=(8, 16, 16), seed=0)
    source.train()
    source(torch.rand(16, 1, 8, 8))  # move the batch-norm statistics away from their start
    path = tmp_path / "backbone.pt"
    transfer.save_backbone(source, path)
    target = models.cnn(num_classes=3, widths=(8, 16, 16), seed=1)
    loaded = transfer.load_backbone(path, target)
    for key, value in loaded.state_dict().items():
        expected = target if key.startswith("classifier.") else source
        assert torch.equal(value, expected.state_dict()[key]), key
    assert _states_equal(target, models.cnn(num_classes=3, widths=(8, 16, 16), seed=1))
    # a plain state_dict of a whole model loads too (its head is ignored)
    torch.save(source.state_dict(), tmp_path / "state.pt")
    assert _states_equal(transfer.load_backbone(tmp_path / "state.pt", target), loaded)


def test_masks_travel_with_the_backbone(tmp_path) -> None:
    source = models.mlp(seed=0)
    prune.l1_unstructured(source.fc1, "weight", 0.8)
    transfer.save_backbone(source, tmp_path / "b.pt")
    loaded = transfer.load_backbone(tmp_path / "b.pt", models.mlp(num_classes=5, seed=1))
    assert torch.equal(loaded.fc1.weight_mask, source.fc1.weight_mask)
    assert torch.equal(loaded.fc1.weight, source.fc1.weight)
    shots = TensorDataset(torch.rand(20, 64), torch.arange(20) % 5)
    engine.train(loaded, shots, epochs=1, progress=False)
    assert (loaded.fc1.weight[source.fc1.weight_mask == 0] == 0).all()  # pruned stay zero


def test_load_backbone_refuses_a_model_of_other_shapes_naming_the_layer(tmp_path) -> None:
    path = tmp_path / "b.pt"
    transfer.save_backbone(models.cnn(widths=(8, 16, 16)), path)
    with pytest.raises(
        ValueError, match=r"layer 'block2.conv' has weight of shape \(16, 8, 3, 3\)"
    ):
        transfer.load_backbone(path, models.cnn(widths=(8, 32, 16)))
    with pytest.raises(ValueError, match="the file has block1.bn.bias.*but the model does not"):
        transfer.load_backbone(path, models.mlp())


def test_load_backbone_errors_name_the_file_and_the_fix(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="no backbone file at .*nothing is ever downloaded"):
        transfer.load_backbone(tmp_path / "missing.pt", models.mlp())
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="is not a backbone or state_dict file"):
        transfer.load_backbone(tmp_path / "junk.pt", models.mlp())
    torch.save({"format": transfer.FORMAT, "version": 99}, tmp_path / "future.pt")
    with pytest.raises(ValueError, match="version 99"):
        transfer.load_backbone(tmp_path / "future.pt", models.mlp())
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="holds neither a backbone"):
        transfer.load_backbone(tmp_path / "list.pt", models.mlp())


# --------------------------------------------------------------------------- training


def test_linear_probe_trains_the_head_only(tasks: tuple[data.Splits, ...]) -> None:
    model = transfer.replace_head(models.cnn(widths=(8, 16, 16)), 5)
    model.block1.conv.weight.requires_grad_(True)
    backbone = {k: v.clone() for k, v in model.state_dict().items() if "classifier" not in k}
    head = model.classifier.weight.clone()
    shots = transfer.k_shot(tasks[1].train, 5, seed=0)
    history = transfer.linear_probe(model, shots, epochs=3, lr=0.1, val_data=shots, progress=False)
    assert len(history) == 3 and history["val_accuracy"][-1] is not None
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in backbone.items())  # weights and BN stats
    assert not torch.equal(model.classifier.weight, head)
    assert all(p.requires_grad for p in model.parameters())  # flags restored
    assert model.training


def test_transfer_beats_training_from_scratch_at_5_shots(tasks: tuple[data.Splits, ...]) -> None:
    """Digits 0-4 -> 5-9, 5 shots per class, mean of 3 seeds: blocks 1-2 of a CNN pre-trained
    on 0-4, block 3 and the head re-learnt (Yosinski et al. 2014), beat the same CNN trained
    from scratch on the same shots by over 2 points of test accuracy (measured: about 5)."""
    source, target = tasks
    widths = (16, 32, 64)
    pretrained = models.cnn(num_classes=5, widths=widths, seed=0)
    engine.train(pretrained, source.train, epochs=10, schedule="cosine", progress=False)
    few = dict(epochs=40, lr=0.1, progress=False)
    scratch, transferred = [], []
    for seed in range(3):
        shots = transfer.k_shot(target.train, 5, seed=seed)
        model = models.cnn(num_classes=5, widths=widths, seed=seed)
        engine.train(model, shots, seed=seed, **few)
        scratch.append(engine.evaluate(model, target.test)["accuracy"])
        model = transfer.reinitialise(
            transfer.replace_head(pretrained, 5, seed=seed), ["block3"], seed=seed
        )
        engine.train(model, shots, seed=seed, **few)
        transferred.append(engine.evaluate(model, target.test)["accuracy"])
    assert statistics.mean(transferred) - statistics.mean(scratch) > 0.02, (transferred, scratch)


@pytest.mark.cuda
def test_transfer_where_the_model_is(tmp_path) -> None:
    """A CUDA model: the loaded backbone, the new head and the re-drawn layers stay on the GPU,
    and the probe trains there on data kept on the host (the engine's device policy)."""
    source = models.cnn(num_classes=5, widths=(8, 8, 8)).cuda()
    transfer.save_backbone(source, tmp_path / "b.pt")
    fresh = models.cnn(num_classes=3, widths=(8, 8, 8), seed=1).cuda()
    model = transfer.load_backbone(tmp_path / "b.pt", fresh)
    assert model.block1.conv.weight.is_cuda
    assert torch.equal(model.block1.conv.weight, source.block1.conv.weight)
    model = transfer.replace_head(model, 4)
    assert model.classifier.weight.is_cuda
    shots = TensorDataset(torch.rand(8, 1, 8, 8), torch.arange(8) % 4)
    transfer.linear_probe(model, shots, epochs=1, progress=False)
    state = torch.cuda.get_rng_state()
    model = transfer.reinitialise(model, ["block3"])
    assert model.block3.conv.weight.is_cuda
    assert torch.equal(torch.cuda.get_rng_state(), state)


def test_class_task_refuses_negative_labels() -> None:
    unlabelled = TensorDataset(torch.rand(4, 3), torch.tensor([0, 9, -1, 5]))
    splits = data.Splits(unlabelled, unlabelled, unlabelled, [str(i) for i in range(10)], "x")
    with pytest.raises(ValueError, match=r"x.train has negative labels \(-1\)"):
        transfer.class_task(splits, [5, 9])
