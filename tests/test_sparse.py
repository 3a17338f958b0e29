"""Sparse execution: CSR/BSR Linear layers compute what the dense ones do, convert back bit for
bit, count their bytes as torch.save writes them, never touch the caller's model, and refuse
what they cannot do (with the fix); 2:4 conversion for GPUs; the benchmark's quick table."""

import copy
import io
import re

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

import pruneplug
from pruneplug import effective_weight, prunable_layers
from pruneplug.benchmarks import deploy_sparse
from pruneplug.sparse import (
    LeftDenseWarning,
    SparseLinear,
    is_nm_sparse,
    storage_bytes,
    to_dense,
    to_semi_structured,
    to_sparse,
)

#: divides every weight shape of mlp(): out 64 / 48 / 16 and in 32 / 64 / 48
BLOCK = 16
FORMATS = [("csr", None), ("bsr", BLOCK)]


def mlp() -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 16)
    )


def pruned_mlp(amount: float = 0.8) -> nn.Sequential:
    """An MLP pruned with PyTorch masks (the unstructured pruner, magnitude scores)."""
    model = mlp()
    scores = pruneplug.get_scorer("magnitude")(model)
    return pruneplug.get_pruner("unstructured")(model, scores, amount=amount)


def snapshot(model: nn.Module) -> dict:
    """Everything a conversion could change in place: tensors, module types, hooks."""
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "types": [type(m) for m in model.modules()],
        "hooks": [len(m._forward_pre_hooks) for m in model.modules()],
    }


def assert_unchanged(model: nn.Module, before: dict) -> None:
    after = snapshot(model)
    assert after["types"] == before["types"] and after["hooks"] == before["hooks"]
    assert after["state"].keys() == before["state"].keys()
    for key, value in before["state"].items():
        assert torch.equal(after["state"][key], value), key


