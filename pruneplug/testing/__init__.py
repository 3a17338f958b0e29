"""Conformance kit: check a scorer, pruner or augmenter against pruneplug's plugin contract.

Plugin authors call it from their own tests, so they learn what they got wrong before their
users do::

    from pruneplug.testing import check_plugin

    def test_my_scorer_follows_the_contract():
        check_plugin(MyScorer)

pruneplug's own suite runs it over every registered plugin with :func:`parametrize_plugins`.

Every check is a named **rule** (listed in :data:`RULES`, with what it asks and how to fix it).
A broken rule raises :class:`ConformanceError`, an ``AssertionError`` naming the plugin, the rule,
what was seen and the fix. A rule a plugin knowingly does not follow can be skipped by name
(``check_plugin(MyAug, skip={"image.per_sample"})``); an unknown name in ``skip`` is an error.

The checks run on tiny inputs - a 1 x 8 x 8 MLP and conv net with batch norm, six 3 x 16 x 16
images, a few sentences - so one plugin takes well under a second, and the states of torch's
and Python's random generators are restored afterwards.

The kit is a package by rule family: :mod:`.rules` (the rules and the error), :mod:`.declarations`,
:mod:`.scorers`, :mod:`.pruners`, :mod:`.augmenters`, with :mod:`.fixtures` (the tiny inputs) and
:mod:`.model_state` (model helpers); this module re-exports the public names.
"""

from .augmenters import check_augmenter
from .fixtures import TEXTS, tiny_cnn, tiny_mlp
from .plugins import all_plugins, check_plugin, parametrize_plugins
from .pruners import check_pruner
from .rules import RULES, ConformanceError, Rule
from .scorers import check_scorer

__all__ = [
    "ConformanceError",
    "RULES",
    "Rule",
    "TEXTS",
    "all_plugins",
    "check_augmenter",
    "check_plugin",
    "check_pruner",
    "check_scorer",
    "parametrize_plugins",
    "tiny_cnn",
    "tiny_mlp",
]
