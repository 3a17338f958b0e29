"""The built-in per-sample image augmenters and the pipelines of pruneplug.augment."""

import itertools
import math
import warnings

import pruneplug_plugins.blur
import pruneplug_plugins.colour
import pruneplug_plugins.geometric
import pruneplug_plugins.noise
import pytest
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from pruneplug import (
    ImageAugmenter,
    MixingAugmenter,
    ParamError,
    PluginLoadWarning,
    get_augmenter,
)
from pruneplug.augment import Compose, OneOf, from_torchvision, warp
from pruneplug.registry import Registry

MODULES = [
    pruneplug_plugins.geometric,
    pruneplug_plugins.blur,
    pruneplug_plugins.noise,
    pruneplug_plugins.colour,
]
NAMES = {
    "geometric": ["hflip", "vflip", "rot90", "rotation", "affine", "crop", "resized_crop"],
    "blur": ["box_blur", "gaussian_blur"],
    "noise": ["gaussian_noise", "salt_and_pepper", "shot_noise", "impulse_noise"],
    "colour": ["brightness", "contrast", "saturation", "hue", "colour_jitter", "grayscale"],
}
ALL = [name for names in NAMES.values() for name in names]
#: settings under which every draw changes every sample
STRONG = {"affine": {"shear": 10.0}, "rotation": {"degrees": 30.0}, "hue": {"hue": 0.2}}
#: augmenters whose only randomness is p
NOT_RANDOM = {"hflip", "vflip", "grayscale"}


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def registry() -> Registry:
    registry = Registry(entry_points=False)
    for module in MODULES:
        registry.register_plugin(module)
    return registry


def make(registry: Registry, name: str, **params) -> ImageAugmenter:
    cls = registry.entry("augmenter", name).cls
    declared = {p.name for p in cls.params}
    params = {**STRONG.get(name, {}), **params}
    return cls(**{k: v for k, v in params.items() if k in declared})  # type: ignore[return-value]


def test_names_are_registered_through_entry_points():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginLoadWarning)  # other families may be missing
        names = Registry().names("augmenter")
    assert set(ALL) <= set(names)
    for part in ("flip", "rotation", "crop", "blur", "salt", "shot", "brightness", "hue"):
        assert any(part in name for name in names), part


@pytest.mark.parametrize("name", ALL)
def test_contract(registry, name):
    x = torch.rand(6, 3, 10, 10, generator=gen(1))
    before = x.clone()
    aug = make(registry, name, p=1.0)
    out = aug(x, generator=gen(0))
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(x, before), "the input was modified in place"
    assert torch.equal(out, aug(x, generator=gen(0))), "same seed, different output"
    if name not in NOT_RANDOM:
        assert not torch.equal(out, aug(x, generator=gen(1)))
    # p = 1: every sample gets apply()'s result
    params = aug.generate_parameters(x.shape, gen(0), x.device)
    expected = aug.apply(x, params)
    assert torch.allclose(out, expected, atol=1e-6)
    # p = 0: identity, and still a new tensor
    idle = make(registry, name, p=0.0)(x, generator=gen(0))
    assert torch.equal(idle, x) and idle.data_ptr() != x.data_ptr()
    # one C x H x W image is the batch of one
    single = aug(x[0], generator=gen(0))
    assert single.shape == x[0].shape and torch.equal(single, aug(x[:1], generator=gen(0))[0])
    assert aug(x.double(), generator=gen(0)).dtype == torch.float64


@pytest.mark.parametrize("name", [n for n in ALL if n not in NOT_RANDOM])
def test_parameters_are_drawn_per_sample(registry, name):
    params = make(registry, name).generate_parameters(torch.Size([8, 3, 10, 10]), gen(0), "cpu")
    assert params and all(len(v) == 8 for v in params.values())
    for key, value in params.items():
        rows = value.flatten(1) if value.dim() > 1 else value[:, None]
        assert len(torch.unique(rows, dim=0)) > 1, f"{key} is the same for every sample"


@pytest.mark.parametrize("name", ALL)
def test_probability_selects_samples(registry, name):
    x = torch.rand(40, 3, 8, 8, generator=gen(1))
    out = make(registry, name, p=0.5)(x, generator=gen(0))
    changed = (out != x).flatten(1).any(1)
    assert 8 < changed.sum() < 32


# --------------------------------------------------------------------------- geometric


