"""The checks of an augmenter: images (plain, mixing, adversarial) and texts."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ..contracts import ImageAugmenter, TextAugmenter
from .declarations import _start
from .fixtures import TEXTS, _attack_model, _images
from .model_state import _changes, _snapshot
from .rules import _Check, _isolated_rng, _reseed_globals


def check_augmenter(
    plugin: type[ImageAugmenter] | type[TextAugmenter] | ImageAugmenter | TextAugmenter,
    *,
    params: Mapping[str, Any] | None = None,
    images: Tensor | None = None,
    texts: Iterable[str] | None = None,
    skip: Iterable[str] = (),
    seed: int = 0,
) -> None:
    """Check an image or text augmenter class (or object); raise :class:`ConformanceError`.

    Image augmenters run on ``images`` (default: six random 3 x 16 x 16 images with exact 0s
    and 1s), with class targets (one-hot targets for ``mixes_targets``) and, for
    ``needs_model``, a small classifier. A declared ``p`` is set to 1 unless given, so every
    sample is transformed. Text augmenters run on ``texts`` (default: :data:`TEXTS`).
    """
    cls, check, config = _start(plugin, params, skip, (ImageAugmenter, TextAugmenter))
    with _isolated_rng(seed):
        if issubclass(cls, TextAugmenter):
            _check_text(cls, config, list(texts or TEXTS), check, seed)
        else:
            _check_image(cls, config, _images() if images is None else images, check, seed)


def _check_text(
    cls: type[TextAugmenter], config: dict[str, Any], texts: list[str], check: _Check, seed: int
) -> None:
    aug = check.call("runs", f"{cls.__name__}(**{config})", cls, **config)
    kept = list(texts)

    def run() -> Any:
        return aug(texts, generator=torch.Generator().manual_seed(seed))

    outs = []
    for global_seed in (1, 2):
        _reseed_globals(global_seed)
        outs.append(check.call("runs", f"augmenting {texts}", run))
        if texts != kept:
            check.fail("inputs_untouched", "the list of texts was changed in place")
    out = outs[0]
    if not isinstance(out, list) or len(out) != len(texts):
        check.fail("text.output", f"{len(texts)} texts gave {out!r}")
    bad = [o for o in out if not isinstance(o, str) or not o.strip()]
    if bad:
        check.fail("text.output", f"the output holds {bad[0]!r} (from {texts})")
    if outs[1] != out:
        _generator_failure(check, outs[1], run)


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, tuple):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, Tensor):
        return isinstance(b, Tensor) and a.shape == b.shape and torch.equal(a, b)
    return a == b


def _generator_failure(check: _Check, second: Any, run: Callable[[], Any]) -> None:
    """Two runs with one generator seed differed: say whether global state or chance did it."""
    _reseed_globals(2)
    third = run()
    reason = (
        "it depends on the global random state (torch.manual_seed / random.seed changed it)"
        if _equal(third, second)
        else "it differs between runs even with the same global random state"
    )
    check.fail("generator", f"the same generator seed gave different outputs: {reason}")


def _check_image(
    cls: type[ImageAugmenter], config: dict[str, Any], images: Tensor, check: _Check, seed: int
) -> None:
    declared = {p.name for p in cls.params}
    if "p" in declared and "p" not in config:
        config["p"] = 1.0
    aug = check.call("runs", f"{cls.__name__}(**{config})", cls, **config)
    n, classes = len(images), 4
    labels = torch.arange(n) % classes
    targets = nn.functional.one_hot(labels, classes).float() if cls.mixes_targets else labels
    extra: dict[str, Any] = {}
    if cls.needs_model:
        extra = {"model": _attack_model(images, classes), "loss_fn": nn.functional.cross_entropy}
        before = _snapshot(extra["model"])
    kept_images, kept_targets = images.clone(), targets.clone()

    def run(batch: Tensor = images, ys: Tensor | None = targets) -> Any:
        return aug(batch, ys, generator=torch.Generator().manual_seed(seed), **extra)

    outs = []
    for global_seed in (1, 2):
        _reseed_globals(global_seed)
        outs.append(check.call("runs", f"augmenting a batch of shape {tuple(images.shape)}", run))
        if not (torch.equal(images, kept_images) and torch.equal(targets, kept_targets)):
            check.fail("inputs_untouched", "the images or targets passed in were changed")
        if cls.needs_model:
            problem = _changes(before, extra["model"])
            if problem:
                check.fail("model_untouched", f"after augmenting, {problem}")
    out = outs[0]
    if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], Tensor)):
        check.fail(
            "runs",
            f"aug(images, targets) returned {type(out).__name__}, not a tuple (images, targets)",
        )
        return
    out_images, out_targets = out
    _check_image_output(out_images, images, check, "the batch")
    if cls.mixes_targets:
        _check_soft_targets(out_targets, n, classes, check)
    elif not torch.equal(out_targets, targets):
        check.fail("image.targets", "the targets came back changed")
    if not _equal(outs[1], out):
        _generator_failure(check, outs[1], run)
    single = check.call("runs", "augmenting one C x H x W image", run, images[0], targets[:1])
    _check_image_output(single[0], images[0], check, "one C x H x W image")
    if not cls.needs_model:  # a model fixes its input dtype
        double = check.call("runs", "augmenting a float64 batch", run, images.double())
        if double[0].dtype != torch.float64:
            check.fail("image.shape", f"a float64 batch came back as {double[0].dtype}")
    _check_per_sample(aug, images, targets, extra, check, seed)
    if "p" in declared:
        off = check.call("runs", f"{cls.__name__}(p=0)", cls, **{**config, "p": 0.0})
        got = check.call(
            "runs",
            "augmenting with p=0",
            off,
            images,
            targets,
            generator=torch.Generator().manual_seed(seed),
            **extra,
        )
        if not torch.equal(got[0], images):
            check.fail("image.p", "with p=0 some images changed")


def _check_image_output(out: Tensor, given: Tensor, check: _Check, what: str) -> None:
    if (out.shape, out.dtype, out.device) != (given.shape, given.dtype, given.device):
        check.fail(
            "image.shape",
            f"{what}: {tuple(given.shape)} {given.dtype} on {given.device} "
            f"came back as {tuple(out.shape)} {out.dtype} on {out.device}",
        )
    if not torch.isfinite(out).all():
        check.fail("image.range", f"{what}: the output contains NaN or inf")
    elif out.min() < 0 or out.max() > 1:
        check.fail("image.range", f"{what}: the output spans [{out.min():.3g}, {out.max():.3g}]")


def _check_soft_targets(targets: Tensor, n: int, classes: int, check: _Check) -> None:
    if not isinstance(targets, Tensor) or tuple(targets.shape) != (n, classes):
        got = tuple(targets.shape) if isinstance(targets, Tensor) else type(targets).__name__
        check.fail("mixing.targets", f"one-hot targets of shape {(n, classes)} came back as {got}")
        return
    sums = targets.sum(1)
    if (targets < 0).any() or not torch.allclose(sums, torch.ones_like(sums), atol=1e-4):
        check.fail(
            "mixing.targets",
            f"rows of the returned targets sum to {sums.tolist()} (min value {targets.min():.3g})",
        )


def _check_per_sample(
    aug: ImageAugmenter,
    images: Tensor,
    targets: Tensor,
    extra: dict[str, Any],
    check: _Check,
    seed: int,
) -> None:
    rule = "image.per_sample"
    n = len(images)
    generator = torch.Generator().manual_seed(seed)
    params = check.call(
        rule, "forward_parameters", aug.forward_parameters, images.shape, generator, images.device
    )
    for key, value in params.items():
        if not isinstance(value, Tensor) or value.dim() == 0 or len(value) != n:
            shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            check.fail(rule, f"params[{key!r}] has shape {shape}; expected first dimension {n}")
            return
    if aug.mixes_targets:
        return  # a mixed sample depends on its partner by design
    # samples of different ranges: a statistic of the whole batch (its min, max or mean) then
    # differs from each sample's own
    ramp = torch.linspace(0, 1, n, dtype=images.dtype, device=images.device).view(-1, 1, 1, 1)
    images = images * (0.3 + 0.5 * ramp) + (0.1 + 0.1 * ramp)
    whole = check.call(rule, "transform", aug.transform, images, params, targets=targets, **extra)
    for i in (0, n - 1):
        part = {k: v[i : i + 1] for k, v in params.items()}
        alone = check.call(
            rule,
            "transform on one sample",
            aug.transform,
            images[i : i + 1],
            part,
            targets=targets[i : i + 1],
            **extra,
        )
        if not torch.allclose(alone[0], whole[0][i : i + 1], atol=1e-5):
            check.fail(
                rule,
                f"sample {i} comes out differently alone than within the batch, "
                "with the same parameters",
            )
