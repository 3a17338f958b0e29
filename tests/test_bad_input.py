"""A battery of bad calls: each gets an error that names the problem and the fix, and nothing
is left half-changed (issue 11's list, kept as tests)."""

import numpy as np
import pytest
import torch
from torch import nn

import pruneplug
from pruneplug import data, deploy, engine, metrics, models, serialize


@pytest.fixture(scope="module")
def digits():
    return data.load_digits(seed=0)


def test_a_diverging_run_stops_with_the_epoch_and_batch_and_finite_weights(digits):
    model = models.mlp(seed=0)
    with pytest.raises(
        FloatingPointError,
        match=r"epoch \d+ of 5: training diverged: the loss "
        r"of batch \d+ is (nan|inf).*Lower the learning rate",
    ):
        engine.train(model, digits.train, epochs=5, lr=1e6, progress=False)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_a_finite_loss_with_a_nan_gradient_stops_before_the_step():
    data_set = torch.utils.data.TensorDataset(torch.randn(64, 4), torch.randint(0, 3, (64,)))
    model = nn.Linear(4, 3)
    before = [p.detach().clone() for p in model.parameters()]

    def kink(module, inputs, logits):  # 0, but its gradient is NaN (sqrt at 0)
        return (module.weight.abs().sum() * 0).sqrt()

    with pytest.raises(FloatingPointError, match="the gradient of batch 0 holds nan"):
        engine.train(model, data_set, epochs=1, batch_size=64, penalty=kink, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_a_last_step_that_overflows_the_weights_does_not_end_quietly():
    inputs = 1e3 * torch.randn(64, 4)  # gradients in the hundreds: finite, and so is the loss
    data_set = torch.utils.data.TensorDataset(inputs, torch.randint(0, 3, (64,)))
    with pytest.raises(FloatingPointError, match="left NaN or inf weights; lower the learning"):
        engine.train(nn.Linear(4, 3), data_set, epochs=1, batch_size=64, lr=1e38, progress=False)


@pytest.mark.parametrize(
    "augment, problem",
    [
        (lambda x, y: x, r"augment must return an \(inputs, targets\) pair"),
        (pruneplug.get_augmenter("random_swap"), r"is a text augmenter.*image augmenter"),
    ],
    ids=["returns-only-images", "text-augmenter"],
)
def test_an_augment_that_cannot_augment_image_batches_is_named(digits, augment, problem):
    with pytest.raises(TypeError, match=problem):
        engine.train(models.mlp(seed=0), digits.train, epochs=1, augment=augment, progress=False)


def test_weights_are_never_downloaded():
    with pytest.raises(ValueError, match="never downloads weights.*load_state_dict"):
        models.torchvision_model("resnet18", weights="DEFAULT")


def test_files_and_objects_that_are_not_models(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("these are notes, not a model\n")
    with pytest.raises(ValueError, match="is not a pruneplug model file"):
        serialize.load(text)
    with pytest.raises(TypeError, match="save needs the model.*torch.save"):
        serialize.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "m.pt")
    assert not (tmp_path / "m.pt").exists()
    with pytest.raises(TypeError, match="deploy needs a torch.nn.Module, got str"):
        deploy.deploy("model.pt")
    with pytest.raises(TypeError, match="expected a torch.nn.Module, got str"):
        pruneplug.get_scorer("magnitude")("mlp")


def test_missing_scores_and_meta_models_are_refused():
    model = models.mlp(seed=0)
    with pytest.raises(TypeError, match="needs pruneplug.Scores"):
        pruneplug.get_pruner("unstructured")(model, None, amount=0.5)
    assert not torch.nn.utils.prune.is_pruned(model)
    with torch.device("meta"):
        meta = nn.Sequential(nn.Linear(4, 3))
    with pytest.raises(ValueError, match="meta device.*to_empty"):
        pruneplug.get_scorer("magnitude")(meta)


def test_a_scorer_returning_junk_is_refused_where_it_is_made():
    class Dict(pruneplug.Scorer):
        name, description = "dict", "returns a dict"

        def score(self, model, batches, loss_fn):
            return {"fc1": torch.ones(3)}

    class Shape(pruneplug.LayerScorer):
        name, description = "shape", "wrong shapes"

        def score_layer(self, name, weight):
            return torch.ones(2)

    with pytest.raises(TypeError, match="scorer 'dict' returned a dict, not pruneplug.Scores"):
        Dict()(models.mlp(seed=0))
    with pytest.raises(ValueError, match=r"scorer 'shape' returned bad scores: .*shape \(2,\)"):
        Shape()(models.mlp(seed=0))


def test_numpy_and_tensor_scalars_are_accepted_as_numbers():
    rotation = pruneplug.get_augmenter("rotation", degrees=np.float32(10), p=torch.tensor(0.5))
    assert rotation.config == {**rotation.config, "degrees": 10.0, "p": 0.5}
    assert pruneplug.get_pruner("structured", round_to=np.int64(8)).config["round_to"] == 8
    model = models.mlp(seed=0)
    scores = pruneplug.get_scorer("magnitude")(model)
    pruneplug.get_pruner("unstructured")(model, scores, amount=np.float32(0.5))
    assert metrics.global_sparsity(model) == pytest.approx(0.5, abs=1e-3)


def test_attention_stays_trainable_by_a_plain_loop_after_unstructured_pruning():
    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.attention = nn.MultiheadAttention(8, 2, batch_first=True)
            self.head = nn.Linear(8, 3)

        def forward(self, x):
            return self.head(self.attention(x, x, x)[0].mean(1))

    torch.manual_seed(0)
    model = Attention()
    assert list(pruneplug.prunable_layers(model)) == ["head"]  # out_proj is left out
    scores = pruneplug.get_scorer("magnitude")(model)
    pruneplug.get_pruner("unstructured")(model, scores, amount=0.5)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.rand(4, 5, 8), torch.tensor([0, 1, 2, 0])
    for _ in range(2):  # the second backward failed when out_proj carried a mask
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    # global magnitude pruning ranks the head with attention's in_proj_weight (a prunable tensor)
    assert hasattr(model.attention, "in_proj_weight_mask")
    assert metrics.global_sparsity(model) == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize("name", ["gradient", "taylor", "hessian", "ablation"])
def test_scorer_batches_that_do_not_fit_the_model_are_named(name):
    model = models.mlp(seed=0)
    scorer = pruneplug.get_scorer(name)
    wide = [(torch.rand(4, 1, 8, 9), torch.zeros(4, dtype=torch.long))]
    with pytest.raises(ValueError, match=r"batch 0 \(inputs \(4, 1, 8, 9\).*does not fit"):
        scorer(model, wide)
    labels = [(torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 10]))]
    with pytest.raises(ValueError, match=r"class indices below its number of outputs"):
        scorer(model, labels)
