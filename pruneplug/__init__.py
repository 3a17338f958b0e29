"""pruneplug: neural-network pruning and data augmentation in PyTorch, with pluggy plugins.

The public API is re-exported here; submodules hold one concern each (``data``, ``models``,
``engine``, ``metrics``, ``serialize``, ``registry``, ``params``, ``contracts``, ``plumbing``).
"""

from .contracts import (
    AdversarialAugmenter,
    ImageAugmenter,
    LayerScorer,
    MixingAugmenter,
    Plugin,
    Pruner,
    Scorer,
    Scores,
    TextAugmenter,
)
from .hookspecs import hookimpl
from .params import Param, ParamError
from .plumbing import Batch, LossFn, effective_weight, prunable_layers, prunable_tensors
from .registry import (
    PluginLoadWarning,
    UnknownPluginError,
    get_augmenter,
    get_pruner,
    get_registry,
    get_scorer,
    register,
    reload_plugins,
)

__version__ = "0.1.0"

__all__ = [
    "AdversarialAugmenter",
    "Batch",
    "ImageAugmenter",
    "LayerScorer",
    "LossFn",
    "MixingAugmenter",
    "Param",
    "ParamError",
    "Plugin",
    "PluginLoadWarning",
    "Pruner",
    "Scorer",
    "Scores",
    "TextAugmenter",
    "UnknownPluginError",
    "effective_weight",
    "get_augmenter",
    "get_pruner",
    "get_registry",
    "get_scorer",
    "hookimpl",
    "prunable_layers",
    "prunable_tensors",
    "register",
    "reload_plugins",
]
