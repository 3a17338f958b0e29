r"""Text augmentation: EDA, stop-word removal, confusion words and back-translation, offline.

**EDA** (Wei & Zou, "EDA: Easy Data Augmentation Techniques for Boosting Performance on Text
Classification Tasks", EMNLP 2019) edits a sentence of :math:`\ell` words with four operations;
each changes :math:`n = \max(1, \mathrm{round}(\alpha \ell))` words (``alpha = 0`` switches an
operation off):

* synonym replacement - replace :math:`n` distinct words that are not stop words and have
  synonyms with a random synonym;
* random insertion - :math:`n` times, insert a random synonym of a random such word at a random
  position;
* random swap - :math:`n` times, swap two words at distinct random positions;
* random deletion - delete each word with probability ``p_delete``, keeping one random word if
  all would go.

**Stop-word removal** drops the words of scikit-learn's ``ENGLISH_STOP_WORDS`` (each with
probability ``p``), keeping negations by default because "not good" is not "good".

**Confusion words** imitate human errors: common misspellings ("recieve"), homophones ("their"
/ "there") and keyboard-neighbour typos (a letter replaced by an adjacent QWERTY key).

**Synonyms** come from a lexicon of about 550 headwords written for pruneplug and shipped with it
(``data/synonyms.txt``, MIT) or, with ``lexicon="wordnet"``, from WordNet (Miller 1995) through
NLTK, used only if the user installed NLTK and its WordNet data; nothing is downloaded here.

**Back-translation** (Sennrich et al. 2016; Xie et al., "Unsupervised Data Augmentation", 2020)
paraphrases by translating to a pivot language and back. :class:`BackTranslation` adapts a
translation function the user supplies (e.g. wrapping a MarianMT model they downloaded); it is
not registered because a function is not a declarable parameter.

Texts are split on whitespace and joined with single spaces. A token's surrounding punctuation
is kept and words are looked up in lower case; a replacement takes the case of the word it
replaces. The course's labelled reviews come from :func:`pruneplug.data.load_sentiment_corpus`.
"""

from __future__ import annotations

import importlib.resources
import re
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any

import torch
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

from pruneplug import Param, ParamError, TextAugmenter, hookimpl

Synonyms = Callable[[str], Sequence[str]]
Translate = Callable[[str, str, str], str]

#: Stop words that negate; stop-word removal keeps them unless ``keep_negations=False``.
NEGATIONS = frozenset(
    {"no", "not", "nor", "never", "none", "nobody", "noone", "nothing", "nowhere", "neither"}
    | {"cannot", "cant", "couldnt", "hasnt", "without"}
)
_TOKEN = re.compile(r"^(\W*)(.*?)(\W*)$", re.DOTALL)
_KEYBOARD_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")


# --------------------------------------------------------------------------- shipped data


def _data_lines(name: str) -> list[str]:
    """Non-empty, non-comment lines of the shipped data file ``name``."""
    text = (importlib.resources.files(__package__) / "data" / name).read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


def _word_lists(lines: list[str], sep: str = ",") -> list[list[str]]:
    return [[w.strip() for w in line.split(sep) if w.strip()] for line in lines]


@lru_cache(maxsize=1)
def builtin_synonyms() -> dict[str, tuple[str, ...]]:
    """The shipped lexicon: headword -> synonyms (headwords listed twice are merged)."""
    table: dict[str, list[str]] = {}
    for line in _data_lines("synonyms.txt"):
        head, _, rest = line.partition(":")
        words = table.setdefault(head.strip(), [])
        words += [w for w in _word_lists([rest])[0] if w not in words and w != head.strip()]
    return {head: tuple(words) for head, words in table.items()}


@lru_cache(maxsize=1)
def misspellings() -> dict[str, tuple[str, ...]]:
    """Shipped table: correctly spelled word -> its common misspellings."""
    table = {}
    for line in _data_lines("misspellings.txt"):
        head, _, rest = line.partition(":")
        table[head.strip()] = tuple(_word_lists([rest])[0])
    return table


