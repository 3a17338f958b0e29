"""Text augmenters: EDA counts, stop words, confusion words, lexicons, corpus; seeded, offline."""

import socket
import sys
import types
from collections import Counter

import pytest
import torch
from pruneplug_plugins import text
from pruneplug_plugins.text import (
    EDA,
    BackTranslation,
    Confusion,
    LexiconUnavailableError,
    RandomDeletion,
    RandomInsertion,
    RandomSwap,
    StopwordRemoval,
    SynonymReplacement,
    builtin_synonyms,
    n_changes,
)

from pruneplug.data import load_sentiment_corpus
from pruneplug.registry import Registry

#: 20 words, each a lexicon headword and not a stop word
RICH = (
    "great movie wonderful story excellent actor brilliant music beautiful scene "
    "boring plot awful ending terrible dialogue lovely song funny character"
)
AUGMENTERS = [SynonymReplacement, RandomInsertion, RandomSwap, RandomDeletion, EDA,
              StopwordRemoval, Confusion]  # fmt: skip


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


def changed_positions(before: str, after: str) -> list[int]:
    a, b = before.split(), after.split()
    assert len(a) == len(b)
    return [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]


def test_registered_names():
    names = Registry().names("augmenter")
    for name in ["synonym_replacement", "random_insertion", "random_swap", "random_deletion",
                 "eda", "stopword_removal", "confusion"]:  # fmt: skip
        assert name in names
    assert "back_translation" not in names  # needs a function, so it is not a plugin


def test_n_changes_is_edas_rounded_fraction():
    assert [n_changes(0.1, 9), n_changes(0.1, 26), n_changes(0.05, 3), n_changes(0.0, 10)] == [
        1,
        3,
        1,
        0,
    ]


@pytest.mark.parametrize(("alpha", "n"), [(0.1, 2), (0.25, 5), (1.0, 20)])
def test_synonym_replacement_changes_exactly_n_words_to_synonyms(alpha, n):
    out = SynonymReplacement(alpha=alpha)([RICH], generator=seeded())[0]
    changed = changed_positions(RICH, out)
    assert len(changed) == n
    words, new = RICH.split(), out.split()
    assert all(new[i] in builtin_synonyms()[words[i]] for i in changed)


def test_synonym_replacement_skips_stop_words_and_keeps_case_and_punctuation():
    out = SynonymReplacement(alpha=1.0)(["It is not Great!"], generator=seeded())[0]
    it, is_, not_, great = out.split()
    assert (it, is_, not_) == ("It", "is", "not")
    assert great[-1] == "!" and great[0].isupper()
    assert great[:-1].lower() in builtin_synonyms()["great"]


def test_random_insertion_adds_n_synonyms_and_keeps_the_words_in_order():
    sentence = "the food was great and the staff were friendly"  # 9 words, 3 with synonyms
    out = RandomInsertion(alpha=0.3)([sentence], generator=seeded())[0].split()
    assert len(out) == 9 + 3
    rest = iter(out)
    assert all(word in rest for word in sentence.split())  # a subsequence
    inserted = Counter(out) - Counter(sentence.split())
    allowed = {s for w in ("food", "great", "staff", "friendly") for s in builtin_synonyms()[w]}
    assert set(inserted) <= allowed
    no_synonyms = "we were there"
    assert RandomInsertion(alpha=1.0)([no_synonyms], generator=seeded()) == [no_synonyms]


def test_random_swap_keeps_the_words_and_one_swap_moves_two():
    out = RandomSwap(alpha=0.05)([RICH], generator=seeded())[0]  # n = 1
    assert len(changed_positions(RICH, out)) == 2
    many = RandomSwap(alpha=0.5)([RICH], generator=seeded())[0]
    assert sorted(many.split()) == sorted(RICH.split()) and many != RICH
    assert RandomSwap(alpha=1.0)(["alone"], generator=seeded()) == ["alone"]


def test_random_deletion_counts():
    words = [f"w{i}" for i in range(2000)]
    sentence = " ".join(words)
    assert RandomDeletion(p_delete=0.0)([sentence], generator=seeded()) == [sentence]
    last = RandomDeletion(p_delete=1.0)([sentence], generator=seeded())[0]
    assert len(last.split()) == 1 and last in words  # EDA keeps one random word
    kept = RandomDeletion(p_delete=0.5)([sentence], generator=seeded())[0].split()
    assert abs(len(kept) - 1000) < 5 * 22.4  # binomial(2000, 0.5): sd 22.4
    assert kept == [w for w in words if w in set(kept)]  # order kept


def test_eda_applies_one_operation_and_refuses_all_off():
    swaps = EDA(alpha_sr=0, alpha_ri=0, alpha_rs=0.2, p_rd=0)([RICH] * 5, generator=seeded())
    assert all(sorted(s.split()) == sorted(RICH.split()) and s != RICH for s in swaps)
    mixed = EDA()([RICH] * 40, generator=seeded())
    lengths = Counter(len(s.split()) for s in mixed)
    assert lengths[22] > 0 and lengths[20] > 0 and min(lengths) < 20  # insert, same, delete
    with pytest.raises(ValueError, match="every operation is switched off"):
        EDA(alpha_sr=0, alpha_ri=0, alpha_rs=0, p_rd=0)


def test_stopword_removal():
    sentence = "This is not a good movie, and I did NOT like it"
    # scikit-learn's list (Glasgow IR group) has no "did"
    assert StopwordRemoval()([sentence]) == ["not good movie, did NOT like"]
    no_negations = StopwordRemoval(keep_negations=False)([sentence])
    assert no_negations == ["good movie, did like"]
    assert StopwordRemoval(p=0.0)([sentence]) == [sentence]
    assert StopwordRemoval()(["it is what it is"]) == ["it is what it is"]  # nothing left


