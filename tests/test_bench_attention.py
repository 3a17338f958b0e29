"""`pruneplug bench attention`: the quick table's structure and arithmetic (never accuracies),
and the anchor's whole-head removal."""

from __future__ import annotations

import re

import pytest
import torch

from pruneplug import models, sequences
from pruneplug.benchmarks import pruning_attention as bench


def cells(out: str) -> list[list[str]]:
    """The rows of the printed table (lines starting with 'N of 4'), split into cells."""
    rows = [line.strip() for line in out.splitlines() if re.match(r"\s*\d of 4\s", line)]
    return [re.split(r"\s{2,}", row) for row in rows]


def parameters(vocab: int, width: int, mlp: int = 64, layers: int = 2, classes: int = 2) -> int:
    """transformer_classifier's parameter count for a stream of ``width`` (sinusoidal positions
    are a buffer): embedding; per layer in_proj, out_proj, the MLP and two norms; the final
    norm; the classifier."""
    per_layer = 3 * width * (width + 1) + width * (width + 1) + 2 * mlp * width + mlp + width
    return vocab * width + layers * (per_layer + 4 * width) + 2 * width + classes * (width + 1)


def test_the_quick_table_has_a_column_pair_per_method_and_consistent_widths(capsys):
    bench.run(quick=True)
    out = capsys.readouterr().out
    assert out.startswith("A1  attention heads removed, transformer_classifier on reviews")
    lines = out.splitlines()
    header = re.split(r"\s{2,}", lines[1].strip())
    assert header[:3] == ["heads removed", "stream", "params"]
    assert header[3:] == [f"{m}{phase}" for m in bench.METHODS for phase in ("", " +rec")]
    assert list(bench.METHODS) == [
        "ours head_importance",
        "ours magnitude",
        "ours taylor",
        "ours I_h",
        "TP magnitude",
        "TP taylor",
    ]
    rows = cells(out)
    assert [row[0] for row in rows] == [f"{k} of 4" for k in bench.REMOVED]
    vocab = len(sequences.load_reviews(sizes=bench.budget(True).sizes).vocab)
    for heads, (_, stream, params, *accuracies) in zip(bench.REMOVED, rows, strict=True):
        assert int(stream) == 8 * (4 - heads)  # each head takes 8 channels of the stream
        assert int(params.replace(",", "")) == parameters(vocab, int(stream))
        assert len(accuracies) == 2 * len(bench.METHODS)
        assert all(0 <= float(a) <= 100 for a in accuracies)
    before, after = rows[0][3::2], rows[0][4::2]  # 0 heads: every method is the dense model
    assert len(set(before)) == 1 and len(set(after)) == 1
    notes = "\n".join(lines[2 + 1 + len(rows) :])
    for name in ("ours X", "ours I_h", "TP X", "'+rec'", "mean of 1 seed(s)", "stream:"):
        assert name in notes


@pytest.mark.parametrize("heads", [1, 3])
def test_the_anchor_removes_whole_heads_like_ours(heads):
    """Torch-Pruning, adjusted for nn.MultiheadAttention, leaves whole heads of the original
    weights (not the same channels regrouped into 4 smaller heads), like pruneplug's pruner."""
    dense = models.transformer_classifier(20, max_len=6).eval()
    ids = torch.tensor([[3, 4, 5, 0, 0, 0], [6, 7, 8, 9, 10, 11]])
    batches = [(ids, torch.tensor([0, 1]))]
    theirs = bench.torch_pruning("magnitude", dense, heads, batches).eval()
    ours = bench.ours("magnitude", dense, heads, batches).eval()
    assert bench.shapes(theirs) == bench.shapes(ours)
    # the stream channels kept, found from the embedding's columns: whole heads of 8
    columns = dense.embedding.weight[1:].T
    kept = [int((columns == c).all(1).nonzero()) for c in theirs.embedding.weight[1:].T]
    assert kept == sorted(kept) and len(kept) == 8 * (4 - heads)
    assert all(kept[i] % 8 == 0 and kept[i + 7] == kept[i] + 7 for i in range(0, len(kept), 8))
    index = torch.tensor(kept)
    rows = torch.cat([index + 32 * i for i in range(3)])
    for layer, original in zip(theirs.encoder.layers, dense.encoder.layers, strict=True):
        attn = layer.self_attn
        assert (attn.num_heads, attn.head_dim) == (4 - heads, 8)
        assert attn.in_proj_weight.equal(original.self_attn.in_proj_weight[rows][:, index])
        assert attn.out_proj.weight.equal(original.self_attn.out_proj.weight[index][:, index])
        assert layer.linear1.out_features == 64
    assert theirs.positions.equal(dense.positions[:, index])
    assert "positions" in dict(theirs.named_buffers())
    with torch.no_grad():
        assert theirs(ids).shape == ours(ids).shape == (2, 2)
    assert dense.encoder.layers[0].self_attn.num_heads == 4
