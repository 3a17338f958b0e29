"""Pipelines of image augmenters: :class:`Compose` and :class:`OneOf`, with fusion.

:class:`Compose` applies runs of consecutive geometric stages as one resampling and runs of
colour stages as one colour map (see :mod:`pruneplug.augment` for what that changes); a
:class:`OneOf` whose choices are all geometric (or all colour) fuses with its neighbours.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..contracts import ImageAugmenter, LossFn
from ..params import plain, probability
from .bases import ColourAugmenter, GeometricAugmenter
from .kernels import ColourMap, WarpMap, colour_pass, merge_options, warp


def as_warp(augmenter: ImageAugmenter) -> WarpMap | None:
    """``augmenter`` as a sampling-matrix map when a fused warp can apply it, else ``None``."""
    if isinstance(augmenter, GeometricAugmenter):
        return augmenter
    if isinstance(augmenter, OneOf) and augmenter.fusion == "warp":
        return augmenter
    return None


def as_colour(augmenter: ImageAugmenter) -> ColourMap | None:
    """``augmenter`` as an affine colour map when a fused colour pass can apply it, or ``None``."""
    if isinstance(augmenter, ColourAugmenter):
        return augmenter
    if isinstance(augmenter, OneOf) and augmenter.fusion == "colour":
        return augmenter
    return None


def _check_augmenters(augmenters: Sequence[ImageAugmenter], owner: str) -> list[ImageAugmenter]:
    if isinstance(augmenters, ImageAugmenter) or not isinstance(augmenters, Sequence):
        raise TypeError(f"{owner} takes a list of augmenters, e.g. {owner}([aug1, aug2])")
    if not augmenters:
        raise ValueError(f"{owner} needs at least one augmenter")
    for i, augmenter in enumerate(augmenters):
        if not isinstance(augmenter, ImageAugmenter):
            raise TypeError(
                f"{owner}: item {i} is {augmenter!r}, not an image augmenter; make one with "
                "pruneplug.get_augmenter(name, ...) or wrap a torchvision transform with "
                "pruneplug.augment.from_torchvision(transform)"
            )
    return list(augmenters)


def _draw_children(
    augmenters: Sequence[ImageAugmenter],
    shape: torch.Size,
    generator: torch.Generator,
    device: torch.device,
) -> dict[str, Tensor]:
    """Each child's parameters, in order, under keys ``"<index>.<key>"``."""
    params: dict[str, Tensor] = {}
    for i, augmenter in enumerate(augmenters):
        drawn = augmenter.forward_parameters(shape, generator, device)
        params.update({f"{i}.{key}": value for key, value in drawn.items()})
    return params


def _child(params: Mapping[str, Tensor], index: int) -> dict[str, Tensor]:
    prefix = f"{index}."
    return {k[len(prefix) :]: v for k, v in params.items() if k.startswith(prefix)}


class _Pipeline(ImageAugmenter):
    """What :class:`Compose` and :class:`OneOf` share: children, flags and a readable repr."""

    def __init__(self, augmenters: Sequence[ImageAugmenter], **params: Any) -> None:
        super().__init__(**params)
        self.augmenters = _check_augmenters(augmenters, type(self).__name__)
        # instance attributes: the flags of a pipeline are those of its stages
        self.mixes_targets = any(a.mixes_targets for a in self.augmenters)
        self.needs_model = any(a.needs_model for a in self.augmenters)
        # the stages a fused pass can apply, by index, typed as the maps that pass reads
        self.warps: dict[int, WarpMap] = {}
        self.colours: dict[int, ColourMap] = {}
        for i, augmenter in enumerate(self.augmenters):
            warp_map, colour_map = as_warp(augmenter), as_colour(augmenter)
            if warp_map is not None:
                self.warps[i] = warp_map
            if colour_map is not None:
                self.colours[i] = colour_map

    def fusion_of(self, index: int) -> str | None:
        """ "warp", "colour" or ``None``: which fused pass can apply stage ``index``."""
        if index in self.warps:
            return "warp"
        if index in self.colours:
            return "colour"
        return None

    def __repr__(self) -> str:
        inner = ", ".join(repr(a) for a in self.augmenters)
        extra = "".join(f", {k}={v!r}" for k, v in self.config.items())
        return f"{type(self).__name__}([{inner}]{extra})"


