r"""Image augmentation pipelines, and the fusion that makes a pipeline one pass per kind of op.

Public helpers (each is itself an :class:`~pruneplug.ImageAugmenter`, so pipelines nest and the
usual call ``aug(images, targets, generator=g)`` works; they take augmenter objects, so they are
not registered plugins):

* :class:`Compose` - augmenters one after another, each with its own ``p``;
* :class:`OneOf` - for **each sample**, one augmenter picked at random (optionally weighted);
* :func:`from_torchvision` - any torchvision v2 transform as an augmenter, applied image by image
  (slow: a Python loop over samples; use it for what pruneplug does not offer).

**Fusion.** Two families of augmenters are maps that compose into one map of the same kind, so
a pipeline can apply a whole run of them in one pass over the pixels:

* :class:`GeometricAugmenter` - a per-sample 3 x 3 *sampling matrix* :math:`M` on pixel
  coordinates (column :math:`x`, row :math:`y`, pixel centres at integers) that sends each
  output pixel to the input location it reads: :math:`(x_{in}, y_{in}, 1)^T = M (x, y, 1)^T`.
  Doing :math:`M_1` and then :math:`M_2` reads the input at :math:`M_1 M_2 p`, so a run of
  geometric stages is one matrix product and **one** ``grid_sample`` (:func:`warp`);
* :class:`ColourAugmenter` - a per-sample affine colour map :math:`c \mapsto A c + t` on each
  pixel's channel vector. Maps that depend on the image (contrast blends towards the mean grey)
  need only its channel means, which an affine map sends to :math:`A \mu + t`; so a run of colour
  stages is one :math:`C \times C` matrix per sample and **one** batched matrix product.

:class:`Compose` fuses consecutive stages of one family (``fuse=True``, the default). What fusing
changes, by design: the image is resampled once rather than at every geometric step (sharper),
the intermediate frame does not cut the image (content one step moves out of the frame and a
later step moves back is kept rather than replaced by the fill), and colour values are clamped
to [0, 1] once at the end of a colour run rather than after each step. ``fuse=False`` applies
the stages one by one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .contracts import ImageAugmenter, LossFn
from .params import Param, probability

#: ``padding_mode`` choices of geometric augmenters -> ``grid_sample``'s names. "constant"
#: fills with ``fill``; "border" repeats the edge pixel; "reflection" mirrors about the edge.
PADDING_MODES = {"constant": "zeros", "border": "border", "reflection": "reflection"}
INTERPOLATIONS = ("bilinear", "nearest", "bicubic")


# --------------------------------------------------------------------------- geometry


def _sample(
    images: Tensor, matrix: Tensor, interpolation: str, padding_mode: str, fill: float
) -> Tensor:
    """Read every sample at ``matrix @ (x, y, 1)`` with one ``grid_sample``."""
    n, _, h, w = images.shape
    # grid_sample's coordinates (align_corners=False): u = (2 x + 1) / W - 1.
    to_unit = matrix.new_tensor([[2 / w, 0, 1 / w - 1], [0, 2 / h, 1 / h - 1]])
    theta = (to_unit @ matrix).transpose(1, 2)  # N x 3 x 2: rows are the x, y and 1 terms
    xs = torch.arange(w, device=images.device, dtype=images.dtype).view(1, 1, w, 1)
    ys = torch.arange(h, device=images.device, dtype=images.dtype).view(1, h, 1, 1)
    rows = ys * theta[:, None, None, 1] + theta[:, None, None, 2]  # N x H x 1 x 2
    grid = torch.addcmul(rows, xs, theta[:, None, None, 0])  # N x H x W x 2
    filled = padding_mode == "constant" and fill != 0
    if filled:  # a channel of ones tells how much of each output pixel lies inside the image
        images = torch.cat([images, images.new_ones(n, 1, h, w)], 1)
    out = F.grid_sample(
        images,
        grid,
        mode=interpolation,
        padding_mode=PADDING_MODES[padding_mode],
        align_corners=False,
    )
    if filled:
        out, inside = out[:, :-1], out[:, -1:]
        out = out + (1 - inside) * fill  # exact where inside == 1
    return out.clamp_(0, 1)


def warp(
    images: Tensor,
    matrix: Tensor,
    *,
    interpolation: str = "bilinear",
    padding_mode: str = "constant",
    fill: float = 0.0,
) -> Tensor:
    """Resample each image through its 3 x 3 sampling matrix (see the module docstring).

    Exact where it can be: samples whose matrix is the identity are copied, and samples whose
    matrix sends pixel centres to pixel centres, to within 1e-3 pixel (flips, multiples of 90
    degrees on square images, whole-pixel shifts), are read with nearest-neighbour sampling,
    which copies pixel values bit for bit - ``torch.rot90`` and ``torch.flip`` give the same
    tensors. The others use ``interpolation``. Locations outside the image follow
    ``padding_mode`` (with ``fill`` for "constant"). Returns a new tensor in [0, 1].
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
    if padding_mode not in PADDING_MODES:
        raise ValueError(
            f"padding_mode must be one of {tuple(PADDING_MODES)}, got {padding_mode!r}"
        )
    matrix = matrix.to(images.dtype)
    eye = torch.eye(3, dtype=matrix.dtype, device=matrix.device)
    moved = (matrix != eye).flatten(1).any(1)
    # largest distance (pixels) between where a pixel centre goes and the nearest pixel centre
    _, _, h, w = images.shape
    error = (matrix[:, :2] - matrix[:, :2].round()).abs()
    reach = error @ matrix.new_tensor([w - 1, h - 1, 1])
    exact = reach.amax(1) < 1e-3
    if interpolation == "nearest":
        groups = [(moved, "nearest")]
    else:
        groups = [(moved & ~exact, interpolation), (moved & exact, "nearest")]
    out = None
    for mask, mode in groups:
        if bool(mask.all()):
            return _sample(images, matrix, mode, padding_mode, fill)
        if bool(mask.any()):
            out = images.clone() if out is None else out
            index = mask.nonzero().squeeze(1)
            out[index] = _sample(images[index], matrix[index], mode, padding_mode, fill)
    return images.clone() if out is None else out


