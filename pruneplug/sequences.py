"""An offline text task where word order matters: generated reviews with negation and contrast.

:func:`load_reviews` generates short English-like reviews from a small grammar, labels them
negative (0) or positive (1), and returns a :class:`TextTask`: the usual train / val / test
``TensorDataset`` splits (token ids, label) for :func:`pruneplug.engine.train`, plus the raw
texts (for the text augmenters, which edit strings) and the :class:`~pruneplug.tokens.Vocabulary`.

**The grammar** (``[x]`` optional, ``|`` a choice; sentiment words are drawn with Zipf-like
integer weights, so a few are common and most are rare)::

    review   := [opener] body
              | NEGATING_OPENER body                     label flipped; body "one" or "and"
    body     := clause                                   label = polarity(clause)
              | clause "and" clause                      both clauses have the label's polarity
              | clause ", but" clause                    label = polarity(second clause)
              | clause ", yet" clause                    label = polarity(second clause)
              | "although" clause "," clause             label = polarity(second clause)
              | clause ", although" clause               label = polarity(first clause)
    clause   := "the" NOUN VERB [NEGATOR] [INTENSIFIER] ADJECTIVE [tail]
    polarity(clause) = polarity(ADJECTIVE), flipped by a NEGATOR ("not", "never"; 1 clause in 4)

In the contrast forms the other clause has the opposite polarity. Openers ("i think",
"honestly,"), tails ("at times", "for me"), nouns, verbs and intensifiers ("very", "really")
carry no label: they are distractors. So the label depends on which word a "not" precedes and
on which side of "but" or "although" a clause stands - information a bag of words does not
have. Measured on the default splits (test accuracy, mean +- std of 3 seeds, one CPU thread):

============================================  ===============  =========
model                                         accuracy         time/run
============================================  ===============  =========
logistic regression on word counts            0.54 +- 0.02     < 1 s
logistic regression on word + bigram counts   0.55 +- 0.00     < 1 s
``lstm_classifier``, Adam 0.01, 6 epochs      0.9995 +- 0.001  4 s
``transformer_classifier``, Adam 0.01, 5 ep.  0.83 +- 0.05     5 s
``transformer_classifier``, Adam 0.003,
cosine schedule, 20 epochs                    0.978 +- 0.008   18 s
============================================  ===============  =========

With 500 training reviews instead of 4,000 the LSTM reaches only about 0.70, which leaves
room for augmentation to show an effect. Measured there (LSTM, 8 edited copies of each review
against 8 exact copies as the control, vocabulary built from the training texts with their
copies, 3 seeds, paired differences): synonym replacement +0.16 +- 0.12, random insertion
+0.11 +- 0.05, EDA +0.08 +- 0.06, random swap -0.07 +- 0.04, random deletion -0.05 +- 0.02 -
the edits that move or drop words break negation and contrast, which this model reads.

The sentiment words are chosen so that pruneplug's synonym lexicon (the EDA augmenters of
``pruneplug_plugins.text``) maps each to words of the same polarity; the rare ones are mostly
synonyms of the common ones, so synonym replacement can teach a model words that a small
training set lacks. :func:`true_label` re-derives the label of an edited review by the grammar's
rules, so a course can count how often an augmentation changes the label (random swap and
deletion move or drop the "not" and the "but").

**Determinism.** Every random choice is an integer drawn from a ``torch.Generator`` seeded with
``seed`` (``torch.randint``, then a modulo and a search in integer cumulative weights): no
floats, no global RNG, the same texts on every machine. Reviews are unique across all splits,
and every split is balanced (its negatives are the ceiling of half).
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import TensorDataset

from .data import SPLIT_NAMES, Splits
from .tokens import Vocabulary, tokenize

#: Sizes of the default splits.
REVIEW_SIZES = {"train": 4000, "val": 1000, "test": 2000}

#: Sentiment words by polarity (0 negative, 1 positive), most frequent first.
POSITIVE = (
    "good", "great", "wonderful", "excellent", "pleasant", "enjoyable", "fine", "superb",
    "fantastic", "lovely", "nice", "terrific", "delightful", "outstanding", "marvelous",
    "brilliant", "splendid", "decent", "fabulous", "exceptional", "charming", "magnificent",
    "entertaining", "impressive", "stunning",
)  # fmt: skip
NEGATIVE = (
    "bad", "awful", "boring", "terrible", "poor", "dull", "dreadful", "horrible", "tedious",
    "weak", "lousy", "atrocious", "mediocre", "disappointing", "shoddy", "appalling",
    "horrendous", "tiresome", "monotonous", "abysmal", "inferior", "lame", "unpleasant", "dismal",
)  # fmt: skip
#: Relative frequency of the ``rank``-th sentiment word of a polarity: ``60 // (rank + 1)``.
ZIPF_TOTAL = 60
NEGATORS = ("not", "never")
INTENSIFIERS = ("very", "really", "quite", "truly", "so", "extremely", "rather")
NOUNS = (
    "film", "movie", "plot", "acting", "music", "ending", "story", "cast", "script", "food",
    "service", "hotel", "room", "book", "staff",
)  # fmt: skip
VERBS = ("was", "is", "seemed", "felt", "looked")
OPENERS = ("", "i think", "honestly,", "to be fair,", "overall,", "in my view,", "i felt that")
#: Openers that negate the whole review (used with the "one" and "and" forms, 1 time in 4).
NEGATING_OPENERS = ("i do not think", "i would not say")
TAILS = ("", "at times", "for me", "in the end", "to be honest", "most of the time")
#: Body forms and their integer weights (see the module docstring).
FORMS = {"one": 3, "and": 2, "but": 2, "yet": 1, "although_first": 1, "although_last": 1}
CLASSES = ["negative", "positive"]

_DRAWS = 24  # random integers drawn per review (at most 20 are used)
_POLARITY = {w: 1 for w in POSITIVE} | {w: 0 for w in NEGATIVE}


class _Stream:
    """Integer choices read from one row of pre-drawn random integers."""

    def __init__(self, row: list[int]) -> None:
        self.row = iter(row)

    def below(self, n: int) -> int:
        return next(self.row) % n

    def choice(self, options: Sequence[str]) -> str:
        return options[self.below(len(options))]

    def weighted(self, options: Sequence[str], cumulative: list[int]) -> str:
        return options[bisect.bisect_right(cumulative, self.below(cumulative[-1]))]

    def coin(self) -> bool:
        return self.below(2) == 1


def _cumulative(n: int) -> list[int]:
    return list(itertools.accumulate(ZIPF_TOTAL // (rank + 1) for rank in range(n)))


_ADJECTIVES = {0: (NEGATIVE, _cumulative(len(NEGATIVE))), 1: (POSITIVE, _cumulative(len(POSITIVE)))}
_FORM_NAMES = list(FORMS)
_FORM_CUMULATIVE = list(itertools.accumulate(FORMS.values()))


def _clause(stream: _Stream, polarity: int) -> str:
    """``the NOUN VERB [NEGATOR] [INTENSIFIER] ADJECTIVE [tail]`` with the given polarity."""
    negated = stream.below(4) == 0
    words, cumulative = _ADJECTIVES[polarity ^ negated]
    parts = ["the", stream.choice(NOUNS), stream.choice(VERBS)]
    if negated:
        parts.append(stream.choice(NEGATORS))
    if stream.coin():
        parts.append(stream.choice(INTENSIFIERS))
    parts += [stream.weighted(words, cumulative), stream.choice(TAILS)]
    return " ".join(p for p in parts if p)


def _review(stream: _Stream, label: int) -> str:
    """One review of the given label (see the grammar in the module docstring)."""
    form = stream.weighted(_FORM_NAMES, _FORM_CUMULATIVE)
    opener = stream.choice(OPENERS)
    if form in ("one", "and") and stream.below(4) == 0:
        opener, label = stream.choice(NEGATING_OPENERS), 1 - label
    main = _clause(stream, label)
    if form == "one":
        body = main
    elif form == "and":
        body = f"{main} and {_clause(stream, label)}"
    else:
        other = _clause(stream, 1 - label)
        body = {
            "but": f"{other}, but {main}",
            "yet": f"{other}, yet {main}",
            "although_first": f"although {other}, {main}",
            "although_last": f"{main}, although {other}",
        }[form]
    return " ".join(p for p in (opener, body) if p)


def generate_reviews(labels: Sequence[int], generator: torch.Generator) -> list[str]:
    """One review for each label in ``labels`` (0 negative, 1 positive), all distinct.

    Draws from ``generator`` only (integers), so the result depends on its state alone.
    """
    if not all(label in (0, 1) for label in labels):
        raise ValueError(f"labels must be 0 (negative) or 1 (positive), got {set(labels)}")
    texts: list[str] = []
    seen: set[str] = set()
    while len(texts) < len(labels):
        chunk = max(64, len(labels) - len(texts))
        for row in torch.randint(2**31, (chunk, _DRAWS), generator=generator).tolist():
            text = _review(_Stream(row), labels[len(texts)])
            if text not in seen:
                seen.add(text)
                texts.append(text)
                if len(texts) == len(labels):
                    break
    return texts


def true_label(text: str) -> int | None:
    """The label the grammar gives ``text`` (also an edited review), or None if it cannot tell.

    Removes a negating opener (and flips the result), splits the review at its connective
    ("but", "yet", "although", "and"), finds each clause's sentiment word (exactly one, else
    None: a deleted or unknown adjective) and flips it once per negator; contrasts keep the
    clause the grammar says wins, "and" needs both clauses to agree.
    """
    tokens = [t for t in tokenize(text) if t != "."]
    for opener in NEGATING_OPENERS:
        words = opener.split()
        if tokens[: len(words)] == words:
            if any(t in ("but", "yet", "although") for t in tokens):
                return None
            label = true_label(" ".join(tokens[len(words) :]))
            return None if label is None else 1 - label

    def polarity(clause: list[str]) -> int | None:
        found = [_POLARITY[t] for t in clause if t in _POLARITY]
        if len(found) != 1:
            return None
        return found[0] ^ (sum(t in NEGATORS for t in clause) % 2)

    connectives = [i for i, t in enumerate(tokens) if t in ("but", "yet", "although", "and")]
    if not connectives:
        return polarity(tokens)
    if len(connectives) > 1:
        return None
    i = connectives[0]
    word, before, after = tokens[i], tokens[:i], tokens[i + 1 :]
    if word == "although" and not any(t in _POLARITY for t in before):  # "although A, B"
        if "," not in after:
            return None
        comma = after.index(",")
        return polarity(after[comma + 1 :])
    if word == "and":
        first, second = polarity(before), polarity(after)
        return first if first == second else None
    return polarity(before if word == "although" else after)


@dataclass
class TextTask(Splits):
    """A text classification task: :class:`~pruneplug.data.Splits` of token ids, plus texts.

    ``train``, ``val``, ``test`` hold ``(ids, labels)``: ids ``N x length`` (int64, padded with
    0 on the right, built with ``vocab``), labels int64. ``texts[split]`` are the raw strings in
    the same order; ``vocab`` was built from the training texts.
    """

    texts: dict[str, list[str]]
    vocab: Vocabulary
    length: int

    def dataset(
        self, texts: Sequence[str], labels: Sequence[int] | Tensor, vocab: Vocabulary | None = None
    ) -> TensorDataset:
        """``texts`` (e.g. augmented copies) encoded like the splits: ``length`` ids each
        (a longer text is cut), with ``vocab`` or the task's own vocabulary."""
        return text_dataset(texts, labels, vocab or self.vocab, self.length)


