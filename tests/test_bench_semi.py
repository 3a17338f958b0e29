"""D4 of `pruneplug bench deploy`: 2:4 vs dense on a GPU (skip line, errors, verdict, checks)."""

from __future__ import annotations

import copy
import re

import pytest
import torch
from torch import nn

from pruneplug.benchmarks import deploy_semi
from pruneplug.benchmarks.deploy_semi import BACKENDS, Cell, verdict
from pruneplug.plumbing import prunable_layers
from pruneplug.sparse import is_nm_sparse

HAS_CUDA = torch.cuda.is_available()


def cell(layer: str, batch: int, ratio: float, backend: str = "cusparselt") -> Cell:
    return Cell(layer, batch, "float16", backend, ratio)


# --------------------------------------------------------------------------- skip and errors


def test_on_cpu_the_table_is_one_skip_line_naming_the_fix(capsys):
    deploy_semi.run(quick=True)
    assert capsys.readouterr().out.splitlines() == [
        deploy_semi.TITLE,
        "D4 skipped: 2:4 sparse kernels run on NVIDIA GPUs of compute capability 8.0+ (Ampere "
        "or later), and this run is on cpu: rerun with --device cuda on an Ampere-or-later "
        "NVIDIA GPU",
    ]


def test_a_gpu_older_than_ampere_is_skipped_with_its_capability(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    deploy_semi.run(quick=True, device="cuda", dtype="bfloat16")
    title, line = capsys.readouterr().out.splitlines()
    assert title == deploy_semi.TITLE
    assert line.startswith("D4 skipped: Tesla T4 has compute capability 7.5, and 2:4 sparse")
    assert line.endswith("rerun with --device cuda on an Ampere-or-later NVIDIA GPU")


@pytest.mark.parametrize("dtype", ["int8", "half", "float64"])
def test_a_dtype_without_2_4_kernels_is_refused_with_the_choices(dtype):
    with pytest.raises(ValueError, match=rf"dtype '{dtype}': choose one of float16, bfloat16 "):
        deploy_semi.run(quick=True, dtype=dtype)


def test_float32_which_the_other_deploy_tables_take_skips_the_table(monkeypatch, capsys):
    # `pruneplug bench deploy --device cuda --dtype float32` runs D1 in float32, then D4
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    deploy_semi.run(quick=True, device="cuda", dtype="float32")
    assert capsys.readouterr().out.splitlines() == [
        deploy_semi.TITLE,
        "D4 skipped: 2:4 layers run in float16 or bfloat16 (pruneplug.sparse."
        "SEMI_STRUCTURED_DTYPES), not float32: rerun with --dtype float16 or --dtype bfloat16, "
        "or without --dtype for both",
    ]


@pytest.mark.skipif(HAS_CUDA, reason="checks the message on a machine without CUDA")
def test_cuda_without_a_gpu_says_so():
    with pytest.raises(ValueError, match="device 'cuda': no CUDA device here"):
        deploy_semi.run(quick=True, device="cuda")


# --------------------------------------------------------------------------- verdict


def test_verdict_counts_wins_and_says_where_they_start():
    cells = [
        cell("1024x1024", 16, 0.42),
        cell("1024x1024", 1024, 0.80, "cutlass"),
        cell("4096x4096", 16, 0.95),
        cell("4096x4096", 1024, 1.12),
        cell("16384x16384", 8192, 1.31),
        cell("16384x16384", 8192, 1.04, "cutlass"),
    ]
    assert verdict(cells) == (
        "2:4 faster in 3 of 6 cells (cusparselt 2, cutlass 1), best 1.31x at 16384x16384 batch "
        "8192 float16 cusparselt; never below batch 1024; never on a weight smaller than "
        "4096x4096"
    )


def test_verdict_leaves_out_limits_the_wins_do_not_have():
    # a win at the smallest batch and on the smallest weight: nothing "never" to say
    cells = [cell("768x3072", 1, 1.5), cell("4096x4096", 128, 0.9)]
    assert verdict(cells) == "2:4 faster in 1 of 2 cells, best 1.50x at 768x3072 batch 1 " + (
        "float16 cusparselt"
    )


def test_verdict_when_2_4_never_wins():
    cells = [cell("4096x4096", 1024, 0.09), cell("8192x8192", 1024, 0.26, "cutlass")]
    assert verdict(cells) == (
        "2:4 was slower than dense in every cell (best 0.26x at 8192x8192 batch 1024 float16 "
        "cutlass)"
    )


def test_verdict_judges_ties_on_the_printed_ratio():
    # 1.004 prints as 1.00: a tie, not a win; 1.006 prints as 1.01: a win
    tied = [cell("128x128", 32, 1.004), cell("128x128", 64, 0.998), cell("128x128", 1, 0.5)]
    assert verdict(tied) == (
        "2:4 was never faster than dense: slower in 1 of 3 cells, tied (1.00x) in 2"
    )
    assert verdict([*tied, cell("256x256", 64, 1.006)]) == (
        "2:4 faster in 1 of 4 cells, tied (1.00x) in 2, best 1.01x at 256x256 batch 64 float16 "
        "cusparselt; never below batch 64; never on a weight smaller than 256x256"
    )
    assert verdict([]) == "no cell was measured: the notes say why"


def test_rows_hold_one_cell_per_batch_in_measured_order():
    cells = [
        cell("128x128", 1, 0.5),
        cell("128x128", 32, 1.234),
        cell("128x128", 1, 0.25, "cutlass"),
        cell("128x128", 32, 2.0, "cutlass"),
    ]
    assert deploy_semi.rows_of(cells, (1, 32)) == [
        ["128x128", "float16", "cusparselt", "0.50", "1.23"],
        ["128x128", "float16", "cutlass", "0.25", "2.00"],
    ]


# --------------------------------------------------------------------------- layers and checks


def test_the_layer_is_pruned_2_4_by_the_n_m_pruner_with_its_mask_made_permanent():
    model = deploy_semi.two_four_model(64, 128, torch.device("cpu"), torch.float16)
    layer = model[0]
    assert isinstance(layer, nn.Linear) and layer.weight.dtype == torch.float16
    assert not hasattr(layer, "weight_mask") and not layer._forward_pre_hooks
    assert is_nm_sparse(layer.weight) and float((layer.weight == 0).float().mean()) == 0.5
    assert list(prunable_layers(model)) == ["0"] and not model.training


def test_the_check_passes_a_faithful_layer_and_raises_on_a_corrupted_one():
    dense = deploy_semi.two_four_model(64, 128, torch.device("cpu"), torch.bfloat16)
    x = torch.randn(16, 128, dtype=torch.bfloat16)
    assert deploy_semi.check_packed(dense, copy.deepcopy(dense), x, "same") == 0.0
    corrupted = copy.deepcopy(dense)
    with torch.no_grad():
        corrupted[0].weight[0, :].neg_()  # one output row of the kernel wrong
    with pytest.raises(AssertionError, match=r"128x64 bf: .*differs from the dense masked"):
        deploy_semi.check_packed(dense, corrupted, x, "128x64 bf")
    with pytest.raises(AssertionError, match=r"flat: the 2:4 layer returned shape \(1024,\)"):
        deploy_semi.check_packed(dense, nn.Sequential(dense, nn.Flatten(0)), x, "flat")
    with torch.no_grad():
        corrupted[0].bias.fill_(float("nan"))
    with pytest.raises(AssertionError, match=r"by nan of its largest value \(tolerance 5e-02"):
        deploy_semi.check_packed(dense, corrupted, x, "nan")


def test_measure_times_every_cell_and_stops_at_a_wrong_kernel(monkeypatch):
    # the CUDA kernels are replaced by a copy of the dense layer, so the loop runs on CPU
    monkeypatch.setattr(deploy_semi, "packed", lambda model, backend: copy.deepcopy(model))
    run = deploy_semi.Grid(shapes=((32, 64),), batches=(1, 4), dtypes=(), repeats=1, warmup=0)
    cells, worst = deploy_semi.measure(run, ("bfloat16",), BACKENDS, torch.device("cpu"))
    assert worst == 0.0
    assert [(c.layer, c.batch, c.dtype, c.backend) for c in cells] == [
        ("32x64", b, "bfloat16", backend) for backend in BACKENDS for b in (1, 4)
    ]
    assert all(c.ratio > 0 for c in cells)

    def wrong(model, backend):
        bad = copy.deepcopy(model)
        with torch.no_grad():
            bad[0].weight.mul_(2)
        return bad

    monkeypatch.setattr(deploy_semi, "packed", wrong)
    with pytest.raises(AssertionError, match="32x64 batch 1 bfloat16 cusparselt: the 2:4"):
        deploy_semi.measure(run, ("bfloat16",), BACKENDS, torch.device("cpu"))


SM90 = "sparse_semi_structured_mad_op : Supported only on GPUs with compute capability 8.x"


def stub_the_gpu(monkeypatch, cusparselt: bool, cutlass: bool) -> None:
    """Let the GPU table run on CPU: no skip, a named device, dense copies for the 2:4 layers
    (CUTLASS raising what PyTorch's kernels raise on a Hopper GPU when ``cutlass`` is False)."""

    def packed(model, backend):
        if backend == "cutlass" and not cutlass:
            raise RuntimeError(SM90 + "\nmore lines of the error")
        return copy.deepcopy(model)

    monkeypatch.setattr(deploy_semi, "skip_reason", lambda device, dtype: None)
    monkeypatch.setattr(deploy_semi, "packed", packed)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Stub GPU")
    monkeypatch.setattr(torch.backends.cusparselt, "is_available", lambda: cusparselt)
    monkeypatch.setattr(torch.backends.cusparselt, "version", lambda: 801)


@pytest.mark.parametrize(
    ("cusparselt", "cutlass"), [(True, True), (False, True), (True, False), (False, False)]
)
def test_the_table_has_a_row_per_usable_backend_and_the_verdict_under_them(
    monkeypatch, cusparselt, cutlass
):
    stub_the_gpu(monkeypatch, cusparselt, cutlass)
    lines = deploy_semi.semi_table(True, "cpu", "bfloat16").splitlines()
    assert lines[0] == deploy_semi.TITLE
    assert lines[1].split() == ["weight", "dtype", "backend", "batch", "32"]
    backends = [b for b, usable in zip(BACKENDS, (cusparselt, cutlass), strict=True) if usable]
    rows = [re.split(r"\s{2,}", line.strip()) for line in lines[3 : 3 + len(backends)]]
    assert [row[:3] for row in rows] == [["128x128", "bfloat16", b] for b in backends]
    cells = [Cell("128x128", 32, "bfloat16", row[2], float(row[3])) for row in rows]
    assert all(c.ratio > 0 for c in cells)
    notes = lines[3 + len(backends) :]
    assert notes[0] == verdict(cells)  # judged on the printed ratios
    assert "largest difference 0.0e+00 of the output's largest value" in notes[3]
    no_cusparselt = (
        "cusparselt rows left out: this PyTorch build has no cuSPARSELt "
        "(torch.backends.cusparselt.is_available() is False)"
    )
    no_cutlass = f"cutlass rows left out: in bfloat16, RuntimeError: {SM90}"
    left_out = [line for line in notes if "rows left out" in line]
    assert left_out == [
        line for line, ok in ((no_cusparselt, cusparselt), (no_cutlass, cutlass)) if not ok
    ]
    library = "cuSPARSELt 801" if cusparselt else "no cuSPARSELt"
    assert notes[-1].startswith(f"Stub GPU, torch {torch.__version__}, {library}; load average")


def test_a_weight_packed_for_another_backend_is_refused(monkeypatch):
    # a PyTorch that ignored the switch would pack (here: leave) the weight otherwise
    monkeypatch.setattr(deploy_semi, "to_semi_structured", copy.deepcopy)
    dense = deploy_semi.two_four_model(64, 128, torch.device("cpu"), torch.float16)
    with pytest.raises(
        RuntimeError, match="packed the weight for dense, not cutlass: this PyTorch"
    ):
        deploy_semi.packed(dense, "cutlass")


def test_forced_sets_pytorchs_backend_switch_and_restores_it():
    flag = torch.sparse.SparseSemiStructuredTensor
    before = flag._FORCE_CUTLASS
    with deploy_semi.forced("cutlass"):
        assert flag._FORCE_CUTLASS is True
    assert flag._FORCE_CUTLASS is before
    flag._FORCE_CUTLASS = True  # a user's own setting survives a measurement too
    try:
        with deploy_semi.forced("cusparselt"):
            assert flag._FORCE_CUTLASS is False
        assert flag._FORCE_CUTLASS is True
    finally:
        flag._FORCE_CUTLASS = before
    with pytest.raises(ValueError, match="backend 'triton': choose one of cusparselt, cutlass"):
        with deploy_semi.forced("triton"):
            pass


# --------------------------------------------------------------------------- on a GPU


@pytest.mark.cuda
def test_the_quick_grid_on_a_gpu_prints_a_ratio_per_backend_and_a_verdict(capsys):
    deploy_semi.run(quick=True, device="cuda")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == deploy_semi.TITLE and "skipped" not in "\n".join(lines)
    run = deploy_semi.grid(quick=True)
    rows = [re.split(r"\s{2,}", line.strip()) for line in lines[3:]]
    rows = [row for row in rows if len(row) == 3 + len(run.batches) and row[2] in BACKENDS]
    expected = [b for b in BACKENDS if f"{b} rows left out" not in "\n".join(lines)]
    assert expected and [row[:3] for row in rows] == [["128x128", "float16", b] for b in expected]
    assert all(float(ratio) > 0 for row in rows for ratio in row[3:])
    verdict_line = lines[3 + len(rows)]  # the first line under the table
    assert re.fullmatch(r"2:4 (faster in \d+ of \d+ cells|was (slower|never)).*", verdict_line)
    assert torch.cuda.get_device_name() in lines[-1] and torch.__version__ in lines[-1]


@pytest.mark.cuda
def test_packing_follows_the_backend_and_the_check_catches_a_corrupted_packed_weight():
    cuda = torch.device("cuda")
    usable = [b for b in BACKENDS if deploy_semi.backend_problem(b, cuda, ("float16",)) is None]
    assert usable, "neither 2:4 backend runs on this GPU"
    dense = deploy_semi.two_four_model(128, 128, cuda, torch.float16)
    x = torch.randn(32, 128, device=cuda, dtype=torch.float16)
    for backend in usable:
        fast = deploy_semi.packed(dense, backend)
        weight = fast.get_submodule("0").weight
        assert isinstance(weight, torch.sparse.SparseSemiStructuredTensor)
        assert weight.BACKEND == backend
        assert deploy_semi.check_packed(dense, fast, x, backend) <= 1e-2
        # the kept values, sign-flipped (cuSPARSELt stores its metadata after them): a kernel
        # computing the wrong thing
        weight.packed.view(-1)[: weight.numel() // 2].neg_()
        with pytest.raises(AssertionError, match=f"{backend}: the 2:4 layer's output differs"):
            deploy_semi.check_packed(dense, fast, x, backend)