class Compose(_Pipeline):
    """Apply augmenters one after another; each keeps its own ``p``.

    Args:
        augmenters: image augmenters (registered ones, :class:`OneOf`, nested :class:`Compose`,
            :func:`from_torchvision` adapters, mixing and adversarial ones).
        fuse: apply runs of consecutive geometric stages as one resampling and runs of colour
            stages as one colour map (see the module docstring for what that changes). Geometric
            stages fuse only when their declared interpolation / padding / fill agree.

    Parameters are drawn stage by stage in order, so with the same generator a pipeline draws
    what calling its stages one after another would. Targets pass through: a stage that mixes
    targets (mixup) hands its soft targets to the next one, and the pipeline returns them.
    """

    name = "compose"
    description = "Apply augmenters one after another, each with its own p"

    def __init__(self, augmenters: Sequence[ImageAugmenter], *, fuse: bool = True) -> None:
        super().__init__(augmenters)
        if not isinstance(fuse, bool):
            raise TypeError(f"Compose: fuse must be True or False, got {fuse!r}")
        self.fuse = fuse
        self.stages = self._plan() if fuse else [(None, [i]) for i in range(len(self.augmenters))]

    def __repr__(self) -> str:
        text = super().__repr__()
        return text if self.fuse else f"{text[:-1]}, fuse=False)"

    def _plan(self) -> list[tuple[str | None, list[int]]]:
        """Group consecutive fusable stages: ``[(kind or None, [indices])]``."""
        stages: list[tuple[str | None, list[int]]] = []
        for i in range(len(self.augmenters)):
            kind = self.fusion_of(i)
            if kind is not None and stages and stages[-1][0] == kind:
                group = [*stages[-1][1], i]
                if kind == "colour" or self._warp_options(group) is not None:
                    stages[-1][1].append(i)
                    continue
            stages.append((kind, [i]))
        return stages

    def _warp_options(self, indices: Sequence[int]) -> dict[str, Any] | None:
        """The warp options geometric stages ``indices`` agree on, or ``None`` if they clash."""
        return merge_options([self.warps[i].warp_options() for i in indices])

    def generate_parameters(
        self, shape: torch.Size, generator: torch.Generator, device: torch.device
    ) -> dict[str, Tensor]:
        """Every stage's parameters (with its ``applied``) under ``"<stage index>.<key>"``."""
        return _draw_children(self.augmenters, shape, generator, device)

    def _apply(
        self,
        images: Tensor,
        params: Mapping[str, Tensor],
        targets: Tensor | None,
        model: nn.Module | None,
        loss_fn: LossFn | None,
    ) -> tuple[Tensor, Tensor | None]:
        new_targets = None
        for kind, indices in self.stages:
            # a lone geometric stage keeps its own apply (a flip copies rather than resamples);
            # a colour run of any length is one pass, whose maps are the identity for the
            # samples a stage leaves alone (no count of them to wait for, no second pass)
            if kind == "warp" and len(indices) > 1:
                first, *rest = indices
                matrix = self.warps[first].sampling_matrix(_child(params, first), images.shape)
                for i in rest:
                    matrix = matrix @ self.warps[i].sampling_matrix(_child(params, i), images.shape)
                images = warp(images, matrix, **(self._warp_options(indices) or {}))
            elif kind == "colour":
                colours = [(self.colours[i], _child(params, i)) for i in indices]
                images = colour_pass(images, colours)
            else:
                augmenter, sub = self.augmenters[indices[0]], _child(params, indices[0])
                images, changed = augmenter.transform(
                    images, sub, targets=targets, model=model, loss_fn=loss_fn
                )
                if changed is not None:
                    targets = new_targets = changed
        return images, new_targets