def text_dataset(
    texts: Sequence[str], labels: Sequence[int] | Tensor, vocab: Vocabulary, length: int
) -> TensorDataset:
    """``TensorDataset(ids, labels)`` with ``ids = vocab.encode_batch(texts, length)[0]``."""
    labels = torch.as_tensor(labels, dtype=torch.int64)
    if len(labels) != len(texts):
        raise ValueError(f"got {len(texts)} texts but {len(labels)} labels: give one label each")
    ids, _ = vocab.encode_batch(texts, length)
    return TensorDataset(ids, labels)


def load_reviews(
    seed: int = 0,
    sizes: dict[str, int] | None = None,
    min_count: int = 1,
) -> TextTask:
    """The generated reviews task (see the module docstring), split train / val / test.

    ``sizes`` defaults to :data:`REVIEW_SIZES` (4,000 / 1,000 / 2,000). The vocabulary is
    built from the training texts with ``min_count``; every split is padded to the longest
    review's token count. The same ``seed`` gives the same task on every machine.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ValueError(f"load_reviews: seed must be an int in [0, 2**63), got {seed!r}")
    sizes = dict(REVIEW_SIZES if sizes is None else sizes)
    if sorted(sizes) != sorted(SPLIT_NAMES) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in sizes.values()
    ):
        raise ValueError(
            f"load_reviews: sizes must give an int >= 0 for each of {SPLIT_NAMES}, got {sizes!r}"
        )
    if sizes["train"] < 2:
        raise ValueError("load_reviews: the training split needs at least 2 reviews (one a class)")
    generator = torch.Generator().manual_seed(seed)
    split_labels: dict[str, list[int]] = {}
    for name in SPLIT_NAMES:  # balanced, in a random order
        balanced = [0] * ((sizes[name] + 1) // 2) + [1] * (sizes[name] // 2)
        order = torch.randperm(sizes[name], generator=generator).tolist()
        split_labels[name] = [balanced[i] for i in order]
    texts = generate_reviews([y for name in SPLIT_NAMES for y in split_labels[name]], generator)
    split_texts: dict[str, list[str]] = {}
    start = 0
    for name in SPLIT_NAMES:
        split_texts[name] = texts[start : start + sizes[name]]
        start += sizes[name]
    vocab = Vocabulary.build(split_texts["train"], min_count=min_count)
    length = max(len(tokenize(t)) for t in texts)
    datasets = {
        name: text_dataset(split_texts[name], split_labels[name], vocab, length)
        for name in SPLIT_NAMES
    }
    return TextTask(
        train=datasets["train"],
        val=datasets["val"],
        test=datasets["test"],
        classes=list(CLASSES),
        name="reviews",
        texts=split_texts,
        vocab=vocab,
        length=length,
    )