def bits(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.contiguous().view(torch.int32)


# --------------------------------------------------------------------------- outputs


@pytest.mark.parametrize(("layout", "blocksize"), FORMATS)
def test_sparse_model_computes_the_pruned_models_outputs(layout, blocksize):
    model = pruned_mlp()
    sparse = to_sparse(model, layout, blocksize=blocksize)
    assert all(isinstance(sparse[i], SparseLinear) for i in (0, 2, 4))
    assert sparse[0].layout == layout and not prune.is_pruned(sparse)
    for x in (torch.randn(7, 32), torch.randn(2, 3, 32), torch.randn(32)):
        expected = model(x)
        got = sparse(x)
        assert got.shape == expected.shape and got.is_contiguous()
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_works_under_inference_mode_and_without_bias():
    layer = nn.Linear(16, 8, bias=False)
    with torch.no_grad():
        layer.weight[layer.weight.abs() < 0.1] = 0
    sparse = SparseLinear.from_linear(layer)
    x = torch.randn(5, 16)
    with torch.inference_mode():
        torch.testing.assert_close(sparse(x), layer(x), atol=1e-6, rtol=1e-5)


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize(("layout", "blocksize"), FORMATS)
def test_round_trip_gives_back_every_weight_bit_for_bit(layout, blocksize):
    model = pruned_mlp()
    back = to_dense(to_sparse(model, layout, blocksize=blocksize))
    assert not prune.is_pruned(back)
    for name, layer in prunable_layers(model).items():
        restored = dict(back.named_modules())[name]
        assert type(restored) is nn.Linear
        # orig * mask gives -0.0 for a pruned negative weight; + 0.0 makes it the +0.0 read back
        assert torch.equal(bits(restored.weight), bits(effective_weight(layer) + 0.0)), name
        assert torch.equal(bits(restored.bias), bits(layer.bias)), name
    x = torch.randn(9, 32)
    assert torch.equal(back(x), model(x))


def test_plain_zeros_round_trip_and_a_pruned_bias():
    layer = nn.Linear(24, 12)
    with torch.no_grad():
        layer.weight[torch.rand(12, 24) < 0.9] = 0.0
    prune.custom_from_mask(layer, "bias", (torch.arange(12) % 2).float())
    back = to_dense(to_sparse(layer))  # a model that is one Linear layer
    assert type(back) is nn.Linear
    assert torch.equal(bits(back.weight), bits(layer.weight))
    assert torch.equal(back.bias, layer.bias_orig * layer.bias_mask)


def test_min_sparsity_keeps_the_denser_layers_dense():
    model = mlp()
    with torch.no_grad():
        model[2].weight[torch.rand(48, 64) < 0.95] = 0
    sparse = to_sparse(model, min_sparsity=0.9)
    assert [type(sparse[i]) for i in (0, 2, 4)] == [nn.Linear, SparseLinear, nn.Linear]


def test_a_shared_layer_is_converted_on_every_path():
    shared = nn.Linear(8, 8)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    sparse = to_sparse(model)
    assert isinstance(sparse[0], SparseLinear) and sparse[0] is sparse[2]
    x = torch.randn(3, 8)
    torch.testing.assert_close(sparse(x), model(x), atol=1e-5, rtol=1e-5)


def test_sparse_model_copies_saves_and_loads():
    sparse = to_sparse(pruned_mlp(), "bsr", blocksize=BLOCK)
    x = torch.randn(4, 32)
    assert torch.equal(copy.deepcopy(sparse)(x), sparse(x))
    buffer = io.BytesIO()
    torch.save(sparse.state_dict(), buffer)
    other = copy.deepcopy(sparse)
    with torch.no_grad():
        other[0].values.zero_()
    other.load_state_dict(torch.load(io.BytesIO(buffer.getvalue())))
    assert torch.equal(other(x), sparse(x))


# --------------------------------------------------------------------------- bytes


def saved_size(tensor: torch.Tensor) -> int:
    buffer = io.BytesIO()
    torch.save(tensor, buffer)
    return len(buffer.getvalue())


@pytest.mark.parametrize(("layout", "blocksize"), [("dense", None), *FORMATS])
def test_bytes_follow_the_formula_and_what_torch_save_writes(layout, blocksize):
    layer = pruned_mlp(0.7)[2]  # 48 x 64
    weight = effective_weight(layer)
    if layout == "dense":
        tensor, expected = weight, 48 * 64 * 4
    else:
        tensor = SparseLinear.from_linear(layer, layout, blocksize).weight
        assert tensor.col_indices().dtype == torch.int32
        if layout == "csr":
            nnz = int((weight != 0).sum())
            expected = nnz * (4 + 4) + (48 + 1) * 4  # values + column indices + row pointers
        else:
            b = blocksize
            stored = int(
                weight.unflatten(1, (-1, b)).unflatten(0, (-1, b)).ne(0).any(3).any(1).sum()
            )
            expected = stored * (b * b * 4 + 4) + (48 // b + 1) * 4  # blocks + indices + pointers
    assert storage_bytes(tensor) == expected
    header = saved_size(tensor) - expected
    assert 0 < header < 2560, f"torch.save wrote {header} bytes besides the data"


def test_storage_bytes_refuses_other_layouts():
    with pytest.raises(ValueError, match="dense, CSR and BSR"):
        storage_bytes(torch.eye(3).to_sparse_coo())


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"layout": "coo"}, "layout='coo' is not supported: use one of csr, bsr"),
        ({"layout": "bsr"}, "layout='bsr' needs a block size: give blocksize=16"),
        ({"layout": "csr", "blocksize": 4}, "blocksize=4 is for layout='bsr'"),
        ({"layout": "bsr", "blocksize": 0}, "must be a positive int, the side of square blocks"),
        ({"layout": "bsr", "blocksize": (2, 4)}, "must be a positive int"),
        ({"layout": "bsr", "blocksize": 32}, r"layer '2': a 48 x 64 weight does not split into"),
        ({"min_sparsity": 1.5}, r"min_sparsity=1.5 must be a fraction in \[0, 1\]"),
        ({"min_sparsity": 0.99}, r"the sparsest, '\d', is \d+\.\d%\): prune first"),
    ],
)
def test_bad_conversions_are_refused_and_change_nothing(kwargs, message):
    model = pruned_mlp()
    before = snapshot(model)
    with pytest.raises(ValueError, match=message):
        to_sparse(model, **kwargs)
    assert_unchanged(model, before)


def test_success_changes_nothing_either():
    model = pruned_mlp()
    before = snapshot(model)
    sparse = to_sparse(model, "bsr", blocksize=BLOCK)
    assert_unchanged(model, before)
    before = snapshot(sparse)
    to_dense(sparse)
    assert_unchanged(sparse, before)