@lru_cache(maxsize=1)
def homophones() -> dict[str, tuple[str, ...]]:
    """Shipped table: word -> the words that sound like it."""
    table: dict[str, tuple[str, ...]] = {}
    for group in _word_lists(_data_lines("homophones.txt")):
        for word in group:
            table[word] = tuple(w for w in group if w != word)
    return table


# --------------------------------------------------------------------------- synonym backends


class LexiconUnavailableError(RuntimeError):
    """The requested synonym lexicon is not installed."""


def wordnet_synonyms() -> Synonyms:
    """Synonyms from WordNet through NLTK; raises :class:`LexiconUnavailableError` without it.

    Multi-word lemmas are kept ("motion_picture" -> "motion picture"), so a replacement or an
    insertion may add more than one word.
    """
    fix = (
        "install them once with `pip install nltk` and `python -m nltk.downloader wordnet` "
        "(after that everything runs offline), or use lexicon='builtin'"
    )
    try:
        from nltk.corpus import wordnet

        wordnet.synsets("good")  # loads the data now, so a missing corpus fails here
    except ImportError as exc:
        raise LexiconUnavailableError(
            f"lexicon='wordnet' needs NLTK, which is not installed: {fix}"
        ) from exc
    except LookupError as exc:
        raise LexiconUnavailableError(
            f"lexicon='wordnet' needs NLTK's WordNet data, which is not installed: {fix}"
        ) from exc

    @lru_cache(maxsize=65536)
    def lookup(word: str) -> tuple[str, ...]:
        names = (
            n.replace("_", " ").lower() for s in wordnet.synsets(word) for n in s.lemma_names()
        )
        return tuple(dict.fromkeys(n for n in names if n != word))

    return lookup


def synonym_lookup(lexicon: str) -> Synonyms:
    """The synonym function of ``lexicon`` (``"builtin"`` or ``"wordnet"``)."""
    if lexicon == "wordnet":
        return wordnet_synonyms()
    table = builtin_synonyms()
    return lambda word: table.get(word, ())


# --------------------------------------------------------------------------- word helpers


def _split(token: str) -> tuple[str, str, str]:
    """``"(Great!"`` -> ``("(", "Great", "!")``: leading punctuation, word, trailing."""
    match = _TOKEN.match(token)
    assert match is not None  # the pattern matches every string
    return match.group(1), match.group(2), match.group(3)


def _key(token: str) -> str:
    """The lookup form of a token: its word, lower case."""
    return _split(token)[1].lower()