def test_flips_by_hand(registry):
    x = torch.tensor([[[[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]]]])
    h = make(registry, "hflip", p=1.0)(x)
    v = make(registry, "vflip", p=1.0)(x)
    assert torch.equal(h, torch.tensor([[[[0.3, 0.2, 0.1], [0.6, 0.5, 0.4]]]]))
    assert torch.equal(v, torch.tensor([[[[0.4, 0.5, 0.6], [0.1, 0.2, 0.3]]]]))


@pytest.mark.parametrize("size", [3, 4, 7])
def test_right_angle_rotation_is_exactly_rot90(registry, size):
    x = torch.rand(4, 2, size, size, generator=gen(2))
    rotation = make(registry, "rotation", degrees=180.0)
    for quarter in (1, 2, 3, -1):
        params = {"angle": torch.full((4,), 90.0 * quarter)}
        out = rotation.apply(x, params)
        assert torch.equal(out, torch.rot90(x, quarter, dims=(-2, -1)))
    # counter-clockwise, by hand: the top-right corner goes to the top-left
    image = torch.tensor([[[[0.1, 0.2], [0.3, 0.4]]]])
    out = rotation.apply(image, {"angle": torch.tensor([90.0])})
    assert torch.equal(out, torch.tensor([[[[0.2, 0.4], [0.1, 0.3]]]]))


def test_rot90_turns_each_sample_by_its_own_k(registry):
    x = torch.rand(12, 1, 5, 5, generator=gen(3))
    aug = make(registry, "rot90", p=1.0)
    out = aug(x, generator=gen(0))
    k = aug.forward_parameters(x.shape, gen(0), "cpu")["k"]
    assert len(set(k.tolist())) == 3
    for i in range(12):
        assert torch.equal(out[i], torch.rot90(x[i], int(k[i]), dims=(-2, -1)))


def test_rotation_by_45_degrees_moves_a_pixel_where_expected(registry):
    # a 45-degree turn of the point one pixel right of the centre lands at (cos, -sin) * 1
    x = torch.zeros(1, 1, 9, 9)
    x[0, 0, 4, 8] = 1.0  # 4 pixels right of the centre (4, 4)
    rotation = make(registry, "rotation", degrees=90.0, interpolation="bilinear")
    out = rotation.apply(x, {"angle": torch.tensor([45.0])})
    y, x_ = divmod(int(out.flatten().argmax()), 9)
    offset = 4 / math.sqrt(2)
    assert (x_, y) == (round(4 + offset), round(4 - offset))


def test_affine_translation_and_scale_by_hand(registry):
    x = torch.rand(1, 1, 5, 5, generator=gen(4))
    aug = make(registry, "affine")
    params = {
        "angle": torch.zeros(1),
        "scale": torch.ones(1),
        "shear": torch.zeros(1),
        "translate": torch.tensor([[2.0, 1.0]]),
    }
    out = aug.apply(x, params)
    assert torch.equal(out[..., 1:, 2:], x[..., :-1, :-2])
    assert out[..., :1, :].eq(0).all() and out[..., :, :2].eq(0).all()
    # zoom x2 about the centre (2, 2): output (x, y) reads input (2 + (x - 2) / 2, ...)
    params.update(translate=torch.zeros(1, 2), scale=torch.full((1,), 2.0))
    out = aug.apply(x, params)
    assert torch.allclose(out[0, 0, 0, 0], x[0, 0, 1, 1])
    assert torch.allclose(out[0, 0, 1, 1], x[0, 0, 1:3, 1:3].mean())  # reads (1.5, 1.5)
    assert torch.allclose(out[0, 0, 2, 2], x[0, 0, 2, 2])


def test_fill_and_padding_modes(registry):
    x = torch.full((1, 1, 4, 4), 0.5)
    params = {"angle": torch.zeros(1), "scale": torch.ones(1), "shear": torch.zeros(1)}
    params["translate"] = torch.tensor([[1.5, 0.0]])
    for mode, fill, edge in (
        ("constant", 0.8, 0.8),
        ("border", 0.0, 0.5),
        ("reflection", 0.0, 0.5),
    ):
        aug = make(registry, "affine", padding_mode=mode, fill=fill)
        out = aug.apply(x, params)
        assert torch.allclose(out[..., 0], torch.tensor(edge)), mode


def test_crop_offset_by_hand(registry):
    x = torch.arange(20.0).view(1, 1, 4, 5) / 20
    aug = make(registry, "crop", padding=2, fill=1.0)
    params = {"offset": torch.tensor([[1, -2]])}  # window 1 right, 2 up
    out = aug.apply(x, params)
    assert torch.equal(out[0, 0, 2:, :4], x[0, 0, :2, 1:])
    assert out[0, 0, :2].eq(1).all() and out[0, 0, :, 4].eq(1).all()
    offsets = aug.generate_parameters(torch.Size([200, 1, 4, 5]), gen(0), "cpu")["offset"]
    assert offsets.min() == -2 and offsets.max() == 2


