"""`pruneplug bench augment --quick`: runs every row and prints the table and the verdicts."""

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
    assert "target >= 1.5 x kornia" in out and "target >= 1 x torchvision v2 whole batch" in out


def test_table_ratios_verdicts_and_missing_anchors():
    rates = {
        "pruneplug": [30.0, 20.0, 25.0],
        "torchvision v2 whole batch": [25.0, 25.0, 25.0],
    }
    text = augment.table(rates, {"kornia": "kornia (pip install pruneplug[bench])"})
    lines = {line.split("  ")[0].strip(): line for line in text.splitlines()}
    assert "25" in lines["pruneplug"] and "20-30" in lines["pruneplug"]
    assert "not installed: kornia" in text
    assert "target >= 1 x torchvision v2 whole batch: 1.00 x, met" in text
    assert "x kornia:" not in text  # no verdict without the anchor


def test_every_pipeline_keeps_the_batch_shape():
    images = torch.rand(4, 3, 32, 32)
    for name, (factory, _) in augment.ROWS.items():
        out = factory()(images)
        assert out.shape == images.shape and out.dtype == images.dtype, name
