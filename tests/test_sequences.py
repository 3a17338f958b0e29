"""The generated reviews task: determinism, balance, the grammar's labels, augmenters, learning."""

import pytest
import torch

import pruneplug
from pruneplug import engine, models, sequences
from pruneplug.sequences import NEGATIVE, POSITIVE, load_reviews, true_label
from pruneplug.tokens import tokenize

SMALL = {"train": 1200, "val": 201, "test": 400}


@pytest.fixture(scope="module")
def task():
    return load_reviews(seed=0)


def test_splits_sizes_types_and_vocabulary(task):
    assert {s: len(getattr(task, s)) for s in ("train", "val", "test")} == {
        "train": 4000, "val": 1000, "test": 2000
    }  # fmt: skip
    ids, labels = task.train.tensors
    assert ids.dtype == labels.dtype == torch.int64 and ids.shape == (4000, task.length)
    assert task.classes == ["negative", "positive"] and task.name == "reviews"
    assert task.vocab.tokens[:2] == ["<pad>", "<unk>"]
    assert (task.test.tensors[0] != 1).all()  # every test word was seen in training
    first = task.texts["train"][0]
    assert task.vocab.decode(ids[0]) == " ".join(tokenize(first))
    assert isinstance(task, pruneplug.data.Splits)  # loaders as for the images
    batch, targets = next(iter(task.loader("val", batch_size=8)))
    assert batch.shape == (8, task.length) and torch.equal(targets, task.val.tensors[1][:8])


def test_same_seed_same_task_on_every_call_and_global_rng_untouched():
    state = torch.get_rng_state()
    a, b, c = load_reviews(3, SMALL), load_reviews(3, SMALL), load_reviews(4, SMALL)
    assert torch.equal(torch.get_rng_state(), state)
    assert a.texts == b.texts and a.vocab == b.vocab
    assert torch.equal(a.test.tensors[0], b.test.tensors[0])
    assert a.texts["train"] != c.texts["train"]


def test_fixed_texts_for_seed_0():
    """The first reviews of seed 0: integer draws only, so the same on every machine."""
    assert load_reviews(0, SMALL).texts["train"][:3] == [
        "in my view, the music looked not lovely at times, although the plot seemed never awful "
        "most of the time",
        "in my view, the staff seemed never so fine and the food is truly dreadful for me",
        "overall, the movie felt truly good for me",
    ]


def test_every_split_is_balanced_and_reviews_are_unique(task):
    for name, size in (("train", 4000), ("val", 1000), ("test", 2000)):
        assert getattr(task, name).tensors[1].sum().item() == size // 2
    odd = load_reviews(0, SMALL)
    assert odd.val.tensors[1].tolist().count(0) == 101  # the ceiling of half
    everything = [t for texts in task.texts.values() for t in texts]
    assert len(set(everything)) == len(everything)


def test_labels_follow_the_grammar(task):
    for name in ("train", "val", "test"):
        assert [true_label(t) for t in task.texts[name]] == getattr(task, name).tensors[1].tolist()
    assert true_label("the film was good") == 1
    assert true_label("the film was not very good for me") == 0
    assert true_label("the plot was bad, but the film was good") == 1
    assert true_label("although the plot was bad, the film was good") == 1
    assert true_label("the plot was bad, although the film was good") == 0
    assert true_label("i do not think the film was good and the cast was great") == 0
    assert true_label("the plot was good and the film was bad") is None  # they must agree
    assert true_label("the film was solid") is None  # not a word of the grammar


def test_every_form_and_word_occurs(task):
    words = set(tokenize(" ".join(task.texts["train"])))
    assert set(POSITIVE) | set(NEGATIVE) <= words
    spaced = [f" {' '.join(tokenize(t))} " for t in task.texts["train"]]
    for marker in ("but", "yet", "although", "and", "not", "never", "i do not think"):
        assert any(f" {marker} " in t for t in spaced), marker


def test_synonyms_keep_the_polarity_of_every_sentiment_word():
    from pruneplug_plugins.text import builtin_synonyms

    lexicon = builtin_synonyms()
    for words, other in ((POSITIVE, NEGATIVE), (NEGATIVE, POSITIVE)):
        for word in words:
            assert not set(lexicon.get(word, ())) & set(other), word


def test_the_text_augmenters_edit_reviews():
    texts = load_reviews(0, SMALL).texts["train"][:200]
    generator = torch.Generator().manual_seed(0)
    labels = [true_label(t) for t in texts]
    kept = {}
    for name in ("synonym_replacement", "random_swap", "random_deletion", "eda"):
        edited = pruneplug.get_augmenter(name)(texts, generator=generator)
        assert len(edited) == len(texts) and edited != texts
        kept[name] = sum(true_label(e) == y for e, y in zip(edited, labels, strict=True))
    assert kept["synonym_replacement"] > kept["random_swap"]  # swaps move "not" and "but"


def test_bag_of_words_stays_near_chance_where_an_lstm_learns(task):
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    counts = CountVectorizer(token_pattern=r"[^\W_]+").fit(task.texts["train"])
    bow = LogisticRegression(max_iter=2000).fit(
        counts.transform(task.texts["train"]), task.train.tensors[1].numpy()
    )
    bow_accuracy = bow.score(counts.transform(task.texts["test"]), task.test.tensors[1].numpy())
    assert bow_accuracy < 0.65
    model = models.lstm_classifier(len(task.vocab))
    engine.train(model, task.train, epochs=4, lr=0.01, optimizer="adam", progress=False)
    assert engine.evaluate(model, task.test)["accuracy"] > 0.95


def test_transformer_learns_the_task(task):
    model = models.transformer_classifier(len(task.vocab), max_len=task.length)
    engine.train(model, task.train, epochs=5, lr=0.01, optimizer="adam", progress=False)
    assert engine.evaluate(model, task.test)["accuracy"] > 0.7  # measured 0.78-0.88; bag: 0.54


def test_datasets_from_new_texts_and_errors(task):
    ds = task.dataset(["the film was good", "the film was dreadful"], [1, 0])
    assert ds.tensors[0].shape == (2, task.length)
    with pytest.raises(ValueError, match="got 2 texts but 1 labels"):
        task.dataset(["a", "b"], [1])
    with pytest.raises(ValueError, match="sizes must give an int >= 0 for each of"):
        load_reviews(sizes={"train": 10})
    with pytest.raises(ValueError, match="seed must be an int"):
        load_reviews(seed=-1)
    with pytest.raises(ValueError, match="labels must be 0"):
        sequences.generate_reviews([2], torch.Generator())