def test_resized_crop_by_hand(registry):
    x = (torch.arange(4.0) / 10).expand(1, 1, 3, 4)  # value = column / 10
    aug = make(registry, "resized_crop")
    whole = {"box": torch.tensor([[-0.5, -0.5, 4.0, 3.0]])}
    assert torch.equal(aug.apply(x, whole), x)
    # the box over columns 0-1 stretched to 4 columns: reads columns 0, 1/3, 2/3, 1
    left = {"box": torch.tensor([[-0.5, -0.5, 2.0, 3.0]])}
    out = aug.apply(x, left)
    assert torch.allclose(out[0, 0, 0], torch.tensor([0, 1 / 30, 2 / 30, 0.1]))
    boxes = aug.generate_parameters(torch.Size([500, 1, 20, 30]), gen(0), "cpu")["box"]
    area = boxes[:, 2] * boxes[:, 3] / 600
    ratio = boxes[:, 2] / boxes[:, 3]
    assert area.min() >= 0.08 - 1e-6 and area.max() <= 1 + 1e-6
    assert ratio.min() >= 0.75 - 1e-4 and ratio.max() <= 4 / 3 + 1e-4
    assert (boxes[:, 0] >= -0.5).all() and (boxes[:, 0] + boxes[:, 2] <= 29.5 + 1e-4).all()


def test_warp_copies_identity_and_exact_samples_bit_for_bit():
    x = torch.rand(3, 2, 6, 6, generator=gen(5))
    flip = torch.tensor([[-1.0, 0, 5], [0, 1, 0], [0, 0, 1]])
    turn = torch.tensor([[0.9, -0.1, 0.5], [0.1, 0.9, 0.2], [0, 0, 1]])
    out = warp(x, torch.stack([torch.eye(3), flip, turn]))
    assert torch.equal(out[0], x[0]) and torch.equal(out[1], x[1].flip(-1))
    assert not torch.equal(out[2], x[2]) and out.min() >= 0 and out.max() <= 1


# --------------------------------------------------------------------------- blur


def test_box_blur_of_a_known_image(registry):
    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 2, 2] = 0.9
    aug = make(registry, "box_blur", kernel_min=3, kernel_max=3, p=1.0)
    out = aug(x)
    expected = torch.zeros(5, 5)
    expected[1:4, 1:4] = 0.1
    assert torch.allclose(out[0, 0], expected, atol=1e-7)


def test_box_blur_sizes_are_per_sample(registry):
    aug = make(registry, "box_blur", kernel_min=1, kernel_max=5)
    params = {"size": torch.tensor([1, 3, 5])}
    kernels = aug.kernels(params)
    assert torch.allclose(kernels.sum((1, 2)), torch.ones(3))
    assert kernels[0, 2, 2] == 1 and (kernels[1] > 0).sum() == 9 and (kernels[2] > 0).sum() == 25
    x = torch.rand(3, 1, 6, 6, generator=gen(6))
    out = aug.apply(x, params)
    assert torch.equal(out[0], x[0]) and not torch.equal(out[1], x[1])


def test_gaussian_blur_matches_torchvision_per_sample(registry):
    x = torch.rand(3, 3, 9, 9, generator=gen(7))
    aug = make(registry, "gaussian_blur", kernel_size=5)
    sigma = torch.tensor([0.5, 1.0, 2.0])
    out = aug.apply(x, {"sigma": sigma})
    for i, s in enumerate(sigma.tolist()):
        assert torch.allclose(out[i], TF.gaussian_blur(x[i], [5, 5], [s, s]), atol=1e-5)


# --------------------------------------------------------------------------- noise


def test_gaussian_noise_statistics(registry):
    x = torch.full((32, 3, 16, 16), 0.5)
    out = make(registry, "gaussian_noise", sigma_min=0.1, sigma_max=0.1, p=1.0)(x, generator=gen())
    assert abs((out - x).mean()) < 0.005 and abs((out - x).std() - 0.1) < 0.005


