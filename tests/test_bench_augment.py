"""`pruneplug bench augment --quick`: runs every row and prints the table and the verdicts."""

import importlib.util
import mmap
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pruneplug.benchmarks import augment
from pruneplug.cli import main


def test_quick_benchmark_prints_every_row(capsys):
    threads = torch.get_num_threads()
    assert main(["bench", "augment", "--quick"]) == 0
    out = capsys.readouterr().out
    assert torch.get_num_threads() == threads, "the benchmark must restore the thread count"
    assert "32 x 3 x 32 x 32, 2 threads" in out
    for row in augment.ROWS:
        assert row in out
    assert "ONE draw for the whole batch" in out
    header = next(line for line in out.splitlines() if line.startswith("library"))
    assert header.split()[-4:] == ["kernels", "syncs", "faults", "parameters"]
    assert "target >= 1.5 x kornia" in out and "target >= 1 x torchvision v2 whole batch" in out


def test_table_ratios_verdicts_and_missing_anchors():
    rates = {
        "pruneplug": [30.0, 20.0, 25.0],
        "torchvision v2 whole batch": [25.0, 25.0, 25.0],
    }
    text = augment.table(rates, {"kornia": "not installed: kornia (pip install pruneplug[bench])"})
    lines = {line.split("  ")[0].strip(): line for line in text.splitlines()}
    assert "25" in lines["pruneplug"] and "20-30" in lines["pruneplug"]
    assert "not installed: kornia" in text
    assert "target >= 1 x torchvision v2 whole batch: 1.00 x, met" in text
    assert "x kornia:" not in text  # no verdict without the anchor


def test_every_pipeline_keeps_the_batch_shape():
    images = torch.rand(4, 3, 32, 32)
    for name, (factory, _) in augment.ROWS.items():
        out = factory(32, "cpu")(images)
        assert out.shape == images.shape and out.dtype == images.dtype, name


def test_size_batch_and_the_roofline_column(capsys):
    assert main(["bench", "augment", "--quick", "--size", "16", "--batch", "8"]) == 0
    out = capsys.readouterr().out
    assert "batch 8 x 3 x 16 x 16" in out and "copy bandwidth" in out and "% copy bw" in out
    row = next(line for line in out.splitlines() if line.startswith("pruneplug "))
    rate, roof = float(row.split()[2]), float(row.split()[6])
    bandwidth = float(out.split("copy bandwidth ")[1].split(" GB/s")[0]) * 1e9
    # the row's traffic (one read, one write of 3 x 16 x 16 float32 per image) over the copy's
    assert roof == pytest.approx(100 * rate * 2 * 4 * 3 * 16 * 16 / bandwidth, rel=0.05, abs=0.01)


def test_roofline_is_traffic_over_copy_bandwidth():
    text = augment.table({"pruneplug": [1000.0]}, {}, bytes_per_image=1_000, bandwidth=4e6)
    assert "50.00" in text  # 1000 img/s x 2 x 1000 bytes / 4 MB/s


def test_page_faults_count_the_pages_a_call_touches_first():
    pytest.importorskip("resource", reason="getrusage: not on Windows")
    pages = 256

    def touch_fresh_pages(x: torch.Tensor) -> torch.Tensor:
        fresh = mmap.mmap(-1, pages * mmap.PAGESIZE)  # mapped anew, so never touched before
        for page in range(pages):
            fresh[page * mmap.PAGESIZE] = 1
        fresh.close()
        return x

    assert augment.page_faults(touch_fresh_pages, torch.rand(2)) >= pages
    assert augment.page_faults(lambda x: x + 1, torch.rand(2)) < pages / 4
    text = augment.table({"pruneplug": [10.0]}, {}, faults={"pruneplug": 3616.0})
    assert text.splitlines()[1].split()[-4:] == ["-", "3616", "per", "sample"]