class GeometricAugmenter(ImageAugmenter):
    """Base of augmenters that move pixels by a per-sample affine map (fusable in a pipeline).

    Implement :meth:`matrix`. Declare any of the parameters ``interpolation``,
    ``padding_mode`` and ``fill`` that matter to the op (:data:`INTERPOLATION`,
    :data:`PADDING`, :data:`FILL` are ready-made); an op that never interpolates or never reads
    outside the image leaves them out, and then fuses with stages whatever their settings.
    """

    def matrix(self, params: Mapping[str, Tensor], shape: torch.Size) -> Tensor:
        """``N x 3 x 3`` sampling matrices (output pixel -> input location) for every sample."""
        raise NotImplementedError

    def sampling_matrix(self, params: Mapping[str, Tensor], shape: torch.Size) -> Tensor:
        """:meth:`matrix` for the selected samples and the identity for the others."""
        matrix = self.matrix(params, shape)
        applied = params.get("applied")
        if applied is None:
            return matrix
        eye = torch.eye(3, dtype=matrix.dtype, device=matrix.device)
        return torch.where(applied.view(-1, 1, 1), matrix, eye)

    def warp_options(self) -> dict[str, Any]:
        """The declared ``interpolation`` / ``padding_mode`` / ``fill`` values."""
        return {
            k: self.config[k] for k in ("interpolation", "padding_mode", "fill") if k in self.config
        }

    def apply(self, images: Tensor, params: Mapping[str, Tensor]) -> Tensor:
        return warp(images, self.sampling_matrix(params, images.shape), **self.warp_options())


INTERPOLATION = Param(
    "interpolation", str, "bilinear", choices=INTERPOLATIONS, help="how pixels are resampled"
)
PADDING = Param(
    "padding_mode",
    str,
    "constant",
    choices=tuple(PADDING_MODES),
    help="what is read outside the image: fill, the edge pixel, or a mirror image",
)
FILL = Param("fill", float, 0.0, low=0.0, high=1.0, help="value outside the image (constant mode)")


