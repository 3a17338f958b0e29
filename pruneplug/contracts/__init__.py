"""The three plugin contracts: scorers, pruners and augmenters.

A plugin author subclasses one base, sets ``name``, ``description`` and ``params`` (see
:mod:`pruneplug.params`), and implements one method, which receives only what it uses:

============================  ===================================================================
base                          method
============================  ===================================================================
:class:`LayerScorer`          ``score_layer(name, weight) -> Tensor`` (a layer's effective weight)
:class:`Scorer`               ``score(model, batches, loss_fn) -> Scores`` (scorers that need data)
:class:`Pruner`               ``prune(model, scores, *, amount, threshold) -> nn.Module``
:class:`ImageAugmenter`       ``apply(images, params) -> Tensor``
:class:`MixingAugmenter`      ``mix(images, targets, params) -> (images, soft targets)``
:class:`AdversarialAugmenter` ``attack(images, targets, params, model, loss_fn) -> Tensor``
:class:`TextAugmenter`        ``augment_one(text, generator) -> str``
============================  ===================================================================

The base classes do everything the core promises users - parameter validation, input and
output checks, per-sample probability, seeding, eval mode - so a plugin's own code is only its
method.

Parameters are validated once, when the object is made (``Magnitude(p=2)``, or
``get_scorer("magnitude", p=2)``); the validated values are in ``self.config``.

The modules: :mod:`.base` (:class:`Plugin`), :mod:`.scorers`, :mod:`.pruners` and
:mod:`.augmenters`. Every public name is importable from ``pruneplug.contracts``, and so are the
:mod:`pruneplug.plumbing` helpers the contracts use.
"""

from ..plumbing import (
    Batch,
    LossFn,
    effective_weight,
    evaluation_mode,
    layer_tensor,
    model_device,
    prunable_layers,
)
from .augmenters import (
    AdversarialAugmenter,
    ImageAugmenter,
    MixingAugmenter,
    TextAugmenter,
    check_generator,
    check_images,
    default_generator,
)
from .base import Plugin
from .pruners import Pruner, check_amount
from .scorers import LayerScorer, Scorer, Scores

__all__ = [
    "AdversarialAugmenter",
    "Batch",
    "ImageAugmenter",
    "LayerScorer",
    "LossFn",
    "MixingAugmenter",
    "Plugin",
    "Pruner",
    "Scorer",
    "Scores",
    "TextAugmenter",
    "check_amount",
    "check_generator",
    "check_images",
    "default_generator",
    "effective_weight",
    "evaluation_mode",
    "layer_tensor",
    "model_device",
    "prunable_layers",
]
