"""A word-level tokenizer and vocabulary: texts to padded ``LongTensor`` batches and back.

What the sequence models of :mod:`pruneplug.models` read: :meth:`Vocabulary.encode_batch`
turns a list of texts into an ``N x L`` tensor of token ids, padded on the right with ``<pad>``
(id 0, so ``padding_idx=0`` in an ``nn.Embedding`` keeps its row at zero and the models derive
their padding mask from ``ids != 0``). A word outside the vocabulary becomes ``<unk>`` (id 1):
a model trained on a few hundred texts must still read words it never saw.

**Tokenizing** is deliberately simple: lower-case, then :data:`TOKEN_PATTERN` - runs of letters
and digits (with one inner apostrophe, "don't") and each other non-space character on its own
("good," -> "good", ","). So ``tokenize`` of a text and of its EDA-edited copy (which keeps
punctuation glued to words) give comparable tokens.

**Building** counts the tokens of the training texts and keeps those seen at least
``min_count`` times, most frequent first (ties in alphabetical order, so a build is the same on
every machine), up to ``max_size`` entries in all, special tokens included.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch import Tensor

from .params import plain

PAD = "<pad>"
UNK = "<unk>"
#: The special tokens, at ids 0 and 1 of every vocabulary.
SPECIALS = (PAD, UNK)
PAD_ID = 0
UNK_ID = 1
#: Words (letters/digits, one inner apostrophe) or single non-space characters.
TOKEN_PATTERN = re.compile(r"[^\W_]+(?:'[^\W_]+)?|[^\w\s]|_")


def tokenize(text: str) -> list[str]:
    """Lower-case ``text`` and split it into words and punctuation marks (:data:`TOKEN_PATTERN`)."""
    if not isinstance(text, str):
        raise TypeError(f"tokenize: a text must be a str, got {type(text).__name__}: {text!r}")
    return TOKEN_PATTERN.findall(text.lower())


class Vocabulary:
    """A bijection between tokens and ids: ``<pad>`` = 0, ``<unk>`` = 1, then the words.

    Make one with :meth:`build` (from training texts) or :meth:`load` (a saved JSON file);
    ``Vocabulary(tokens)`` takes the full list, which must start with ``<pad>``, ``<unk>``.
    """

    def __init__(self, tokens: Sequence[str]) -> None:
        tokens = list(tokens)
        if tuple(tokens[:2]) != SPECIALS:
            raise ValueError(
                f"a vocabulary's tokens must start with {PAD!r}, {UNK!r} (ids 0 and 1), got "
                f"{tokens[:2]!r}: use Vocabulary.build(texts) to make one from texts"
            )
        if not all(isinstance(t, str) and t for t in tokens):
            raise ValueError("every vocabulary token must be a non-empty str")
        repeated = sorted(t for t, n in Counter(tokens).items() if n > 1)
        if repeated:
            raise ValueError(f"vocabulary tokens must be unique; repeated: {repeated[:10]}")
        self.tokens: list[str] = tokens
        self.ids: dict[str, int] = {t: i for i, t in enumerate(tokens)}

    @classmethod
    def build(
        cls, texts: Iterable[str], min_count: int = 1, max_size: int | None = None
    ) -> Vocabulary:
        """The vocabulary of ``texts``: tokens seen ``min_count`` times or more, most frequent
        first (ties alphabetical), at most ``max_size`` entries including the two specials."""
        if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 1:
            raise ValueError(f"min_count must be an int >= 1, got {min_count!r}")
        if max_size is not None and (
            isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < len(SPECIALS)
        ):
            raise ValueError(
                f"max_size must be None or an int >= {len(SPECIALS)} (it counts {PAD} and "
                f"{UNK}), got {max_size!r}"
            )
        if isinstance(texts, str):
            raise TypeError("Vocabulary.build takes a list of texts, not one str: wrap it in [ ]")
        counts = Counter(token for text in texts for token in tokenize(text))
        words = sorted(
            (t for t, n in counts.items() if n >= min_count and t not in SPECIALS),
            key=lambda t: (-counts[t], t),
        )
        if max_size is not None:
            words = words[: max_size - len(SPECIALS)]
        return cls([*SPECIALS, *words])

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: object) -> bool:
        return token in self.ids

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.tokens == other.tokens

    def __hash__(self) -> int:
        return hash(tuple(self.tokens))

    def __repr__(self) -> str:
        shown = ", ".join(self.tokens[2:8])
        more = ", ..." if len(self) > 8 else ""
        return f"Vocabulary({len(self)} tokens: {PAD}, {UNK}, {shown}{more})"

    def encode(self, text: str) -> list[int]:
        """The ids of ``text``'s tokens; a token outside the vocabulary gives ``<unk>`` (1)."""
        return [self.ids.get(token, UNK_ID) for token in tokenize(text)]

    def encode_batch(
        self, texts: Sequence[str], length: int | None = None
    ) -> tuple[Tensor, Tensor]:
        """``(ids, lengths)``: ids ``N x L`` (int64) padded with 0 on the right, and each
        text's number of real tokens.

        ``L`` is the longest text's token count, or ``length``: longer texts are cut to their
        first ``length`` tokens. ``ids != 0`` is the mask of real tokens. A text without tokens
        is refused (a model cannot classify nothing).
        """
        if isinstance(texts, str):
            raise TypeError("encode_batch takes a list of texts, not one str: wrap it in [ ]")
        if length is not None and (
            isinstance(length, bool) or not isinstance(length, int) or length < 1
        ):
            raise ValueError(f"length must be None or an int >= 1, got {length!r}")
        encoded = [self.encode(text) for text in texts]
        for i, ids in enumerate(encoded):
            if not ids:
                raise ValueError(
                    f"text {i} ({texts[i]!r}) has no tokens: drop empty texts before encoding"
                )
        width = length if length is not None else max((len(ids) for ids in encoded), default=0)
        out = torch.full((len(encoded), width), PAD_ID, dtype=torch.int64)
        lengths = torch.tensor([min(len(ids), width) for ids in encoded], dtype=torch.int64)
        for row, ids in enumerate(encoded):
            out[row, : len(ids[:width])] = torch.tensor(ids[:width], dtype=torch.int64)
        return out, lengths

    def decode(self, ids: Sequence[int] | Tensor, skip_padding: bool = True) -> str:
        """The tokens of ``ids`` joined by spaces (``<pad>`` left out unless ``skip_padding``
        is False); the inverse of :meth:`encode` up to case, spacing and unknown words."""
        values = ids.tolist() if isinstance(ids, Tensor) else [plain(i) for i in ids]
        if values and isinstance(values[0], list):
            raise ValueError("decode takes one sequence of ids; decode a batch row by row")
        bad = [i for i in values if not isinstance(i, int) or not 0 <= i < len(self)]
        if bad:
            raise ValueError(
                f"ids {bad[:5]} are not in this vocabulary (ids 0..{len(self) - 1}): were they "
                "encoded with another vocabulary?"
            )
        return " ".join(self.tokens[i] for i in values if not (skip_padding and i == PAD_ID))

    def save(self, path: str | Path) -> None:
        """Write the vocabulary as JSON: ``{"format": "pruneplug.vocabulary", "tokens": [...]}``."""
        data = {"format": "pruneplug.vocabulary", "version": 1, "tokens": self.tokens}
        Path(path).write_text(json.dumps(data, ensure_ascii=False, indent=0), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        """Read a vocabulary written by :meth:`save`; the ids are exactly those saved."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not JSON ({err}): save vocabularies with .save") from err
        if not isinstance(data, dict) or data.get("format") != "pruneplug.vocabulary":
            raise ValueError(
                f"{path} is not a pruneplug vocabulary (no 'format': 'pruneplug.vocabulary'): "
                "save vocabularies with Vocabulary.save"
            )
        return cls(data["tokens"])