def test_salt_and_pepper_sets_whole_pixels(registry):
    x = torch.full((32, 3, 16, 16), 0.5)
    aug = make(registry, "salt_and_pepper", amount_min=0.1, amount_max=0.1, salt_ratio=0.25, p=1.0)
    out = aug(x, generator=gen())
    white, black = out.eq(1).all(1), out.eq(0).all(1)
    assert torch.equal(out.ne(0.5).any(1), white | black)  # all channels together
    assert abs(white.float().mean() - 0.025) < 0.005 and abs(black.float().mean() - 0.075) < 0.01


def test_shot_noise_is_poisson(registry):
    x = torch.full((64, 1, 16, 16), 0.25)
    out = make(registry, "shot_noise", photons_min=8.0, photons_max=8.0, p=1.0)(x, generator=gen())
    counts = (out * 8).round()
    assert torch.allclose(out * 8, counts, atol=1e-5)  # whole photon counts
    for k in range(4):  # rate 2: P(K = k) = e^-2 2^k / k!
        expected = math.exp(-2) * 2**k / math.factorial(k)
        assert abs(counts.eq(k).float().mean() - expected) < 0.01


@pytest.mark.parametrize("largest_rate", [0.5, 60.0, 1000.0])
def test_poisson_quantile_is_the_smallest_count_whose_cdf_reaches_u(largest_rate):
    """The guess-and-narrow search gives what bisecting each value over the whole range does."""
    max_count = math.ceil(largest_rate + 8 * math.sqrt(largest_rate) + 10)
    rate = torch.rand(20_000, generator=gen(17)) * largest_rate
    u = torch.rand(20_000, generator=gen(18))
    rate[:100], rate[100:200], u[200:300], u[300:400] = 0.0, largest_rate, 0.0, 1 - 2**-24
    low, high = torch.zeros_like(rate), torch.full_like(rate, float(max_count))
    for _ in range(math.ceil(math.log2(max_count + 1))):
        mid = torch.floor((low + high) / 2)
        reaches = torch.special.gammaincc(mid + 1, rate) >= u
        low, high = torch.where(reaches, low, mid + 1), torch.where(reaches, mid, high)
    counts = pruneplug_plugins.noise.poisson_quantile(
        rate.view(100, 200), u.view(100, 200), max_count
    )
    assert counts.shape == (100, 200) and torch.equal(counts.flatten(), low)


def test_impulse_noise_replaces_single_values(registry):
    x = torch.full((32, 3, 16, 16), 0.5)
    aug = make(registry, "impulse_noise", amount_min=0.2, amount_max=0.2, p=1.0)
    changed = aug(x, generator=gen()).ne(0.5)
    assert abs(changed.float().mean() - 0.2) < 0.01
    assert changed.all(1).float().mean() < 0.02  # channels are hit independently


# --------------------------------------------------------------------------- colour


def test_brightness_and_contrast_by_hand(registry):
    x = torch.tensor([0.2, 0.5, 0.8]).view(1, 1, 1, 3)
    bright = make(registry, "brightness").apply(x, {"factor": torch.tensor([1.5])})
    assert torch.allclose(bright, torch.tensor([0.3, 0.75, 1.0]).view(1, 1, 1, 3))
    flat = make(registry, "contrast").apply(x, {"factor": torch.tensor([0.5])})
    assert torch.allclose(flat, torch.tensor([0.35, 0.5, 0.65]).view(1, 1, 1, 3))  # mean 0.5


def test_grayscale_weights_and_saturation_zero(registry):
    x = torch.rand(4, 3, 5, 5, generator=gen(8))
    grey = make(registry, "grayscale", p=1.0)(x)
    # torchvision weighs red 0.2989 rather than BT.601's 0.299
    assert torch.allclose(grey, TF.rgb_to_grayscale(x, 3), atol=1.5e-4)
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    assert torch.allclose(
        make(registry, "grayscale", p=1.0)(red).flatten(), torch.tensor([0.299] * 3)
    )
    desaturated = make(registry, "saturation").apply(x, {"factor": torch.zeros(4)})
    assert torch.allclose(desaturated, grey, atol=1e-6)
    one = torch.rand(2, 1, 4, 4)
    assert torch.equal(make(registry, "grayscale", p=1.0)(one), one)  # documented no-op


