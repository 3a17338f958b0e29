"""Save/load round trips: dense, masked and physically shrunk models; safe loading; errors."""

from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import torch_pruning as tp
from pruneplug_plugins.magnitude import Magnitude
from pruneplug_plugins.structured import Structured
from torch import nn
from torch.nn.utils import prune

from pruneplug import models, serialize


def round_trip(model: nn.Module, tmp_path: Path, template: nn.Module | None = None) -> nn.Module:
    path = tmp_path / "model.pt"
    serialize.save(model, path)
    return serialize.load(path, model=template)


def assert_same(a: nn.Module, b: nn.Module, x: torch.Tensor) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert [m.training for m in a.modules()] == [m.training for m in b.modules()]
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


def perturb(model: nn.Module) -> nn.Module:
    """Change every parameter, as training would: a rebuilt model starts from the same seed."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape))
    return model


def depthwise_net() -> nn.Sequential:
    """A model of our own (no pruneplug_spec) with a depthwise convolution and batch norms."""
    return nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(1, 4, 3, padding=1),
            bn=nn.BatchNorm2d(4),
            dw=nn.Conv2d(4, 4, 3, padding=1, groups=4),
            bn2=nn.BatchNorm2d(4),
            flatten=nn.Flatten(),
            fc=nn.Linear(4 * 8 * 8, 5),
            relu=nn.ReLU(),
            out=nn.Linear(5, 3),
        )
    )


def test_dense_mlp_rebuilds_from_its_spec_without_moving_the_global_rng(tmp_path: Path) -> None:
    model = perturb(models.mlp(hidden=(12, 7), seed=3))
    model.eval()
    model.fc1.train()  # per-module modes are kept
    state = torch.random.get_rng_state()
    loaded = round_trip(model, tmp_path)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert loaded.pruneplug_spec == model.pruneplug_spec
    assert_same(model, loaded, torch.rand(4, 1, 8, 8))


def test_dense_model_of_our_own_loads_onto_a_fresh_instance(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = depthwise_net()
    template = depthwise_net()
    weight = template.conv.weight.detach().clone()
    loaded = round_trip(model, tmp_path, template)
    assert_same(model, loaded, torch.rand(2, 1, 8, 8))
    assert loaded is not template and torch.equal(template.conv.weight, weight)


def test_masked_model_keeps_its_masks(tmp_path: Path) -> None:
    model = models.mlp(hidden=(12, 7))
    prune.l1_unstructured(model.fc1, "weight", amount=0.6)
    prune.random_unstructured(model.fc1, "weight", amount=0.3)  # a second, composed mask
    prune.l1_unstructured(model.fc3, "bias", amount=0.5)
    perturb(model)
    model(torch.rand(1, 64))  # the masks' pre-hooks recompute the masked tensors
    loaded = round_trip(model, tmp_path)
    assert prune.is_pruned(loaded)
    assert torch.equal(loaded.fc1.weight_mask, model.fc1.weight_mask)
    assert torch.equal(loaded.fc3.bias_mask, model.fc3.bias_mask)
    assert torch.equal(loaded.fc1.weight, model.fc1.weight_orig * model.fc1.weight_mask)
    assert not hasattr(loaded.fc2, "weight_mask")
    assert_same(model, loaded, torch.rand(4, 1, 8, 8))
    prune.remove(loaded.fc1, "weight")  # PyTorch's own tools keep working
    assert int((loaded.fc1.weight == 0).sum()) == int((model.fc1.weight_mask == 0).sum())


def test_shrunk_cnn_rebuilds_with_the_saved_sizes(tmp_path: Path) -> None:
    model = models.cnn(widths=(6, 8, 10))
    keep_out = {"block1": [1, 4], "block3": [0, 2, 3, 9]}  # channels removed
    tp.prune_conv_out_channels(model.block1.conv, keep_out["block1"])
    tp.prune_batchnorm_out_channels(model.block1.bn, keep_out["block1"])
    tp.prune_conv_in_channels(model.block2.conv, keep_out["block1"])
    tp.prune_conv_out_channels(model.block3.conv, keep_out["block3"])
    tp.prune_batchnorm_out_channels(model.block3.bn, keep_out["block3"])
    tp.prune_linear_in_channels(model.classifier, keep_out["block3"])
    prune.l1_unstructured(model.block2.conv, "weight", amount=0.5)  # shrunk and masked
    perturb(model)
    model.train()
    model(torch.rand(8, 1, 8, 8))  # move the batch-norm statistics away from their defaults
    model.eval()
    loaded = round_trip(model, tmp_path)
    assert loaded.block1.conv.out_channels == 4 and loaded.block1.bn.num_features == 4
    assert loaded.block2.conv.in_channels == 4
    assert loaded.classifier.in_features == 6
    assert_same(model, loaded, torch.rand(3, 1, 8, 8))


def test_shrunk_depthwise_model_of_our_own_gets_its_groups_back(tmp_path: Path) -> None:
    torch.manual_seed(2)
    model = depthwise_net()
    removed = [0, 3]
    tp.prune_conv_out_channels(model.conv, removed)
    tp.prune_batchnorm_out_channels(model.bn, removed)
    tp.prune_depthwise_conv_out_channels(model.dw, removed)
    tp.prune_batchnorm_out_channels(model.bn2, removed)
    tp.prune_linear_in_channels(model.fc, [i for c in removed for i in range(c * 64, c * 64 + 64)])
    tp.prune_linear_out_channels(model.fc, [4])
    tp.prune_linear_in_channels(model.out, [4])
    loaded = round_trip(model, tmp_path, depthwise_net())
    assert (loaded.dw.in_channels, loaded.dw.out_channels, loaded.dw.groups) == (2, 2, 2)
    assert (loaded.fc.in_features, loaded.fc.out_features) == (128, 4)
    assert_same(model, loaded, torch.rand(2, 1, 8, 8))


def test_structured_pruner_output_round_trips(tmp_path: Path) -> None:
    model = models.cnn(widths=(8, 8, 8))
    small = perturb(Structured()(model, Magnitude()(model), amount=0.5))
    loaded = round_trip(small.eval(), tmp_path)
    assert loaded.block1.conv.out_channels == small.block1.conv.out_channels < 8
    assert_same(small, loaded, torch.rand(2, 1, 8, 8))


def test_load_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no model file"):
        serialize.load(tmp_path / "absent.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="not a pruneplug model file"):
        serialize.load(junk)
    pickled = tmp_path / "pickled.pt"
    torch.save(nn.Linear(2, 2), pickled)  # a whole pickled module: never unpickled by load
    with pytest.raises(ValueError, match="never runs pickled code"):
        serialize.load(pickled)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(ValueError, match="without the 'pruneplug.model' header"):
        serialize.load(other)


def test_newer_format_version_and_missing_architecture_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    serialize.save(depthwise_net(), path)
    with pytest.raises(ValueError, match=r"pass a fresh instance of it, load\(path, model="):
        serialize.load(path)
    with pytest.raises(ValueError, match="module 'conv' is Conv2d in the file but nothing"):
        serialize.load(path, model=nn.Sequential(nn.Linear(2, 2)))
    saved = torch.load(path, weights_only=True)
    saved["version"] = 99
    torch.save(saved, path)
    with pytest.raises(ValueError, match="format version 99"):
        serialize.load(path, model=depthwise_net())


@pytest.mark.parametrize(
    ("build", "tokens"),
    [
        (lambda: models.transformer_classifier(50, max_len=16), True),
        (lambda: models.lstm_classifier(50), True),
        (models.tiny_vit, False),
    ],
    ids=["transformer", "lstm", "vit"],
)
def test_heads_and_hidden_units_removed_round_trip(tmp_path: Path, build, tokens: bool) -> None:
    # attention's embed_dim / num_heads / head_dim, an LSTM's sizes and ViT's hidden_dim are
    # saved with the model, so the rebuilt modules run with the shrunk tensors
    model = build().eval()
    x = torch.randint(1, 50, (4, 9)) if tokens else torch.rand(4, 1, 8, 8)
    pruned = Structured()(model, Magnitude()(model), amount=0.5).eval()
    serialize.save(pruned, tmp_path / "m.pt")
    loaded = serialize.load(tmp_path / "m.pt")
    assert sum(p.numel() for p in loaded.parameters()) < sum(p.numel() for p in model.parameters())
    torch.testing.assert_close(loaded(x), pruned(x))
