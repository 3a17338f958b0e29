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
        assert goal == f">= {wanted}" and met == ("yes" if float(ratio) >= wanted else "NO")


def test_d1_in_bfloat16_skips_the_tables_that_take_no_dtype(capsys):
    assert main(["bench", "deploy", "--quick", "--dtype", "bfloat16"]) == 0
    out = capsys.readouterr().out
    assert "D1  structured pruning, CPU latency, same deployment" in out and "bfloat16" in out
    assert "(deploy_quantize skipped: it does not take --dtype)" in out
    assert "(deploy_sparse skipped: it does not take --dtype)" in out
    with pytest.raises(ValueError, match="dtype 'int4': choose one of float32, bfloat16"):
        deploy_speed.speed_table(True, dtype="int4")


@pytest.mark.cuda
def test_d1_on_a_gpu(capsys):
    deploy_speed.run(quick=True, device="cuda", dtype="bfloat16")
    out = capsys.readouterr().out
    assert "GPU latency" in out and torch.cuda.get_device_name() in out