def _match_case(word: str, like: str) -> str:
    if len(like) > 1 and like.isupper():
        return word.upper()
    if like[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


def _replace_word(token: str, word: str) -> str:
    """``token`` with its word replaced by ``word`` (keeping punctuation and case)."""
    lead, core, trail = _split(token)
    return lead + _match_case(word, core) + trail


def _randint(high: int, generator: torch.Generator) -> int:
    return int(torch.randint(high, (1,), generator=generator))


def _choice(options: Sequence[Any], generator: torch.Generator) -> Any:
    return options[_randint(len(options), generator)]


def _sample(options: Sequence[Any], k: int, generator: torch.Generator) -> list[Any]:
    """``k`` distinct elements of ``options`` (all of them, shuffled, if there are fewer)."""
    return [options[i] for i in torch.randperm(len(options), generator=generator)[:k].tolist()]


def n_changes(alpha: float, n_words: int) -> int:
    """EDA's number of words to change: ``max(1, round(alpha * n_words))``, 0 if alpha is 0."""
    return 0 if alpha == 0 else max(1, round(alpha * n_words))


def _keyboard_neighbours() -> dict[str, str]:
    """Letters adjacent to each letter on a QWERTY keyboard (rows staggered to the right)."""
    position = {c: (r, i) for r, row in enumerate(_KEYBOARD_ROWS) for i, c in enumerate(row)}
    near = {}
    for letter, (r, i) in position.items():
        spots = [(r, i - 1), (r, i + 1), (r - 1, i), (r - 1, i + 1), (r + 1, i - 1), (r + 1, i)]
        near[letter] = "".join(
            _KEYBOARD_ROWS[rr][ii]
            for rr, ii in spots
            if 0 <= rr < len(_KEYBOARD_ROWS) and 0 <= ii < len(_KEYBOARD_ROWS[rr])
        )
    return near


KEYBOARD_NEIGHBOURS = _keyboard_neighbours()


def keyboard_typo(word: str, generator: torch.Generator) -> str:
    """``word`` with one random letter replaced by a random neighbouring key (case kept)."""
    spots = [i for i, c in enumerate(word) if c.lower() in KEYBOARD_NEIGHBOURS]
    if not spots:
        return word
    i = _choice(spots, generator)
    new = _choice(KEYBOARD_NEIGHBOURS[word[i].lower()], generator)
    return word[:i] + (new.upper() if word[i].isupper() else new) + word[i + 1 :]


# --------------------------------------------------------------------------- EDA operations


def _replaceable(tokens: list[str], synonyms: Synonyms) -> list[int]:
    """Positions of words that are not stop words and have synonyms."""
    return [
        i
        for i, t in enumerate(tokens)
        if _key(t) and _key(t) not in ENGLISH_STOP_WORDS and synonyms(_key(t))
    ]


def synonym_replacement(
    tokens: list[str], n: int, synonyms: Synonyms, generator: torch.Generator
) -> list[str]:
    """Replace ``n`` distinct replaceable words (all of them if fewer) by a random synonym."""
    out = list(tokens)
    for i in _sample(_replaceable(tokens, synonyms), n, generator):
        out[i] = _replace_word(tokens[i], _choice(synonyms(_key(tokens[i])), generator))
    return out


def random_insertion(
    tokens: list[str], n: int, synonyms: Synonyms, generator: torch.Generator
) -> list[str]:
    """Insert ``n`` synonyms of random replaceable words at random places (none if no word is)."""
    candidates = _replaceable(tokens, synonyms)
    out = list(tokens)
    for _ in range(n if candidates else 0):
        word = _key(tokens[_choice(candidates, generator)])
        out.insert(_randint(len(out) + 1, generator), _choice(synonyms(word), generator))
    return out


def random_swap(tokens: list[str], n: int, generator: torch.Generator) -> list[str]:
    """Swap two words at distinct random positions, ``n`` times."""
    out = list(tokens)
    for _ in range(n if len(out) > 1 else 0):
        i = _randint(len(out), generator)
        j = _randint(len(out) - 1, generator)
        j += j >= i
        out[i], out[j] = out[j], out[i]
    return out


def random_deletion(tokens: list[str], p: float, generator: torch.Generator) -> list[str]:
    """Delete each word with probability ``p``; keep one random word if all would go."""
    keep = (torch.rand(len(tokens), generator=generator) >= p).tolist()
    out = [t for t, k in zip(tokens, keep, strict=True) if k]
    return out or [_choice(tokens, generator)]


# --------------------------------------------------------------------------- augmenters


def _alpha(what: str, default: float = 0.1) -> Param:
    return Param(
        "alpha", float, default, low=0.0, high=1.0, help=f"fraction of words to {what} (EDA alpha)"
    )


_LEXICON = Param(
    "lexicon",
    str,
    "builtin",
    choices=("builtin", "wordnet"),
    help="synonym source: the shipped lexicon, or WordNet (needs nltk and its wordnet data)",
)


class _WordAugmenter(TextAugmenter):
    """Split a text into tokens, edit the list, join it again."""

    def augment_one(self, text: str, generator: torch.Generator) -> str:
        return " ".join(self.edit(text.split(), generator))

    def edit(self, tokens: list[str], generator: torch.Generator) -> list[str]:
        """Return the edited list of tokens (never empty)."""
        raise NotImplementedError


class _SynonymAugmenter(_WordAugmenter):
    """A word augmenter with a synonym lexicon, loaded once when the augmenter is made."""

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.synonyms = synonym_lookup(self.config["lexicon"])


class SynonymReplacement(_SynonymAugmenter):
    name = "synonym_replacement"
    description = "Replace n = alpha * words non-stop words by synonyms (EDA, Wei & Zou 2019)"
    params = (_alpha("replace"), _LEXICON)

    def edit(self, tokens: list[str], generator: torch.Generator) -> list[str]:
        n = n_changes(self.config["alpha"], len(tokens))
        return synonym_replacement(tokens, n, self.synonyms, generator)


class RandomInsertion(_SynonymAugmenter):
    name = "random_insertion"
    description = "Insert n = alpha * words synonyms at random places (EDA, Wei & Zou 2019)"
    params = (_alpha("insert"), _LEXICON)

    def edit(self, tokens: list[str], generator: torch.Generator) -> list[str]:
        n = n_changes(self.config["alpha"], len(tokens))
        return random_insertion(tokens, n, self.synonyms, generator)


class RandomSwap(_WordAugmenter):
    name = "random_swap"
    description = "Swap two random words, n = alpha * words times (EDA, Wei & Zou 2019)"
    params = (_alpha("swap"),)

    def edit(self, tokens: list[str], generator: torch.Generator) -> list[str]:
        return random_swap(tokens, n_changes(self.config["alpha"], len(tokens)), generator)


class RandomDeletion(_WordAugmenter):
    name = "random_deletion"
    description = "Delete each word with probability p_delete (EDA, Wei & Zou 2019)"
    params = (
        Param("p_delete", float, 0.1, low=0.0, high=1.0, help="probability to delete each word"),
    )

    def edit(self, tokens: list[str], generator: torch.Generator) -> list[str]:
        return random_deletion(tokens, self.config["p_delete"], generator)


class EDA(_SynonymAugmenter):
    name = "eda"
    description = "One random EDA operation per text: replace, insert, swap or delete words"
    params = (
        Param("alpha_sr", float, 0.1, low=0.0, high=1.0, help="synonym replacement alpha"),
        Param("alpha_ri", float, 0.1, low=0.0, high=1.0, help="random insertion alpha"),
        Param("alpha_rs", float, 0.1, low=0.0, high=1.0, help="random swap alpha"),
        Param("p_rd", float, 0.1, low=0.0, high=1.0, help="random deletion probability"),
        _LEXICON,
    )

    operation_names = ("alpha_sr", "alpha_ri", "alpha_rs", "p_rd")

    def check_config(self, config: Mapping[str, Any]) -> None:
        if not any(config[name] > 0 for name in self.operation_names):
            raise ParamError(
                "augmenter 'eda': every operation is switched off (alpha_sr = alpha_ri = "
                "alpha_rs = p_rd = 0): give at least one a positive value"
            )

    @property
    def operations(self) -> list[str]:
        """The operations switched on, in EDA's order."""
        return [name for name in self.operation_names if self.config[name] > 0]

    def edit(self, tokens: list[str], generator: torch.Generator) -> list[str]:
        operation = _choice(self.operations, generator)
        value = self.config[operation]
        if operation == "p_rd":
            return random_deletion(tokens, value, generator)
        n = n_changes(value, len(tokens))
        if operation == "alpha_rs":
            return random_swap(tokens, n, generator)
        edit = synonym_replacement if operation == "alpha_sr" else random_insertion
        return edit(tokens, n, self.synonyms, generator)


class StopwordRemoval(_WordAugmenter):
    name = "stopword_removal"
    description = "Drop English stop words (scikit-learn's list), keeping negations by default"
    params = (
        Param("p", float, 1.0, low=0.0, high=1.0, help="probability to drop each stop word"),
        Param("keep_negations", bool, True, help="keep no, not, never, nothing, ..."),
    )

    def edit(self, tokens: list[str], generator: torch.Generator) -> list[str]:
        """Drop stop words; a text made only of stop words is returned unchanged."""
        kept = NEGATIONS if self.config["keep_negations"] else frozenset()
        drop = torch.rand(len(tokens), generator=generator) < self.config["p"]
        out = [
            t
            for t, d in zip(tokens, drop.tolist(), strict=True)
            if not (d and _key(t) in ENGLISH_STOP_WORDS and _key(t) not in kept)
        ]
        return out or tokens


class Confusion(_WordAugmenter):
    name = "confusion"
    description = "Misspell n = alpha * words words: common misspellings, homophones, typos"
    params = (
        _alpha("misspell"),
        Param(
            "source",
            str,
            "all",
            choices=("all", "misspelling", "homophone", "keyboard"),
            help="kind of error; 'all' uses the tables where a word is in them, else a typo",
        ),
    )

    def options(self, word: str) -> tuple[str, ...]:
        """The table alternatives for ``word`` allowed by ``source`` (lower case)."""
        source = self.config["source"]
        found = ()
        if source in ("all", "misspelling"):
            found += misspellings().get(word, ())
        if source in ("all", "homophone"):
            found += homophones().get(word, ())
        return found

    def confusable(self, token: str) -> bool:
        word = _key(token)
        if self.config["source"] in ("all", "keyboard"):
            return any(c in KEYBOARD_NEIGHBOURS for c in word)
        return bool(self.options(word))

    def edit(self, tokens: list[str], generator: torch.Generator) -> list[str]:
        """Change ``n`` distinct confusable words (all of them if fewer)."""
        candidates = [i for i, t in enumerate(tokens) if self.confusable(t)]
        out = list(tokens)
        for i in _sample(candidates, n_changes(self.config["alpha"], len(tokens)), generator):
            options = self.options(_key(tokens[i]))
            if options:
                out[i] = _replace_word(tokens[i], _choice(options, generator))
            else:
                lead, core, trail = _split(tokens[i])
                out[i] = lead + keyboard_typo(core, generator) + trail
        return out


class BackTranslation(TextAugmenter):
    """Paraphrase each text by translating it to ``pivot`` and back to ``source``.

    ``translate(text, source_language, target_language) -> str`` is the user's function (for
    example a wrapper around a MarianMT model they downloaded); it is called twice per text.
    Not registered as a plugin, since a function is not a declarable parameter::

        back = BackTranslation(translate=my_translate, pivot="fr")
        back(["the film was great"])
    """

    name = "back_translation"
    description = "Translate to a pivot language and back with a user-supplied function"
    params = (
        Param("source", str, "en", help="language code of the texts"),
        Param("pivot", str, "de", help="language code translated through"),
    )

    def __init__(self, translate: Translate | None = None, **params: Any) -> None:
        super().__init__(**params)
        if not callable(translate):
            raise TypeError(
                "back-translation needs a translation function: "
                "BackTranslation(translate=fn) with fn(text, source_language, target_language) "
                "-> str, e.g. wrapping a translation model you installed; pruneplug downloads "
                f"nothing (got translate={translate!r})"
            )
        self.translate = translate

    def augment_one(self, text: str, generator: torch.Generator) -> str:
        source, pivot = self.config["source"], self.config["pivot"]
        return self._run(self._run(text, source, pivot), pivot, source)

    def _run(self, text: str, source: str, target: str) -> str:
        out = self.translate(text, source, target)
        if not isinstance(out, str) or not out.strip():
            raise ValueError(
                f"the translation function returned {out!r} for {text!r} ({source} -> {target}): "
                "it must return the translated text as a non-empty string"
            )
        return out


@hookimpl
def register_augmenters(register):
    for cls in (
        SynonymReplacement,
        RandomInsertion,
        RandomSwap,
        RandomDeletion,
        EDA,
        StopwordRemoval,
        Confusion,
    ):
        register(cls)