def test_confusion_sources():
    gen = seeded()
    spelled = Confusion(alpha=1.0, source="misspelling")(["I receive it daily"], generator=gen)
    assert spelled[0].split()[1] in text.misspellings()["receive"]
    assert changed_positions("I receive it daily", spelled[0]) == [1]
    sounds = Confusion(alpha=1.0, source="homophone")(["Their house."], generator=gen)[0]
    assert sounds in ("There house.", "They're house.")
    typo = Confusion(alpha=0.05, source="keyboard")(["keyboard"], generator=gen)[0]
    (i,) = [k for k in range(8) if typo[k] != "keyboard"[k]]
    assert typo[i] in text.KEYBOARD_NEIGHBOURS["keyboard"[i]]
    ten = "we really recommend this restaurant to everyone who likes pizza there"
    out = Confusion(alpha=0.2)([ten], generator=gen)[0]
    assert len(changed_positions(ten, out)) == 2


def test_keyboard_neighbours_follow_qwerty():
    assert set(text.KEYBOARD_NEIGHBOURS["a"]) == set("qwsz")
    assert set(text.KEYBOARD_NEIGHBOURS["g"]) == set("fhtyvb")
    assert set(text.KEYBOARD_NEIGHBOURS["p"]) == set("ol")


@pytest.mark.parametrize("cls", AUGMENTERS)
def test_seeded_and_input_untouched(cls):
    texts = [RICH, "the staff were rude and the room was dirty"]
    saved = list(texts)
    aug = cls()
    assert aug(texts, generator=seeded(1)) == aug(texts, generator=seeded(1))
    assert texts == saved
    if cls is not StopwordRemoval:  # the only deterministic one at its defaults
        outs = {tuple(aug(texts, generator=seeded(s))) for s in range(5)}
        assert len(outs) > 1


@pytest.mark.parametrize("cls", AUGMENTERS)
@pytest.mark.parametrize(("texts", "match"), [([], "empty"), ([""], "empty"), ("a b", "list")])
def test_empty_or_bad_input_is_refused(cls, texts, match):
    with pytest.raises((ValueError, TypeError), match=match):
        cls()(texts)


def test_builtin_lexicon_file():
    header = text.importlib.resources.files("pruneplug_plugins") / "data" / "synonyms.txt"
    assert "licence: MIT" in header.read_text(encoding="utf-8")[:300]
    lexicon = builtin_synonyms()
    assert len(lexicon) >= 500
    assert all(len(syns) >= 3 and word not in syns for word, syns in lexicon.items())
    assert {"good", "bad", "boring", "love", "hate", "excellent"} <= set(lexicon)


def test_wordnet_backend_errors_clearly_without_nltk(monkeypatch):
    monkeypatch.setitem(sys.modules, "nltk", None)  # import fails, whether or not it is installed
    monkeypatch.setitem(sys.modules, "nltk.corpus", None)
    with pytest.raises(LexiconUnavailableError, match="needs NLTK.*pip install nltk.*'builtin'"):
        SynonymReplacement(lexicon="wordnet")


def fake_nltk(monkeypatch, synsets):
    corpus = types.ModuleType("nltk.corpus")
    corpus.wordnet = types.SimpleNamespace(synsets=synsets)
    monkeypatch.setitem(sys.modules, "nltk", types.ModuleType("nltk"))
    monkeypatch.setitem(sys.modules, "nltk.corpus", corpus)


def test_wordnet_backend_errors_clearly_without_its_data(monkeypatch):
    def missing(word):
        raise LookupError("Resource wordnet not found.")

    fake_nltk(monkeypatch, missing)
    with pytest.raises(LexiconUnavailableError, match="WordNet data.*nltk.downloader wordnet"):
        RandomInsertion(lexicon="wordnet")


def test_wordnet_backend_uses_lemma_names(monkeypatch):
    synset = types.SimpleNamespace(lemma_names=lambda: ["film", "movie", "motion_picture"])
    fake_nltk(monkeypatch, lambda word: [synset] if word in ("film", "movie", "good") else [])
    out = SynonymReplacement(alpha=1.0, lexicon="wordnet")(["a film"], generator=seeded())
    assert out[0] in ("a movie", "a motion picture")


def test_sentiment_corpus():
    corpus = load_sentiment_corpus()
    texts, labels = corpus.texts, corpus.labels.tolist()
    assert len(texts) == len(labels) == 160 and Counter(labels) == {1: 80, 0: 80}
    assert len(set(texts)) == 160 and all(t.strip() == t and t for t in texts)
    assert texts[0].startswith("A wonderful film") and labels[0] == 1 and labels[-1] == 0


def test_back_translation_adapter():
    calls = []

    def translate(sentence, source, target):
        calls.append((source, target))
        old, new = ("film", "Film") if target == "de" else ("Film", "movie")
        return sentence.replace(old, new)

    back = BackTranslation(translate=translate, pivot="de")
    assert back(["a good film", "the film"]) == ["a good movie", "the movie"]
    assert calls == [("en", "de"), ("de", "en")] * 2
    with pytest.raises(TypeError, match=r"needs a translation function: BackTranslation\("):
        BackTranslation()
    with pytest.raises(ValueError, match="must return the translated text"):
        BackTranslation(translate=lambda s, a, b: None)(["text"])
    with pytest.raises(ValueError, match="empty"):
        back([])


def test_nothing_touches_the_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a text augmenter tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    for cache in (text.builtin_synonyms, text.misspellings, text.homophones):
        cache.cache_clear()  # reload the shipped files under the guard
    texts = load_sentiment_corpus().texts
    for cls in AUGMENTERS:
        assert len(cls()(texts, generator=seeded())) == len(texts)
