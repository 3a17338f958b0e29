"""Structured pruner on models that take token ids: traced with ids, heads and hidden units go."""

import pytest
import torch
from pruneplug_plugins.structured.examples import Example, example_input, parse_example
from torch import nn

import pruneplug
from pruneplug import ParamError, Scores, models

VOCAB = 30


def structured(**params):
    return pruneplug.get_pruner("structured", **params)


def padded_ids() -> torch.Tensor:
    """Three right-padded rows of different lengths (0 is padding)."""
    return torch.tensor([[5, 6, 7, 0, 0, 0], [8, 9, 10, 11, 12, 13], [14, 0, 0, 0, 0, 0]])


def more_padding(ids: torch.Tensor) -> torch.Tensor:
    return torch.cat([ids, torch.zeros(len(ids), 4, dtype=ids.dtype)], 1)


def stream_ranked(model: nn.Module) -> Scores:
    """Scores of the MLP outputs writing the stream rising with the channel: head 0 is the
    lowest, then head 1; no other layer is scored, so only heads go."""
    return Scores(
        unit={
            f"encoder.layers.{i}.linear2": torch.arange(32.0)
            for i in range(len(model.encoder.layers))
        }
    )


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("positions", ["sinusoidal", "learned"])
@pytest.mark.parametrize(("amount", "heads_left"), [(0.25, 3), (0.5, 2)])
def test_transformer_classifier_loses_whole_heads_with_their_stream_channels(
    positions, amount, heads_left
):
    model = models.transformer_classifier(VOCAB, positions=positions, max_len=12).eval()
    before = state(model)
    rng = torch.random.get_rng_state()
    pruned = structured()(model, stream_ranked(model), amount=amount).eval()
    assert torch.equal(torch.random.get_rng_state(), rng)  # the token example has its own RNG
    width = 8 * heads_left
    kept = torch.arange(32 - width, 32)  # the lowest heads went: channels 0..31 - width
    assert pruned.embedding.weight.equal(model.embedding.weight[:, kept])
    assert pruned.embedding.embedding_dim == width
    assert pruned.positions.equal(model.positions[:, kept])
    # the fixed sinusoidal table stays a (saved) buffer, the learned one a parameter
    assert ("positions" in dict(pruned.named_buffers())) == (positions == "sinusoidal")
    assert "positions" in pruned.state_dict()
    for layer, original in zip(pruned.encoder.layers, model.encoder.layers, strict=True):
        attn = layer.self_attn
        assert (attn.num_heads, attn.head_dim, attn.embed_dim) == (heads_left, 8, width)
        rows = torch.cat([kept + 32 * i for i in range(3)])  # q, k and v rows of the heads kept
        assert attn.in_proj_weight.equal(original.self_attn.in_proj_weight[rows][:, kept])
        assert layer.linear1.weight.equal(original.linear1.weight[:, kept])  # 64 units kept
        assert layer.linear2.weight.equal(original.linear2.weight[kept])
    assert pruned.classifier.in_features == width
    ids = padded_ids()
    with torch.no_grad():
        logits = pruned(ids)
        assert logits.shape == (3, 2)
        assert torch.allclose(pruned(more_padding(ids)), logits, atol=1e-5)
    pruned.train()(ids).sum().backward()  # it trains, too
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert [layer.self_attn.num_heads for layer in model.encoder.layers] == [4, 4]
    assert isinstance(model.positions, nn.Parameter) == (positions == "learned")


def test_transformer_classifier_at_amount_zero_computes_the_same_outputs():
    model = models.transformer_classifier(VOCAB, max_len=12).eval()
    scores = pruneplug.get_scorer("magnitude")(model)
    same = structured()(model, scores, amount=0.0).eval()
    with torch.no_grad():
        assert torch.equal(same(padded_ids()), model(padded_ids()))


def test_transformer_classifier_with_data_scores_loses_heads_and_mlp_units():
    model = models.transformer_classifier(VOCAB, max_len=12).eval()
    ids = padded_ids()
    batches = [(ids, torch.tensor([0, 1, 0]))]
    for scorer in ("head_importance", "taylor"):
        scores = pruneplug.get_scorer(scorer)(model, batches)
        pruned = structured()(model, scores, amount=0.5).eval()
        assert [layer.self_attn.num_heads for layer in pruned.encoder.layers] == [2, 2]
        assert [layer.linear1.out_features for layer in pruned.encoder.layers] == [32, 32]
        with torch.no_grad():
            assert pruned(ids).shape == (3, 2)


@pytest.mark.parametrize("amount", [0.25, 0.5])
def test_lstm_classifier_loses_hidden_units_and_keeps_its_embedding(amount):
    model = models.lstm_classifier(VOCAB).eval()
    before = state(model)
    scores = pruneplug.get_scorer("magnitude")(model)
    pruned = structured()(model, scores, amount=amount).eval()
    hidden = 64 - round(amount * 64)
    assert (pruned.lstm.hidden_size, pruned.lstm.input_size) == (hidden, 32)
    assert pruned.lstm.weight_hh_l0.shape == (4 * hidden, hidden)
    assert pruned.classifier.in_features == hidden
    assert pruned.embedding.weight.equal(model.embedding.weight)  # no scored layer writes it
    ids = padded_ids()
    with torch.no_grad():
        logits = pruned(ids)
        assert logits.shape == (3, 2)
        assert torch.allclose(pruned(more_padding(ids)), logits, atol=1e-6)
        same = structured()(model, scores, amount=0.0).eval()
        assert torch.equal(same(ids), model(ids))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert model.lstm.hidden_size == 64


def test_example_shape_takes_a_token_dtype_prefix():
    assert parse_example("") == Example()
    assert parse_example("3x32x32") == Example(shape=(3, 32, 32))
    assert parse_example("int64:16") == Example(torch.int64, (16,))
    assert parse_example(" int32 : 8 ") == Example(torch.int32, (8,))
    assert parse_example("int64") == Example(torch.int64)
    with pytest.raises(ParamError, match="dtype prefix 'float16'.*int64 or int32"):
        structured(example_shape="float16:3x8")
    with pytest.raises(ParamError, match="example_shape='int64:ten'.*'int64:16'"):
        structured(example_shape="int64:ten")
    model = models.transformer_classifier(VOCAB, max_len=12).eval()
    scores = Scores(unit=stream_ranked(model).unit)
    for text in ("int64:7", "int32:7", "int64"):
        pruned = structured(example_shape=text)(model, scores, amount=0.5)
        assert pruned.encoder.layers[0].self_attn.num_heads == 2
    with pytest.raises(ValueError, match="torch.int64 token ids of shape 13 .*max_len=12"):
        structured(example_shape="int64:13")(model, scores, amount=0.5)
    mlp = models.mlp()
    with pytest.raises(ValueError, match="has no nn.Embedding.*example_shape='3x32x32'"):
        structured(example_shape="int64:8")(mlp, pruneplug.get_scorer("magnitude")(mlp), amount=0.5)


def test_inferred_token_ids_are_valid_and_as_long_as_the_positions():
    model = models.transformer_classifier(VOCAB, max_len=5).eval()  # 16 ids would not run
    x = example_input(model, Example())
    assert x.dtype == torch.int64 and x.shape == (1, 5)
    embedding = nn.Embedding(5, 4, padding_idx=3)
    sequence = nn.Sequential(embedding, nn.Flatten(), nn.Linear(4 * 16, 2))
    ids = example_input(sequence, Example())
    assert ids.shape == (1, 16) and set(ids.flatten().tolist()) <= {0, 1, 2, 4}
    assert example_input(sequence, Example(torch.int32)).dtype == torch.int32
