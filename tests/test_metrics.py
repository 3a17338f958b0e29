"""Metrics against hand-computed counts: parameters, sparsity, MACs; latency; the report."""

import pytest
import torch
from torch import nn
from torch.nn.utils import prune
from torch.utils.data import TensorDataset

from pruneplug import metrics


def masked_mlp() -> nn.Sequential:
    """Linear(4, 5) with 10 of its 20 weights masked, then Linear(5, 2) dense; no zero values."""
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.rand(p.shape) + 0.1)  # strictly positive: no accidental zeros
    mask = torch.zeros(20)
    mask[::2] = 1
    prune.custom_from_mask(model[0], "weight", mask.view(5, 4))
    return model


def test_linear_macs_per_sample_and_per_batch() -> None:
    layer = nn.Linear(3, 4)
    assert metrics.macs(layer, torch.randn(1, 3)) == 12  # 3 inputs x 4 outputs
    assert metrics.macs(layer, torch.randn(5, 3)) == 60


def test_conv_macs_dense_and_depthwise() -> None:
    # out 3 channels x 3x3 positions x (2 in-channels x 3x3 kernel) = 3 * 9 * 18
    assert metrics.macs(nn.Conv2d(2, 3, 3), torch.randn(1, 2, 5, 5)) == 486
    # depthwise: 4 channels x 3x3 positions x (1 x 3x3 kernel)
    assert metrics.macs(nn.Conv2d(4, 4, 3, groups=4), torch.randn(1, 4, 5, 5)) == 324


def test_macs_runs_in_eval_mode_and_restores_it() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.Flatten())
    model.train()
    stats = model[1].running_mean.clone()
    metrics.macs(model, torch.randn(2, 1, 4, 4))
    assert torch.equal(model[1].running_mean, stats)  # an eval forward leaves the BN stats
    assert model.training and model[1].training
    model.eval()
    metrics.macs(model, torch.randn(2, 1, 4, 4))
    assert not model.training


def test_attention_and_recurrent_layers_are_counted_in_full() -> None:
    length, d, ff = 10, 16, 64
    layer = nn.TransformerEncoderLayer(d, nhead=2, dim_feedforward=ff, batch_first=True)
    encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
    # per layer: the q, k, v and output projections, the scores and their weighted sum, the MLP
    per_layer = length * d * 3 * d + 2 * length * length * d + length * d * d + 2 * length * d * ff
    assert metrics.macs(encoder, torch.rand(1, length, d)) == 2 * per_layer
    lstm = nn.LSTM(8, 32, batch_first=True)
    assert metrics.macs(lstm, torch.rand(1, length, 8)) == length * 4 * 32 * (8 + 32)
    gru = nn.GRU(8, 32, batch_first=True)
    assert metrics.macs(gru, torch.rand(1, length, 8)) == length * 3 * 32 * (8 + 32)
    # the fused paths are back afterwards
    assert torch.backends.mha.get_fastpath_enabled() and torch.backends.mkldnn.enabled


def test_count_parameters_counts_masked_weights_once() -> None:
    layer = nn.Linear(3, 4)
    with torch.no_grad():
        layer.weight.fill_(1.0)
        layer.bias.copy_(torch.tensor([0.0, 1.0, 1.0, 1.0]))
    assert metrics.count_parameters(layer) == {"total": 16, "nonzero": 15}
    model = masked_mlp()  # 20 + 5 + 10 + 2 = 37 parameters, 10 weights masked
    assert metrics.count_parameters(model) == {"total": 37, "nonzero": 27}


def test_sparsity_per_layer_and_global() -> None:
    model = masked_mlp()
    assert metrics.layer_sparsity(model) == {"0": 0.5, "2": 0.0}
    assert metrics.global_sparsity(model) == pytest.approx(10 / 30)
    with torch.no_grad():  # the current weights count, not the pre-hook's copy of the last forward
        model[2].weight[0].zero_()
    assert metrics.global_sparsity(model) == pytest.approx(15 / 30)
    with pytest.raises(ValueError, match="no prunable layers"):
        metrics.layer_sparsity(nn.Sequential(nn.ReLU()))


