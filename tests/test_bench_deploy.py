"""`pruneplug bench deploy`: the quick run's tables (structure and arithmetic, never timings)."""

from __future__ import annotations

import re

import pytest
import torch

from pruneplug.benchmarks import deploy_speed
from pruneplug.cli import main


def cells(out: str, first: str) -> list[list[str]]:
    """The rows of a printed table whose lines contain ``first``, split into cells."""
    return [re.split(r"\s{2,}", line.strip()) for line in out.splitlines() if first in line]


def test_d1_sets_pruning_speed_up_beside_its_macs_reduction(capsys):
    deploy_speed.run(quick=True)
    out = capsys.readouterr().out
    assert out.startswith("D1  structured pruning, CPU latency, same deployment")
    assert "D1b" not in out  # the widths table is for tensor cores: printed on a GPU only
    rows = [row for row in cells(out, "x") if len(row) == 10 and row[1].endswith("%")]
    assert [(row[0].split()[0], row[1]) for row in rows] == [
        ("reference", "50%"),
        ("reference", "75%"),
        ("ResNet-18", "50%"),
        ("ResNet-18", "75%"),
    ]
    for _, removed, dense_ms, reduction, speedup, ratio, goal, met, tp, deployed in rows:
        assert float(dense_ms) > 0 and float(tp[:-1]) > 0 and float(deployed[:-1]) > 0
        # the MACs reduction is printed to 0.1: the ratio agrees within that rounding
        assert float(ratio) == pytest.approx(float(speedup[:-1]) / float(reduction[:-1]), rel=0.05)
        wanted = deploy_speed.GOALS[int(removed[:-1]) / 100]
        # the goal is judged on the printed ratio, so the row never contradicts itself
        assert goal == f">= {wanted}" and met == ("yes" if float(ratio) >= wanted else "NO")


def test_d1_in_bfloat16_skips_the_tables_that_take_no_dtype(capsys):
    assert main(["bench", "deploy", "--quick", "--dtype", "bfloat16"]) == 0
    out = capsys.readouterr().out
    assert "D1  structured pruning, CPU latency, same deployment" in out and "bfloat16" in out
    assert "(deploy_quantize skipped: it does not take --dtype)" in out
    assert "(deploy_sparse skipped: it does not take --dtype)" in out
    with pytest.raises(ValueError, match="dtype 'int4': choose one of float32, bfloat16"):
        deploy_speed.speed_table(True, dtype="int4")


def check_widths_rows(out: str) -> None:
    """D1b's rows: every round_to once per amount, the widths' divisor a multiple of the
    largest round_to giving them, fewer MACs removed as round_to grows, ratio = speed-up / red."""
    rows = [row for row in cells(out, "x") if len(row) == 9 and row[1].endswith("%")]
    assert sorted({row[1] for row in rows}) == ["50%", "60%", "75%"]
    for amount in ("50%", "60%", "75%"):
        mine = [row for row in rows if row[1] == amount]
        round_tos = [[int(r) for r in row[2].split("/")] for row in mine]
        assert sum(round_tos, []) == list(deploy_speed.ROUND_TOS)
        reductions = [float(row[6][:-1]) for row in mine]
        assert reductions == sorted(reductions, reverse=True) and len(set(reductions)) == len(mine)
        for row, values in zip(mine, round_tos, strict=True):
            assert int(row[3]) % max(values) == 0
            assert float(row[4]) > 0 and float(row[5]) > 0
            speedup = float(row[7][:-1])
            assert speedup == pytest.approx(float(row[4]) / float(row[5]), rel=0.02, abs=0.01)
            assert float(row[8]) == pytest.approx(speedup / float(row[6][:-1]), rel=0.05)
    # ResNet-18's widths are powers of two: at 50 % they stay multiples of 32, at 60 % of 1
    assert [row[2:4] for row in rows if row[1] == "50%"] == [["1/8/16/32", "32"], ["64", "64"]]
    assert [row[2:4] for row in rows if row[1] == "60%"][0] == ["1", "1"]


def test_d1b_times_each_distinct_set_of_widths_once():
    out = deploy_speed.widths_table(quick=True)
    assert out.startswith("D1b  widths on CPU: structured pruning with round_to")
    check_widths_rows(out)


def test_a_failed_cuda_graph_capture_is_reported_not_fatal(monkeypatch):
    runs = {name: (torch.nn.Identity(), torch.ones(1)) for name in ("dense", "ours", "TP")}
    monkeypatch.setattr(deploy_speed, "cuda_graphed", lambda model, x: model)
    assert deploy_speed.capture_graphs(runs, "case")
    assert list(runs) == ["dense", "ours", "TP", "dense graphed", "ours graphed"]

    def fails(model, x):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(deploy_speed, "cuda_graphed", fails)
    runs = {name: (torch.nn.Identity(), torch.ones(1)) for name in ("dense", "ours")}
    with pytest.warns(UserWarning, match="ResNet 50 %: CUDA graph capture failed: operation not"):
        assert not deploy_speed.capture_graphs(runs, "ResNet 50 %")
    assert list(runs) == ["dense", "ours"]  # nothing half-added: the table says "failed"


@pytest.mark.cuda
def test_d1_on_a_gpu(capsys):
    deploy_speed.run(quick=True, device="cuda", dtype="bfloat16")
    out = capsys.readouterr().out
    assert "GPU latency" in out and torch.cuda.get_device_name() in out
    d1 = [row for row in cells(out[: out.index("D1b")], "x") if len(row) > 1 and row[1][-1] == "%"]
    assert d1 and all(len(row) == 11 for row in d1), out
    for row in d1:  # the CUDA-graphed speed-up and its ratio to the MACs reduction
        speedup, ratio = re.fullmatch(r"(\d+\.\d\d)x \((\d+\.\d\d)\)", row[-1]).groups()
        assert float(ratio) == pytest.approx(float(speedup) / float(row[3][:-1]), rel=0.05)
    assert "D1b  widths on GPU tensor cores" in out and "bfloat16" in out
    check_widths_rows(out[out.index("D1b") :])