def test_hue_keeps_grey_and_luma_and_turns_red_towards_green(registry):
    aug = make(registry, "hue")
    x = torch.rand(3, 3, 4, 4, generator=gen(9)) * 0.5 + 0.25
    x[0] = 0.4  # a grey image
    turns = torch.tensor([0.3, 0.1, -0.1])
    out = aug.apply(x, {"turns": turns})
    weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    assert torch.allclose(out[0], x[0], atol=1e-6)
    assert torch.allclose((out[1:] * weights).sum(1), (x[1:] * weights).sum(1), atol=1e-5)
    back = aug.apply(out, {"turns": -turns})
    assert torch.allclose(back, x, atol=1e-5)
    red = torch.tensor([0.8, 0.1, 0.1]).view(1, 3, 1, 1)
    third = aug.apply(red, {"turns": torch.tensor([1 / 3])})
    assert third.flatten().argmax() == 1  # green is now the strongest channel


@pytest.mark.parametrize("channels", [3, 1])
def test_colour_jitter_is_its_four_ops_in_any_order(registry, channels):
    # mid-range colours: no step leaves [0, 1], so clamping once (the jitter) and after every
    # step (one op at a time) agree; strengths large enough that contrast's offset without the
    # brightness factor would be off by about 1e-2
    x = torch.rand(16, channels, 4, 4, generator=gen(12)) * 0.2 + 0.4
    rgb = channels == 3
    strengths = {"saturation": 0.3 * rgb, "hue": 0.1 * rgb}
    jitter = make(registry, "colour_jitter", brightness=0.3, contrast=0.3, **strengths)
    params = jitter.forward_parameters(x.shape, gen(), "cpu")
    out, _ = jitter.transform(x, params)
    ops = [
        (make(registry, "brightness"), {"factor": params["brightness"]}),
        (make(registry, "contrast"), {"factor": params["contrast"]}),
    ]
    if rgb:
        ops.append((make(registry, "saturation"), {"factor": params["saturation"]}))
        ops.append((make(registry, "hue"), {"turns": params["hue"]}))
    for order in itertools.permutations(ops):
        step = x
        for aug, op_params in order:
            step, _ = aug.transform(step, op_params)
        assert torch.allclose(out, step, atol=1e-5), [aug.name for aug, _ in order]
    assert set(params) == {"brightness", "contrast", "saturation", "hue", "applied"}


def test_colour_jitter_on_grey_images(registry):
    one = torch.rand(4, 1, 5, 5, generator=gen(11))
    out = make(registry, "colour_jitter", saturation=0.0, hue=0.0)(one, generator=gen())
    assert out.shape == one.shape and not torch.equal(out, one)
    with pytest.raises(ValueError, match="saturation=0 and hue=0"):
        make(registry, "colour_jitter")(one)


# --------------------------------------------------------------------------- bad input