def test_unsupported_layers_dtypes_and_inputs_are_refused():
    with pytest.raises(ValueError, match="no nn.Linear layer to convert"):
        to_sparse(nn.Sequential(nn.Conv2d(1, 2, 3)))
    with pytest.raises(TypeError, match="converts nn.Linear layers, got Conv2d"):
        SparseLinear.from_linear(nn.Conv2d(1, 2, 3))
    with pytest.raises(
        ValueError, match=r"layer '0': .*float16: convert the model with model.float"
    ):
        to_sparse(mlp().half())
    with pytest.raises(ValueError, match="holds no SparseLinear layer"):
        to_dense(mlp())
    with pytest.raises(ValueError, match="needs a 2-d CSR or BSR weight"):
        SparseLinear(torch.eye(3))
    broken = torch.sparse_csr_tensor(
        torch.tensor([0, 1, 2]), torch.tensor([0, 7]), torch.ones(2), (2, 3), check_invariants=False
    )
    with pytest.raises(ValueError, match="indices are inconsistent.*to_sparse_csr"):
        SparseLinear(broken)
    with pytest.raises(ValueError, match=r"bias has shape \(2,\), expected \(3,\)"):
        SparseLinear(torch.eye(3).to_sparse_csr(), torch.zeros(2))
    with pytest.raises(ValueError, match="the last dimension must be 32"):
        to_sparse(mlp())(torch.randn(4, 31))


# --------------------------------------------------------------------------- 2:4 (GPU)


def two_four_mlp() -> nn.Sequential:
    """Linear 128-128-64-10, pruned 2:4 by the n_m pruner (magnitude scores)."""
    model = nn.Sequential(
        nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10)
    )
    return pruneplug.get_pruner("n_m")(model, pruneplug.get_scorer("magnitude")(model))


def test_semi_structured_is_refused_on_cpu_with_the_way_out():
    model = two_four_mlp().half()
    assert all(is_nm_sparse(effective_weight(m)) for m in prunable_layers(model).values())
    before = snapshot(model)
    with pytest.raises(RuntimeError, match=r"needs the model on a CUDA GPU.*on cpu.*to_sparse"):
        to_semi_structured(model)
    assert_unchanged(model, before)


@pytest.mark.cuda
def test_semi_structured_runs_two_four_layers_on_the_gpu():
    model = two_four_mlp().cuda().half().eval()
    before = snapshot(model)
    x = torch.randn(32, 128, device="cuda", dtype=torch.float16)
    with pytest.warns(LeftDenseWarning, match=r"'4'"):  # 10 outputs: too few rows for the kernel
        fast = to_semi_structured(model)
    assert_unchanged(model, before)
    for i in (0, 2):
        assert isinstance(fast[i].weight, torch.sparse.SparseSemiStructuredTensor)
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), model(x), atol=2e-2, rtol=2e-2)
    with pytest.raises(ValueError, match="model.half"):
        to_semi_structured(two_four_mlp().cuda())
    with pytest.raises(ValueError, match="prune 2:4 first"):
        to_semi_structured(mlp().cuda().half())


@pytest.mark.cuda
@pytest.mark.parametrize(
    ("layout", "blocksize", "dtype"),
    [("csr", None, torch.float32), ("bsr", BLOCK, torch.float32), ("csr", None, torch.float16)],
)
def test_sparse_linear_runs_on_the_gpu(layout, blocksize, dtype):
    model = pruned_mlp().cuda().to(dtype)
    x = torch.randn(8, 32, device="cuda", dtype=dtype)
    sparse = to_sparse(model, layout, blocksize=blocksize)
    tolerance = 1e-5 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(sparse(x), model(x), atol=tolerance, rtol=tolerance)


# --------------------------------------------------------------------------- benchmark


def test_quick_benchmark_table_has_every_format_sparsity_and_batch():
    run = deploy_sparse.grid(quick=True)
    text = deploy_sparse.sparse_table(quick=True)
    lines = text.splitlines()
    assert lines[0].startswith("D3")
    header = lines[1].split()
    assert header[-1] == "bytes" and header.count("batch") == len(run.batches)
    rows = [
        line.split()
        for line in lines[3 : 3 + len(run.sizes) * len(deploy_sparse.FORMATS) * len(run.sparsities)]
    ]
    seen = set()
    for row in rows:
        size, *fmt, sparsity = row[: -len(run.batches) - 1]
        numbers = [float(v) for v in row[-len(run.batches) - 1 :]]
        assert all(v > 0 for v in numbers)
        seen.add((size, " ".join(fmt), sparsity))
    assert seen == {
        (f"{n}x{n}", fmt, f"{s:.0%}")
        for n in run.sizes
        for fmt in deploy_sparse.FORMATS
        for s in run.sparsities
    }
    assert re.search(r"dense time / sparse time", text) and "thread(s)" in text
