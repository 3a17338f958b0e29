"""Tokenizer and vocabulary: splitting, building, round trips, unknown words, padding, files."""

import json

import numpy as np
import pytest
import torch

from pruneplug.tokens import PAD, UNK, Vocabulary, tokenize


def test_tokenize_lower_cases_and_splits_off_punctuation():
    assert tokenize("The film was GOOD, wasn't it?") == [
        "the", "film", "was", "good", ",", "wasn't", "it", "?"
    ]  # fmt: skip
    assert tokenize("  ") == []
    assert tokenize("snake_case") == ["snake", "_", "case"]
    with pytest.raises(TypeError, match="a text must be a str, got int"):
        tokenize(3)


def test_build_orders_by_count_then_alphabet_and_starts_with_the_specials():
    vocab = Vocabulary.build(["b a c", "a b", "a"])
    assert vocab.tokens == [PAD, UNK, "a", "b", "c"]
    assert vocab.ids[PAD] == 0 and vocab.ids[UNK] == 1 and len(vocab) == 5
    assert "a" in vocab and "z" not in vocab


def test_min_count_and_max_size():
    texts = ["a a a b b c", "d"]
    assert Vocabulary.build(texts, min_count=2).tokens == [PAD, UNK, "a", "b"]
    assert Vocabulary.build(texts, max_size=3).tokens == [PAD, UNK, "a"]
    assert Vocabulary.build(texts, max_size=2).tokens == [PAD, UNK]
    with pytest.raises(ValueError, match="min_count must be an int >= 1, got 0"):
        Vocabulary.build(texts, min_count=0)
    with pytest.raises(ValueError, match=r"max_size must be None or an int >= 2 .*got 1"):
        Vocabulary.build(texts, max_size=1)
    with pytest.raises(TypeError, match="a list of texts, not one str"):
        Vocabulary.build("a b c")


def test_encode_decode_round_trip_and_unknown_words():
    vocab = Vocabulary.build(["the film was good", "the plot was bad"])
    ids = vocab.encode("The film was good!")
    assert ids[:4] == [vocab.ids[w] for w in ("the", "film", "was", "good")]
    assert ids[4] == 1  # "!" was never seen: <unk>
    assert vocab.decode(ids) == "the film was good <unk>"
    assert vocab.decode(vocab.encode("the plot was bad")) == "the plot was bad"
    with pytest.raises(ValueError, match=r"ids \[99\] are not in this vocabulary"):
        vocab.decode([2, 99])
    assert vocab.decode(np.array(ids)) == vocab.decode(ids)  # NumPy integers are ids too


def test_encode_batch_pads_truncates_and_gives_lengths():
    vocab = Vocabulary.build(["a b c d"])
    ids, lengths = vocab.encode_batch(["a b c", "d", "a b c d e"])
    assert ids.dtype == torch.int64 and ids.shape == (3, 5)
    assert lengths.tolist() == [3, 1, 5]
    assert ids[1].tolist() == [vocab.ids["d"], 0, 0, 0, 0]
    assert torch.equal(ids != 0, torch.arange(5) < lengths[:, None])  # the mask
    cut, cut_lengths = vocab.encode_batch(["a b c", "d"], length=2)
    assert cut.tolist() == [[2, 3], [5, 0]] and cut_lengths.tolist() == [2, 1]
    assert vocab.decode(ids[1], skip_padding=False) == f"d {PAD} {PAD} {PAD} {PAD}"
    with pytest.raises(ValueError, match=r"text 1 \('   '\) has no tokens: drop empty texts"):
        vocab.encode_batch(["a", "   "])
    with pytest.raises(ValueError, match="length must be None or an int >= 1, got 0"):
        vocab.encode_batch(["a"], length=0)
    with pytest.raises(TypeError, match="not one str"):
        vocab.encode_batch("a b")


def test_save_and_load_keep_the_ids(tmp_path):
    vocab = Vocabulary.build(["the film was good", "ça va, très bien"])
    vocab.save(tmp_path / "vocab.json")
    loaded = Vocabulary.load(tmp_path / "vocab.json")
    assert loaded == vocab and loaded.encode("très bien") == vocab.encode("très bien")
    (tmp_path / "other.json").write_text(json.dumps({"tokens": ["a"]}))
    with pytest.raises(ValueError, match="is not a pruneplug vocabulary"):
        Vocabulary.load(tmp_path / "other.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="is not JSON"):
        Vocabulary.load(tmp_path / "bad.json")


def test_a_token_list_must_start_with_the_specials_and_be_unique():
    with pytest.raises(ValueError, match=r"must start with '<pad>', '<unk>'"):
        Vocabulary(["a", "b"])
    with pytest.raises(ValueError, match=r"unique; repeated: \['a'\]"):
        Vocabulary([PAD, UNK, "a", "a"])