def test_options_a_benchmark_does_not_take_are_refused(capsys):
    assert main(["bench", "widgets", "--quick", "--size", "64"]) == 2
    assert "does not take --size; augment does" in capsys.readouterr().err
    with pytest.raises(ValueError, match="size=0"):
        augment.run(quick=True, size=0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without a GPU")
def test_cuda_without_a_gpu_is_refused():
    with pytest.raises(ValueError, match="no CUDA device here"):
        augment.run(quick=True, device="cuda", size=8, batch=4)


@pytest.mark.cuda
def test_the_quick_benchmark_runs_on_a_gpu(capsys):
    assert main(["bench", "augment", "--quick", "--device", "cuda", "--size", "64"]) == 0
    out = capsys.readouterr().out
    assert torch.cuda.get_device_name() in out and "albumentations" in out
    assert "CPU only" in out  # albumentations is reported, not run


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_the_kernel_variants_of_tools_gpu_kernels_equal_the_library(device):
    """tools/gpu-check times these variants to choose kernels: each must compute the same.

    The Triton kernels run on CPU under Triton's interpreter, where Triton is installed (with
    PyTorch's CUDA builds): slow, but the same program, checked against the library."""
    script = Path(__file__).resolve().parent.parent / "tools" / "gpu_kernels.py"
    triton = importlib.util.find_spec("triton") is not None
    done = subprocess.run(
        [sys.executable, str(script), "--quick", "--device", device],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "TRITON_INTERPRET": "1" if device == "cpu" else "0"},
    )
    lines = done.stdout.splitlines()
    # the sync-free apply (what CUDA graphs and a whole-graph compile need) reads the device never
    assert re.fullmatch(
        r"apply only: library \d+ kernels and [1-9]\d* syncs; sync-free \d+ "
        r"kernels and 0 syncs",
        lines[1],
    ), done.stdout
    assert lines[2].startswith("parameters drawn by a CPU generator: "), done.stdout
    assert lines[3].startswith("pipeline on 1 image: ") and "kernels and" in lines[3]
    assert lines[4].split() == ["pass", "variant", "ms", "GB/s", "%", "copy", "max", "|diff|"]
    rows = [line.split() for line in lines[5:]]
    variants = {" ".join(row[1:-4]): row for row in rows}
    assert set(variants) == {
        "bmm (library)",
        "baddbmm (library)",
        "broadcast sum",
        "addcmul per channel",
        "grouped conv2d (library)",
        "separable, 2 grouped convs",
        "eager (library)",
        "apply only, eager",
        "apply only, sync-free",
        *(["sync-free, CUDA graph"] if device == "cuda" else []),  # a capture that fails fails
        *(["apply only, Triton fused"] if triton else []),
    }, done.stdout
    for row in rows:
        assert float(row[-4]) > 0 and float(row[-1]) < 1e-4, row  # time, max |diff|


def test_the_triton_kernels_compile_for_a_hopper_gpu_without_one(tmp_path, monkeypatch):
    """Triton's interpreter (above) accepts programs its compiler refuses: compile the kernels of
    tools/triton_fused.py to a cubin for sm_90 (an H100 / H200), as a GPU session would."""
    triton = pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path))  # compiled, not read from a cache
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
    try:
        import triton_fused
    finally:
        sys.path.pop(0)
    ints = {"h": "i32", "w": "i32"}
    pointers = dict.fromkeys(("src", "matrix"), "*fp32") | {"exact_flags": "*i32"}
    kernels = {
        triton_fused._warped_sums: (
            pointers | {"sums": "*fp32"} | ints | {"blocks": "i32"},
            {"BLOCK": 256},
        ),
        triton_fused._warp_colour_blur: (
            pointers | dict.fromkeys(("dst", "colour", "offset", "kernels"), "*fp32") | ints,
            {"K": 3, "REFLECT": True, "BLOCK": 256},
        ),
    }
    for kernel, (signature, constants) in kernels.items():
        source = ASTSource(
            kernel, signature | dict.fromkeys(constants, "constexpr"), constexprs=constants
        )
        compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32))
        assert len(compiled.asm["cubin"]) > 1000, kernel


def test_dispatch_counts_kernels_and_host_reads_not_views():
    def fn(t: torch.Tensor) -> torch.Tensor:
        flat = t.view(-1).unsqueeze(0)  # views: no kernel
        y = flat * 2 + 1  # mul, add
        if bool(y.sum() > 0):  # sum, gt, then a host read
            y = y.clamp(0, 2)  # clamp
        return y

    assert augment.dispatch_counts(fn, torch.rand(4, 3)) == (5, 1)
    # a blocking copy between the CPU and another device (here "meta") waits for the device
    copied = augment.DispatchCount.blocking_host_copy
    meta, cpu = torch.empty(3, device="meta"), torch.empty(3)
    to_copy, copy_ = torch.ops.aten._to_copy.default, torch.ops.aten.copy_.default
    assert copied(copy_, (cpu, meta, False), {}, cpu) and copied(to_copy, (cpu,), {}, meta)
    assert not copied(to_copy, (meta,), {"non_blocking": True}, cpu)
    assert not copied(copy_, (cpu, torch.empty(3), False), {}, cpu)  # host to host
    pipeline = augment.pruneplug_pipeline(8)
    # the same operators whatever the batch: what a call costs in launches, not in bytes
    assert augment.dispatch_counts(pipeline, torch.rand(4, 3, 8, 8)) == augment.dispatch_counts(
        pipeline, torch.rand(64, 3, 8, 8)
    )