def test_latency_times_repeats_in_inference_mode_and_restores_mode() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5))
    modes = []
    model.register_forward_hook(
        lambda m, i, o: modes.append((torch.is_inference_mode_enabled(), m.training))
    )
    model.train()
    seconds = metrics.latency(model, torch.randn(1, 3), repeats=5, warmup=2)
    assert 0 < seconds < 1
    assert modes == [(True, False)] * 7
    assert model.training
    with pytest.raises(ValueError, match="repeats=0"):
        metrics.latency(model, torch.randn(1, 3), repeats=0)


def test_compare_report_text_and_html() -> None:
    torch.manual_seed(0)
    before = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    after = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 2))  # "shrunk" hidden layer
    x = torch.randn(1, 3)
    data = TensorDataset(torch.randn(10, 3), torch.zeros(10, dtype=torch.long))
    report = metrics.compare(before, after, x, data=data, latency=False)
    assert report["parameters"] == (26, 14)
    assert report["macs"] == (20, 10)
    lines = str(report).splitlines()
    assert lines[:6] == [
        "metric               before  after  after / before",
        "-------------------  ------  -----  --------------",
        "parameters               26     14           0.538",
        "non-zero parameters      26     14           0.538",
        "global sparsity       0.00%  0.00%               -",
        "MACs                     20     10           0.500",
    ]
    assert lines[6].startswith("accuracy") and len(lines) == 7
    page = report._repr_html_()
    assert page.startswith("<table>") and page.count("<tr>") == 6
    assert '<td style="text-align:left">non-zero parameters</td>' in page

    timed = metrics.compare(before, after, x)
    assert list(timed.rows) == ["parameters", "nonzero", "sparsity", "macs", "latency_ms"]
    assert "latency (ms)" in str(timed)


def test_summary_of_a_masked_model() -> None:
    result = metrics.summary(masked_mlp(), torch.randn(1, 4), latency=False)
    assert result == {"parameters": 37, "nonzero": 27, "sparsity": pytest.approx(1 / 3), "macs": 30}


def test_interleaved_latency_times_modules_in_eval_mode_and_leaves_them_as_they_were() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)).train()
    stats = model[1].running_mean.clone()
    times = metrics.interleaved_latency({"m": (model, torch.randn(8, 4))}, repeats=2, warmup=1)
    assert times["m"] > 0 and model.training and torch.equal(model[1].running_mean, stats)
    with pytest.raises(ValueError, match="repeats=0: give a whole number >= 1"):
        metrics.interleaved_latency({"m": (model, torch.randn(8, 4))}, repeats=0)


@pytest.mark.parametrize(
    "b, amount, problem",
    [
        (torch.arange(5.0), 0.3, "got 10 and 5 scores"),
        (torch.arange(10.0), 1.5, r"amount=1.5: give the fraction pruned, in \(0, 1\]"),
        (torch.arange(10.0), 0, "amount=0"),
        (torch.arange(10.0), True, "amount=True"),
    ],
)
def test_pruned_overlap_refuses_what_it_cannot_compare(b, amount, problem) -> None:
    with pytest.raises(ValueError, match=problem):
        metrics.pruned_overlap(torch.arange(10.0), b, amount)


def test_interleaved_latency_gives_a_module_its_input_where_it_is() -> None:
    elsewhere = nn.Linear(4, 2).to("meta")  # stands for a GPU: another device than the input's
    times = metrics.interleaved_latency({"m": (elsewhere, torch.randn(3, 4))}, repeats=1, warmup=0)
    assert times["m"] > 0


@pytest.mark.cuda
def test_a_model_on_the_gpu_is_timed_and_run_on_cpu_inputs() -> None:
    from pruneplug.inference import predict

    model = nn.Linear(4, 2).cuda()
    x = torch.randn(5, 4)
    assert metrics.interleaved_latency({"m": (model, x)}, repeats=1, warmup=0)["m"] > 0
    out = predict(model, x, batch_size=4)
    assert out.device == x.device and torch.allclose(out, model.cpu()(x), atol=1e-5)