def test_bad_images_are_refused(registry):
    aug = make(registry, "rotation")
    with pytest.raises(TypeError, match="float"):
        aug(torch.zeros(1, 3, 4, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        aug(torch.full((1, 3, 4, 4), 1.5))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        aug(torch.full((1, 3, 4, 4), float("nan")))
    with pytest.raises(ValueError, match="N x C x H x W"):
        aug(torch.zeros(4, 4))
    with pytest.raises(ValueError, match="empty"):
        aug(torch.zeros(0, 3, 4, 4))


def test_channels_an_augmenter_cannot_handle(registry):
    grey = torch.rand(2, 1, 4, 4)
    for name in ("hue", "saturation"):
        with pytest.raises(ValueError, match="3 channels"):
            make(registry, name)(grey)
    with pytest.raises(ValueError, match="1 .* or 3"):
        make(registry, "contrast")(torch.rand(2, 4, 4, 4))
    assert make(registry, "brightness")(torch.rand(2, 4, 4, 4)).shape == (2, 4, 4, 4)
    with pytest.raises(ValueError, match="square"):
        make(registry, "rot90")(torch.rand(2, 1, 4, 5))
    with pytest.raises(ValueError, match="too large"):
        make(registry, "gaussian_blur", kernel_size=9)(torch.rand(2, 1, 4, 4))


@pytest.mark.parametrize(
    ("name", "params", "match"),
    [
        ("rotation", {"degrees": 200.0}, "out of range"),
        ("hflip", {"p": 1.5}, "out of range"),
        ("gaussian_blur", {"kernel_size": 4}, "odd"),
        ("box_blur", {"kernel_min": 5, "kernel_max": 3}, "swap"),
        ("affine", {"scale_min": 2.0, "scale_max": 1.0}, "swap"),
        ("resized_crop", {"ratio_min": 2.0, "ratio_max": 1.0}, "ratio_min <= ratio_max"),
        ("gaussian_noise", {"sigma_min": 0.3, "sigma_max": 0.1}, "swap"),
        ("hue", {"hue": 0.7}, "out of range"),
        ("colour_jitter", {"order": "random"}, "unknown parameter"),
    ],
)
def test_bad_parameters(registry, name, params, match):
    with pytest.raises(ParamError, match=match):
        registry.create("augmenter", name, **params)


# --------------------------------------------------------------------------- pipelines


def test_compose_fuses_consecutive_stages(registry):
    pipeline = Compose(
        [
            make(registry, "hflip"),
            make(registry, "rotation"),
            make(registry, "resized_crop"),
            make(registry, "colour_jitter"),
            make(registry, "brightness"),
            make(registry, "gaussian_blur"),
            make(registry, "rotation", fill=0.5),
            make(registry, "crop", fill=0.5),
        ]
    )
    kinds = [("warp", [0, 1, 2]), ("colour", [3, 4]), (None, [5]), ("warp", [6, 7])]
    assert pipeline.stages == kinds
    clash = Compose([make(registry, "rotation"), make(registry, "rotation", fill=1.0)])
    assert clash.stages == [("warp", [0]), ("warp", [1])]


def test_fused_pipeline_equals_stage_by_stage(registry):
    x = torch.rand(16, 3, 8, 8, generator=gen(12))
    exact = [make(registry, n) for n in ("hflip", "vflip", "rot90", "crop")]
    fused = Compose(exact)(x, generator=gen())
    one_by_one, g = x, gen()
    for aug in exact:
        one_by_one = aug(one_by_one, generator=g)
    assert torch.equal(fused, one_by_one)
    assert torch.equal(fused, Compose(exact, fuse=False)(x, generator=gen()))
    # resampling once vs twice agrees when the second step is exact
    turn = [make(registry, "rotation", degrees=40.0), make(registry, "hflip")]
    assert torch.allclose(
        Compose(turn)(x, generator=gen()), Compose(turn, fuse=False)(x, generator=gen()), atol=1e-5
    )
    # colour maps compose exactly when no intermediate step clips
    mid = 0.3 + 0.4 * x
    colour = [
        make(registry, n, **{n: 0.1}) for n in ("brightness", "contrast", "saturation", "hue")
    ]
    assert torch.allclose(
        Compose(colour)(mid, generator=gen()),
        Compose(colour, fuse=False)(mid, generator=gen()),
        atol=1e-6,
    )


@pytest.mark.parametrize("name", ["brightness", "colour_jitter", "grayscale"])
def test_a_lone_colour_stage_in_a_pipeline_is_the_stage(registry, name):
    """A pipeline applies a colour stage through its map, the identity where the stage does
    not apply: the result is the stage's own, and the samples it skips are the input's."""
    x = torch.rand(32, 3, 6, 6, generator=gen(16))
    stage = make(registry, name, p=0.5)
    alone = stage(x, generator=gen())
    assert torch.equal(Compose([stage])(x, generator=gen()), alone)
    applied = stage.forward_parameters(x.shape, gen(), x.device)["applied"]
    assert 0 < applied.sum() < len(x)
    assert torch.equal(alone[~applied], x[~applied])


def test_compose_is_seeded_and_keeps_the_input(registry):
    x = torch.rand(8, 3, 8, 8, generator=gen(13))
    before = x.clone()
    pipeline = Compose(
        [make(registry, n) for n in ("hflip", "affine", "colour_jitter", "shot_noise")]
    )
    a = pipeline(x, generator=gen(1))
    assert torch.equal(a, pipeline(x, generator=gen(1))) and not torch.equal(
        a, pipeline(x, generator=gen(2))
    )
    assert torch.equal(x, before) and a.min() >= 0 and a.max() <= 1


def test_one_of_picks_per_sample(registry):
    x = torch.rand(32, 1, 6, 6, generator=gen(14))
    both = OneOf([make(registry, "hflip", p=1.0), make(registry, "vflip", p=1.0)])
    assert both.fusion == "warp"
    out = both(x, generator=gen())
    h = (out == x.flip(-1)).flatten(1).all(1)
    v = (out == x.flip(-2)).flatten(1).all(1)
    assert (h ^ v).all() and 8 < h.sum() < 24
    chain = [both, make(registry, "crop", padding=2)]  # the OneOf fuses with the crop
    assert Compose(chain).stages == [("warp", [0, 1])]
    assert torch.equal(
        Compose(chain)(x, generator=gen()), Compose(chain, fuse=False)(x, generator=gen())
    )
    only_first = OneOf(
        [make(registry, "hflip", p=1.0), make(registry, "vflip", p=1.0)], weights=[1, 0]
    )
    assert torch.equal(only_first(x, generator=gen()), x.flip(-1))
    mixed = OneOf([make(registry, "hflip", p=1.0), make(registry, "gaussian_noise", p=1.0)], p=0.5)
    assert mixed.fusion is None
    out = mixed(x, generator=gen())
    kept = (out == x).flatten(1).all(1)
    assert 8 < kept.sum() < 24
    with pytest.raises(ValueError, match="weights"):
        OneOf([make(registry, "hflip")], weights=[1, 2])
    with pytest.raises(TypeError, match="list of augmenters"):
        Compose(make(registry, "hflip"))  # type: ignore[arg-type]


class SwapHalves(MixingAugmenter):
    """A stand-in mixing augmenter: averages each image with the next, and the targets."""

    name = "swap_halves"
    description = "test mixing"

    def mix(self, images, targets, params):
        soft = torch.nn.functional.one_hot(targets, 3).float() if targets.dim() == 1 else targets
        return (images + images.roll(1, 0)) / 2, (soft + soft.roll(1, 0)) / 2


def test_targets_pass_through_a_pipeline(registry):
    x = torch.rand(4, 3, 6, 6, generator=gen(15))
    y = torch.tensor([0, 1, 2, 0])
    pipeline = Compose([make(registry, "hflip"), SwapHalves(), make(registry, "brightness")])
    assert pipeline.mixes_targets
    images, targets = pipeline(x, y, generator=gen())
    assert images.shape == x.shape and targets.shape == (4, 3)
    assert torch.allclose(targets.sum(1), torch.ones(4))
    with pytest.raises(ValueError, match="mixes targets"):
        pipeline(x)
    plain_images, plain_targets = Compose([make(registry, "hflip")])(x, y)
    assert torch.equal(plain_targets, y)


def test_torchvision_adapter(registry):
    x = torch.rand(16, 3, 8, 8, generator=gen(16))
    aug = from_torchvision(v2.ColorJitter(brightness=0.5), p=0.5)
    state = torch.get_rng_state()
    out = aug(x, generator=gen())
    assert torch.equal(torch.get_rng_state(), state), "the global RNG was disturbed"
    assert torch.equal(out, aug(x, generator=gen()))
    changed = (out != x).flatten(1).any(1)
    assert 3 < changed.sum() < 13
    factors = {round(float((out[i] / x[i]).median()), 4) for i in range(16) if changed[i]}
    assert len(factors) == int(changed.sum())  # each sample drew its own factor
    mixed = Compose([make(registry, "hflip"), aug])(x, generator=gen())
    assert mixed.shape == x.shape
    with pytest.raises(ValueError, match="keep the shape"):
        from_torchvision(v2.RandomCrop(4))(x)


def test_constants_are_made_once_per_device_and_dtype():
    """Augmenters' per-call constants come from plumbing.constant: one tensor per arguments,
    so a GPU call does not copy host data (and wait for the device) every time."""
    from pruneplug.plumbing import constant

    grey = constant((0.299, 0.587, 0.114), "cpu")
    assert grey is constant((0.299, 0.587, 0.114), "cpu")
    assert torch.equal(grey, torch.tensor([0.299, 0.587, 0.114]))
    wide = constant(((1.0, 2.0), (3.0, 4.0)), torch.device("cpu"), torch.float64)
    assert wide.dtype == torch.float64 and wide.shape == (2, 2) and wide is not grey
    pipeline = Compose([pruneplug_plugins.geometric.HorizontalFlip(p=1.0)])
    images = torch.rand(2, 3, 4, 5)
    assert torch.equal(pipeline(images), images.flip(-1))
    assert torch.equal(pipeline(images), images.flip(-1))  # the cached matrix is unchanged
    # under torch.compile (traced by dynamo, run eagerly: no compiler needed) no cache is traced
    scaled = torch.compile(lambda t: constant((2.0, 3.0), "cpu") * t, backend="eager")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(scaled(torch.ones(2)), torch.tensor([2.0, 3.0]))


def test_a_call_waits_for_the_device_once_per_stage(registry):
    """Each device read (``bool``, ``int``, ``.item()`` of a tensor) stalls a GPU's queue, so
    a call reads once per stage at most: the range check, then one count of ``applied`` that
    answers both "no sample?" and "every sample?" (and one per warp mode). A call that drew
    its own parameters with p = 1 applies them all without counting."""
    from pruneplug.benchmarks.augment import dispatch_counts

    x = torch.rand(16, 3, 8, 8, generator=gen(15))
    hflip = make(registry, "hflip")  # p = 0.5: some samples
    assert dispatch_counts(lambda t: hflip(t, generator=gen()), x)[1] == 2
    blur = make(registry, "gaussian_blur", p=0.0)  # no sample
    assert dispatch_counts(lambda t: blur(t, generator=gen()), x)[1] == 2
    brightness = make(registry, "brightness")  # p = 1: the range check only
    assert dispatch_counts(lambda t: brightness(t, generator=gen()), x)[1] == 1
    # the range check, the fused warp's modes and the blur's count (p = 0.5); the pipeline
    # (no p) and its colour stage (one pass, identity maps for skipped samples) count nothing
    pipeline = Compose(
        [make(registry, n) for n in ("hflip", "rotation", "colour_jitter", "gaussian_blur")]
    )
    assert dispatch_counts(lambda t: pipeline(t, generator=gen()), x)[1] == 3


# --------------------------------------------------------------------------- the caller's data


def test_no_call_returns_a_view_of_its_input():
    x = torch.rand(1, 3, 4, 4)
    kept = x.clone()
    untouched = OneOf([get_augmenter("hflip", p=0.0), get_augmenter("gaussian_noise", p=0.0)])

    class Identity(ImageAugmenter):  # apply may return its input untouched
        name, description = "identity", "returns the images it is given"

        def apply(self, images, params):
            return images

    for aug in (untouched, Identity(), Compose([Identity()])):
        out = aug(x, generator=gen())
        out.zero_()
        assert torch.equal(x, kept), aug


def test_from_torchvision_never_writes_into_the_batch_and_wants_floats():
    x = torch.rand(2, 3, 8, 8)
    kept = x.clone()
    erased = from_torchvision(v2.RandomErasing(p=1.0, value=0, inplace=True))(x, generator=gen())
    assert torch.equal(x, kept) and (erased == 0).any()
    with pytest.raises(ValueError, match="returned a torch.uint8 image"):
        from_torchvision(v2.ToDtype(torch.uint8, scale=True))(x, generator=gen())


def test_shot_noise_passes_gradients_straight_through():
    x = torch.rand(2, 3, 8, 8)
    plain = get_augmenter("shot_noise", p=1.0)(x, generator=gen())
    leaf = x.clone().requires_grad_()
    noisy = get_augmenter("shot_noise", p=1.0)(leaf, generator=gen())
    assert torch.allclose(noisy, plain, atol=1e-6)
    (noisy * torch.arange(8.0)).sum().backward()
    inside = (plain > 0) & (plain < 1)  # clamped values pass no gradient
    assert torch.equal(leaf.grad[inside], torch.arange(8.0).expand_as(x)[inside])


def test_a_call_under_inference_mode_keeps_later_calls_differentiable():
    contrast = get_augmenter("contrast", p=1.0)
    with torch.inference_mode():  # the first call makes the shared grey weights
        contrast(torch.rand(2, 3, 8, 8), generator=gen())
    x = torch.rand(2, 3, 8, 8, requires_grad=True)
    contrast(x, generator=gen()).sum().backward()
    assert x.grad is not None


@pytest.mark.parametrize("name", ["gaussian_blur", "box_blur"])
def test_a_blur_too_large_to_reflect_is_refused_whatever_the_draw(name):
    for seed in range(4):  # p = 0.5: some draws select no sample
        with pytest.raises(ValueError, match="too large to reflect at the border of 1 x 1"):
            get_augmenter(name)(torch.rand(1, 3, 1, 1), generator=gen(seed))


@pytest.mark.parametrize(
    "weights", [[math.nan, 1.0], [math.inf, 1.0], [True, 1.0], [1e-320, 0.0], [-1, 2], [1, "a"]]
)
def test_one_of_refuses_weights_it_cannot_draw_with(weights):
    with pytest.raises(ValueError, match="one finite, non-negative number per augmenter"):
        OneOf([get_augmenter("hflip"), get_augmenter("vflip")], weights=weights)


def test_compose_fuse_is_a_bool_and_shows_in_the_repr():
    with pytest.raises(TypeError, match="fuse must be True or False, got 'no'"):
        Compose([get_augmenter("hflip")], fuse="no")
    assert repr(Compose([get_augmenter("hflip")], fuse=False)).endswith(", fuse=False)")


def test_targets_that_are_not_a_tensor_are_named():
    with pytest.raises(TypeError, match=r"got list: convert them with torch.as_tensor"):
        get_augmenter("mixup", num_classes=3)(torch.rand(2, 3, 4, 4), [0, 1], generator=gen())