def _merge_options(options: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """One set of warp options agreeing with all of ``options``, or ``None`` if they clash."""
    merged: dict[str, Any] = {}
    for option in options:
        for key, value in option.items():
            if merged.setdefault(key, value) != value:
                return None
    return merged


# --------------------------------------------------------------------------- colour


def colour_pass(
    images: Tensor,
    stages: Sequence[tuple[ColourAugmenter, Mapping[str, Tensor]]],
) -> Tensor:
    """Apply a run of colour stages as one affine map per sample, then clamp to [0, 1] once."""
    n, c, h, w = images.shape
    mean = images.mean((2, 3))
    matrix = torch.eye(c, dtype=images.dtype, device=images.device).expand(n, c, c)
    offset = images.new_zeros(n, c)
    for augmenter, params in stages:
        a, t = augmenter.colour_map(params, mean)
        a, t = a.to(images.dtype), t.to(images.dtype)
        matrix = a @ matrix
        offset = (a @ offset[..., None]).squeeze(-1) + t
        mean = (a @ mean[..., None]).squeeze(-1) + t
    out = torch.baddbmm(offset[..., None], matrix, images.reshape(n, c, h * w))
    return out.view(n, c, h, w).clamp_(0, 1)


class ColourAugmenter(ImageAugmenter):
    """Base of augmenters that map each pixel's colour by a per-sample affine map (fusable).

    Implement :meth:`affine`.
    """

    def affine(self, params: Mapping[str, Tensor], mean: Tensor) -> tuple[Tensor, Tensor]:
        """``(A, t)``, ``N x C x C`` and ``N x C``: the map :math:`c \\mapsto A c + t` of each
        sample, given ``mean`` (``N x C``), the channel means of the image it applies to."""
        raise NotImplementedError

    def colour_map(self, params: Mapping[str, Tensor], mean: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`affine` for the selected samples and the identity for the others."""
        a, t = self.affine(params, mean)
        applied = params.get("applied")
        if applied is None:
            return a, t
        eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
        return torch.where(applied.view(-1, 1, 1), a, eye), torch.where(applied.view(-1, 1), t, 0)

    def apply(self, images: Tensor, params: Mapping[str, Tensor]) -> Tensor:
        return colour_pass(images, [(self, params)])


# --------------------------------------------------------------------------- pipelines


def _fusion(augmenter: ImageAugmenter) -> str | None:
    """ "warp", "colour" or ``None``: which fused pass can apply ``augmenter``."""
    if isinstance(augmenter, OneOf):
        return augmenter.fusion
    if isinstance(augmenter, GeometricAugmenter):
        return "warp"
    if isinstance(augmenter, ColourAugmenter):
        return "colour"
    return None


def _warp_options(augmenter: ImageAugmenter) -> dict[str, Any]:
    return augmenter.warp_options()  # type: ignore[attr-defined]


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
        self.fuse = fuse
        self.stages = self._plan() if fuse else [(None, [i]) for i in range(len(self.augmenters))]

    def _plan(self) -> list[tuple[str | None, list[int]]]:
        """Group consecutive fusable stages: ``[(kind or None, [indices])]``."""
        stages: list[tuple[str | None, list[int]]] = []
        for i, augmenter in enumerate(self.augmenters):
            kind = _fusion(augmenter)
            if kind is not None and stages and stages[-1][0] == kind:
                group = [self.augmenters[j] for j in stages[-1][1]] + [augmenter]
                if (
                    kind == "colour"
                    or _merge_options([_warp_options(a) for a in group]) is not None
                ):
                    stages[-1][1].append(i)
                    continue
            stages.append((kind, [i]))
        return stages

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
            stages = [(self.augmenters[i], _child(params, i)) for i in indices]
            if kind == "warp" and len(stages) > 1:
                matrix = stages[0][0].sampling_matrix(stages[0][1], images.shape)  # type: ignore[attr-defined]
                for augmenter, sub in stages[1:]:
                    matrix = matrix @ augmenter.sampling_matrix(sub, images.shape)  # type: ignore[attr-defined]
                options = _merge_options([_warp_options(a) for a, _ in stages]) or {}
                images = warp(images, matrix, **options)
            elif kind == "colour" and len(stages) > 1:
                images = colour_pass(images, stages)  # type: ignore[arg-type]
            else:
                augmenter, sub = stages[0]
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
        if len(weights) != len(self.augmenters) or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(
                f"OneOf: weights {list(weights)} must be one non-negative number per augmenter "
                f"({len(self.augmenters)}), not all zero"
            )
        self.weights = torch.tensor([float(x) for x in weights])
        kinds = {_fusion(a) for a in self.augmenters}
        fusion = kinds.pop() if len(kinds) == 1 else None
        if fusion == "warp" and _merge_options([_warp_options(a) for a in self.augmenters]) is None:
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

    def warp_options(self) -> dict[str, Any]:
        """The choices' common warp options (only meaningful when ``fusion == "warp"``)."""
        return _merge_options([_warp_options(a) for a in self.augmenters]) or {}

    def sampling_matrix(self, params: Mapping[str, Tensor], shape: torch.Size) -> Tensor:
        """Each sample's picked sampling matrix (identity when none applies)."""
        matrix = torch.eye(3, device=params["choice"].device).repeat(shape[0], 1, 1)
        for i, augmenter in enumerate(self.augmenters):
            sub = self._selected(params, i)
            chosen = augmenter.sampling_matrix(sub, shape)  # type: ignore[attr-defined]
            matrix = torch.where(sub["applied"].view(-1, 1, 1), chosen, matrix)
        return matrix

    def colour_map(self, params: Mapping[str, Tensor], mean: Tensor) -> tuple[Tensor, Tensor]:
        """Each sample's picked colour map (identity when none applies)."""
        n, c = mean.shape
        a = torch.eye(c, dtype=mean.dtype, device=mean.device).repeat(n, 1, 1)
        t = torch.zeros_like(mean)
        for i, augmenter in enumerate(self.augmenters):
            sub = self._selected(params, i)
            a_i, t_i = augmenter.colour_map(sub, mean)  # type: ignore[attr-defined]
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
            return colour_pass(images, [(self, params)]), None  # type: ignore[list-item]
        new_targets = None
        for i, augmenter in enumerate(self.augmenters):
            sub = self._selected(params, i)
            if not augmenter.mixes_targets and not bool(sub["applied"].any()):
                continue
            images, changed = augmenter.transform(
                images, sub, targets=targets, model=model, loss_fn=loss_fn
            )
            if changed is not None:
                targets = new_targets = changed
        return images, new_targets


# --------------------------------------------------------------------------- torchvision


class TorchvisionAugmenter(ImageAugmenter):
    """A torchvision v2 transform (or any ``C x H x W -> C x H x W`` callable) as an augmenter.

    torchvision draws one set of random parameters per call, from torch's global RNG; this
    adapter calls the transform **once per selected image** (a Python loop: slow, use it for
    ops pruneplug lacks), each time seeding torch's RNG from a seed drawn per sample from the
    augmenter's generator, inside ``torch.random.fork_rng`` so the caller's global RNG state is
    left as it was. Same generator seed, same output. The transform must keep the image's shape;
    its output is clamped to [0, 1].
    """

    name = "torchvision"
    description = "A torchvision v2 transform applied to each image separately (slower)"
    params = (probability(1.0),)

    def __init__(self, transform: Callable[[Tensor], Tensor], *, p: float = 1.0) -> None:
        super().__init__(p=p)
        if not callable(transform):
            raise TypeError(f"from_torchvision needs a callable transform, got {transform!r}")
        self.wrapped = transform

    def __repr__(self) -> str:
        return f"from_torchvision({self.wrapped!r}, p={self.config['p']!r})"

    def generate_parameters(
        self, shape: torch.Size, generator: torch.Generator, device: torch.device
    ) -> dict[str, Tensor]:
        """``seed``: one seed per sample for torch's RNG while the transform runs on it."""
        return {"seed": torch.randint(0, 2**62, (shape[0],), generator=generator, device=device)}

    def apply(self, images: Tensor, params: Mapping[str, Tensor]) -> Tensor:
        out = images.clone()
        applied = params.get("applied", torch.ones(len(images), dtype=torch.bool))
        seeds = params["seed"].tolist()
        devices = [images.device] if images.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            for i in applied.nonzero().squeeze(1).tolist():
                torch.manual_seed(seeds[i])
                result = self.wrapped(images[i])
                if not isinstance(result, Tensor) or result.shape != images[i].shape:
                    got = tuple(result.shape) if isinstance(result, Tensor) else type(result)
                    raise ValueError(
                        f"from_torchvision: {self.wrapped!r} turned a {tuple(images[i].shape)} "
                        f"image into {got}; augmenters keep the shape (resize or crop to the "
                        "input size inside the transform)"
                    )
                out[i] = result
        return out.clamp_(0, 1)


def from_torchvision(
    transform: Callable[[Tensor], Tensor], *, p: float = 1.0
) -> TorchvisionAugmenter:
    """Wrap a torchvision v2 transform as a seeded, per-sample augmenter.

    For ops pruneplug lacks, e.g. ``from_torchvision(v2.RandomErasing(p=1.0), p=0.25)``; it
    runs the transform once per selected image (see :class:`TorchvisionAugmenter`), so it is
    much slower than the batched built-ins.
    """
    return TorchvisionAugmenter(transform, p=p)
