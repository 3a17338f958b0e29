"""The deployment explorer: like-for-like deployments, sizes, refusals, caching."""

from __future__ import annotations

import base64
import copy

import pytest
import torch

from pruneplug import data, engine, inference, models, sparse
from pruneplug.widgets import Deployment, DeploymentExplorer

pytestmark = pytest.mark.filterwarnings("ignore:.*Sparse CSR tensor support is in beta")


@pytest.fixture(scope="module")
def digits():
    return data.load_digits(seed=0)


@pytest.fixture(scope="module")
def explorer(digits):
    model = models.mlp(seed=0)
    engine.train(model, digits.train, epochs=3, lr=0.1, seed=0, progress=False)
    before = copy.deepcopy(model.state_dict())
    made = DeploymentExplorer(model, digits.train, digits.test, epochs=1, repeats=2)
    assert all(before[k].equal(v) for k, v in model.state_dict().items())  # not modified
    return made


def test_structured_pruning_is_smaller_and_measured_against_the_same_deployment(explorer):
    r = explorer.result
    assert r["setting"] == "structured 50%, float32, eager, dense"
    dense = explorer.deployed(Deployment("structured", 0.0))
    assert r["dense size (KB)"] == inference.size_on_disk(dense) / 1e3
    assert r["smaller"] == pytest.approx(r["dense size (KB)"] / r["size (KB)"])
    assert 2.5 < r["smaller"] < 3.0  # 64-300-100-10 -> 64-150-50-10: about a third of the bytes
    assert r["faster"] > 0 and 0.1 < r["accuracy"] <= 1.0
    assert explorer.reference(explorer.setting) == Deployment("structured", 0.0)
    png = base64.b64decode(explorer._repr_mimebundle_()["image/png"])
    assert png.startswith(b"\x89PNG")


def test_csr_stores_the_unstructured_models_zeros_away(explorer):
    explorer.method.value = "unstructured"
    explorer.amount.value = 0.9
    explorer.layout.value = "csr"
    assert explorer.result["setting"] == "unstructured 90%, float32, eager, csr"
    masked = explorer.pruned("unstructured", 0.9)
    stored = explorer.deployed(explorer.setting)
    x = explorer.batch
    torch.testing.assert_close(stored(x), masked(x), atol=1e-5, rtol=1e-5)
    weights = sum(sparse.storage_bytes(m.weight) for m in stored.modules() if hasattr(m, "values"))
    assert weights < 0.25 * sum(p.numel() * 4 for p in explorer.dense.parameters())
    assert explorer.deployed(explorer.setting) is stored  # cached


def test_the_eager_masked_model_runs_as_the_dense_one_does_without_mask_hooks(explorer):
    setting = Deployment("unstructured", 0.5)
    eager, masked = explorer.deployed(setting), explorer.pruned("unstructured", 0.5)
    assert not any(m._forward_pre_hooks for m in eager.modules())  # no mask recomputed a call
    assert any(m._forward_pre_hooks for m in masked.modules())  # the cached pruned model keeps them
    torch.testing.assert_close(eager(explorer.batch), masked(explorer.batch))


def test_combinations_that_do_not_exist_are_refused_with_the_reason(explorer):
    explorer.method.value = "unstructured"
    explorer.layout.value = "csr"
    explorer.int8.value = True
    assert "sparse format runs in eager float" in explorer.result["error"]
    explorer.int8.value = False
    explorer.method.value = "structured"
    assert "structured-pruned model is dense and smaller" in explorer.result["error"]
    with pytest.raises(ValueError, match="method 'channels'"):
        Deployment("channels").check()
    with pytest.raises(ValueError, match=r"amount=1.0: give a fraction in \[0, 1\)"):
        Deployment(amount=1.0).check()


def test_int8_is_compared_with_the_compiled_float_model(explorer):
    setting = Deployment("structured", 0.5, int8=True)
    r = explorer.measure(setting)
    assert r["setting"] == "structured 50%, int8, compiled, dense"
    reference = explorer.reference(setting)
    assert reference.compiled and not reference.int8 and reference.amount == 0.0
    assert isinstance(explorer.deployed(reference), inference.CompiledForInference)
    assert r["smaller"] > 6  # a third of the weights, a quarter of the bytes each (plus scales)
    assert abs(r["accuracy"] - explorer.measure(Deployment("structured", 0.5))["accuracy"]) < 0.02