class OneOf(_Pipeline):
    """For each sample, apply one augmenter picked at random (each keeps its own ``p`` too).

    The pick is drawn **per sample** (not once per call), with probabilities proportional to
    ``weights`` (default: equal). ``p`` is the probability that a sample gets any of them.
    When every choice is geometric (or every choice is colour), a :class:`Compose` fuses the
    whole ``OneOf`` with its neighbours, since the picked map is just another per-sample map.
    """

    name = "one_of"
    description = "Apply one augmenter, picked at random for each sample"
    params = (probability(1.0),)

    def __init__(
        self,
        augmenters: Sequence[ImageAugmenter],
        *,
        weights: Sequence[float] | None = None,
        p: float = 1.0,
    ) -> None:
        super().__init__(augmenters, p=p)
        if weights is None:
            weights = [1.0] * len(self.augmenters)
        values = [  # NumPy scalars and 0-d tensors count; a bool or a string does not
            float(x) if isinstance(x, numbers.Real) and not isinstance(x, bool) else math.nan
            for x in map(plain, weights)
        ]
        self.weights = torch.tensor(values)  # float32, as multinomial draws with them
        valid = torch.isfinite(self.weights).all() and (self.weights >= 0).all()
        if len(values) != len(self.augmenters) or not valid or self.weights.sum() <= 0:
            raise ValueError(
                f"OneOf: weights {list(weights)} must be one finite, non-negative number per "
                f"augmenter ({len(self.augmenters)}), not all zero (in float32)"
            )
        kinds = {self.fusion_of(i) for i in range(len(self.augmenters))}
        fusion = kinds.pop() if len(kinds) == 1 else None
        if fusion == "warp" and merge_options(self._choices_warp_options()) is None:
            fusion = None
        self.fusion = fusion

    def generate_parameters(
        self, shape: torch.Size, generator: torch.Generator, device: torch.device
    ) -> dict[str, Tensor]:
        """``choice`` (the index picked for each sample) and every choice's own parameters."""
        weights = self.weights.to(device)
        choice = torch.multinomial(weights, shape[0], replacement=True, generator=generator)
        params = {"choice": choice}
        params.update(_draw_children(self.augmenters, shape, generator, device))
        return params

    def _selected(self, params: Mapping[str, Tensor], index: int) -> dict[str, Tensor]:
        """Child ``index``'s parameters, selecting only the samples that picked it."""
        sub = _child(params, index)
        picked = params["choice"] == index
        if "applied" in params:
            picked = picked & params["applied"]
        sub["applied"] = sub["applied"] & picked
        return sub

    def _choices_warp_options(self) -> list[dict[str, Any]]:
        """Every choice's warp options; a choice that is not geometric is refused."""
        self._require("warp")
        return [self.warps[i].warp_options() for i in range(len(self.augmenters))]

    def _require(self, fusion: str) -> None:
        """Raise unless every choice can be applied by the fused pass ``fusion``."""
        maps = self.warps if fusion == "warp" else self.colours
        if len(maps) != len(self.augmenters):
            raise TypeError(
                f"OneOf: not every choice is a {fusion} stage ({self!r}); only a OneOf of "
                f"{'geometric' if fusion == 'warp' else 'colour'} augmenters has a fused map"
            )

    def warp_options(self) -> dict[str, Any]:
        """The choices' common warp options (only meaningful when ``fusion == "warp"``)."""
        return merge_options(self._choices_warp_options()) or {}

    def sampling_matrix(self, params: Mapping[str, Tensor], shape: torch.Size) -> Tensor:
        """Each sample's picked sampling matrix (identity when none applies)."""
        self._require("warp")
        matrix = torch.eye(3, device=params["choice"].device).repeat(shape[0], 1, 1)
        for i, stage in self.warps.items():
            sub = self._selected(params, i)
            chosen = stage.sampling_matrix(sub, shape)
            matrix = torch.where(sub["applied"].view(-1, 1, 1), chosen, matrix)
        return matrix

    def colour_map(self, params: Mapping[str, Tensor], mean: Tensor) -> tuple[Tensor, Tensor]:
        """Each sample's picked colour map (identity when none applies)."""
        self._require("colour")
        n, c = mean.shape
        a = torch.eye(c, dtype=mean.dtype, device=mean.device).repeat(n, 1, 1)
        t = torch.zeros_like(mean)
        for i, stage in self.colours.items():
            sub = self._selected(params, i)
            a_i, t_i = stage.colour_map(sub, mean)
            a = torch.where(sub["applied"].view(-1, 1, 1), a_i.to(a), a)
            t = torch.where(sub["applied"].view(-1, 1), t_i.to(t), t)
        return a, t

    def _apply(
        self,
        images: Tensor,
        params: Mapping[str, Tensor],
        targets: Tensor | None,
        model: nn.Module | None,
        loss_fn: LossFn | None,
    ) -> tuple[Tensor, Tensor | None]:
        if self.fusion == "warp":
            return warp(
                images, self.sampling_matrix(params, images.shape), **self.warp_options()
            ), None
        if self.fusion == "colour":
            return colour_pass(images, [(self, params)]), None
        new_targets, out = None, images
        for i, augmenter in enumerate(self.augmenters):
            sub = self._selected(params, i)
            if not augmenter.mixes_targets and not bool(sub["applied"].any()):
                continue
            out, changed = augmenter.transform(
                out, sub, targets=targets, model=model, loss_fn=loss_fn
            )
            if changed is not None:
                targets = new_targets = changed
        return (images.clone() if out is images else out), new_targets  # never the input
