"""The device policy: models, teachers, data and generators may sit on different devices.

Tests marked ``cuda`` need a CUDA GPU and are skipped without one; the unmarked ones check the
policy's logic on the CPU (device arguments, what is moved, where parameters are drawn).
"""

import copy

import pytest
import torch
import torchvision
from torch import Tensor, nn
from torch.utils.data import TensorDataset
from torchvision.transforms import v2

import pruneplug
from pruneplug import (
    ImageAugmenter,
    TextAugmenter,
    engine,
    metrics,
    recovery,
    schedules,
    serialize,
)
from pruneplug.augment import Compose, OneOf, from_torchvision
from pruneplug.models import cnn, mlp
from pruneplug.params import probability
from pruneplug.registry import Registry

HAS_CUDA = torch.cuda.is_available()
CLASSES = 4
N = 8


def cuda(test):
    """Mark ``test`` as needing a CUDA GPU (marker ``cuda``) and skip it where there is none."""
    return pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")(pytest.mark.cuda(test))


def gen(seed: int = 0, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def vectors(n: int = 64, features: int = 64, seed: int = 0) -> TensorDataset:
    """``n`` random CPU vectors labelled by which quarter of [0, features) their argmax is in."""
    x = torch.rand(n, features, generator=gen(seed))
    return TensorDataset(x, x.argmax(1) * CLASSES // features)


def small_images(n: int = 32, seed: int = 0) -> TensorDataset:
    """``n`` random 1 x 8 x 8 CPU images with random labels (for the CNN)."""
    g = gen(seed)
    return TensorDataset(
        torch.rand(n, 1, 8, 8, generator=g), torch.randint(CLASSES, (n,), generator=g)
    )


def devices_of(model: nn.Module) -> set[str]:
    """The device types of every parameter and buffer (masks included) of ``model``."""
    return {t.device.type for t in [*model.parameters(), *model.buffers()]}


def small_mlp() -> nn.Sequential:
    return mlp(hidden=(32,), num_classes=CLASSES)


# --------------------------------------------------------------------------- CPU: the policy


def test_device_none_means_where_the_model_is_and_moves_nothing():
    on_meta = nn.Linear(2, 2, device="meta")
    assert engine.training_device(on_meta, None) == torch.device("meta")
    assert devices_of(on_meta) == {"meta"}
    assert engine.model_device(nn.Flatten()) == torch.device("cpu")  # no tensors: the default
    assert engine.model_device(nn.Flatten(), default=torch.device("meta")) == torch.device("meta")


def test_device_cpu_given_explicitly_trains_exactly_as_device_none():
    default, explicit = small_mlp(), small_mlp()
    engine.train(default, vectors(), epochs=2, batch_size=16, progress=False)
    engine.train(explicit, vectors(), epochs=2, batch_size=16, device="cpu", progress=False)
    for a, b in zip(default.parameters(), explicit.parameters(), strict=True):
        assert torch.equal(a, b)
    assert engine.evaluate(explicit, vectors(), device=torch.device("cpu")) == engine.evaluate(
        default, vectors()
    )


@pytest.mark.parametrize(
    ("device", "message"),
    [("gpu", "'gpu' is not a device"), ("cuda:99", "cuda:99"), ("", "is not a device")],
)
def test_a_bad_device_fails_clearly_before_anything_is_trained(device, message):
    model = small_mlp()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match=message):
        engine.train(model, vectors(), epochs=1, device=device, progress=False)
    with pytest.raises(ValueError, match=message):
        engine.evaluate(model, vectors(), device=device)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])


@pytest.mark.skipif(HAS_CUDA, reason="checks the message on a machine without CUDA")
def test_cuda_without_a_gpu_says_so():
    with pytest.raises(ValueError, match="CUDA is not available"):
        engine.train(small_mlp(), vectors(), epochs=1, device="cuda", progress=False)


class Recorder(nn.Module):
    """Records the device of its input; its only tensor (a buffer) sits on ``device``."""

    def __init__(self, device: str) -> None:
        super().__init__()
        self.register_buffer("anchor", torch.zeros(1, device=device))
        self.seen: torch.device | None = None

    def forward(self, x: Tensor) -> Tensor:
        self.seen = x.device
        return torch.ones(len(x), 2)


def test_forward_on_moves_the_batch_to_the_model_and_the_output_back():
    model = Recorder("meta")
    out = engine.forward_on(model, torch.rand(3, 5))
    assert model.seen == torch.device("meta")  # the batch went to the model
    assert out.device == torch.device("cpu") and out.shape == (3, 2)
    assert devices_of(model) == {"meta"}  # the model did not move


class Probe(ImageAugmenter):
    """Records the device it is asked to draw on; returns the images unchanged."""

    name = "probe"
    params = (probability(0.5),)

    def generate_parameters(self, shape, generator, device):
        self.drawn_on = torch.device(device)
        return {"u": torch.rand(shape[0], generator=generator, device=device)}

    def apply(self, images, params):
        return images.clone()


def test_parameters_are_drawn_on_the_generators_device_and_returned_on_the_images_device():
    probe = Probe()
    params = probe.forward_parameters(torch.Size([N, 3, 4, 4]), gen(0), torch.device("meta"))
    assert probe.drawn_on == torch.device("cpu")
    assert {key: value.device.type for key, value in params.items()} == {
        "u": "meta",
        "applied": "meta",
    }


REGISTRY = Registry()
IMAGE_AUGMENTERS = sorted(
    name
    for name in REGISTRY.names("augmenter")
    if issubclass(REGISTRY.entry("augmenter", name).cls, ImageAugmenter)
)


def build(name: str) -> ImageAugmenter:
    """A registered image augmenter, or one of the pipelines, with settings any batch accepts."""
    if name == "compose":
        return Compose([build("affine"), build("brightness"), build("gaussian_noise")])
    if name == "one_of":
        return OneOf([build("rotation"), build("crop"), build("mixup")], p=0.7)
    if name == "torchvision":
        return from_torchvision(v2.RandomErasing(p=1.0), p=0.5)
    cls = REGISTRY.entry("augmenter", name).cls
    declared = {p.name for p in cls.params}
    return cls(**({"num_classes": CLASSES} if "num_classes" in declared else {}))


ALL_IMAGE_AUGMENTERS = [*IMAGE_AUGMENTERS, "compose", "one_of", "torchvision"]


def batch(device: str = "cpu") -> tuple[Tensor, Tensor]:
    g = gen(1)
    images = torch.rand(N, 3, 16, 16, generator=g)
    targets = torch.randint(CLASSES, (N,), generator=g)
    return images.to(device), targets.to(device)


def linear_model(device: str = "cpu") -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, CLASSES)).to(device)


def augment(
    aug: ImageAugmenter, images: Tensor, targets: Tensor, generator, model: nn.Module
) -> tuple[Tensor, Tensor]:
    extra = {"model": model} if aug.needs_model else {}
    return aug(images, targets, generator=generator, **extra)


@pytest.mark.parametrize("name", ALL_IMAGE_AUGMENTERS)
def test_a_cpu_call_draws_exactly_what_forward_parameters_draws(name):
    aug, (images, targets) = build(name), batch()
    direct = gen(5)
    aug.forward_parameters(images.shape, direct, images.device)
    called = gen(5)
    out, new_targets = augment(aug, images, targets, called, linear_model())
    assert torch.equal(called.get_state(), direct.get_state())  # nothing else was drawn
    again, again_targets = augment(aug, images, targets, gen(5), linear_model())
    assert torch.equal(out, again) and torch.equal(new_targets, again_targets)


def test_a_generator_must_be_a_torch_generator():
    images, _ = batch()
    with pytest.raises(TypeError, match="torch.Generator"):
        build("hflip")(images, generator=0)
    with pytest.raises(TypeError, match="torch.Generator"):
        pruneplug.get_augmenter("random_swap")(["a short sentence"], generator=0)


# --------------------------------------------------------------------------- CUDA: training


@cuda
def test_train_without_a_device_leaves_the_model_where_it_is():
    on_cpu = small_mlp()
    engine.train(on_cpu, vectors(), epochs=1, progress=False)
    assert devices_of(on_cpu) == {"cpu"}
    on_gpu = small_mlp().cuda()
    history = engine.train(on_gpu, vectors(), epochs=2, val_data=vectors(seed=1), progress=False)
    assert devices_of(on_gpu) == {"cuda"}  # the CPU data came to the model, batch by batch
    assert all(0.0 <= a <= 1.0 for a in history["val_accuracy"])


@cuda
def test_train_and_fine_tune_on_cuda_match_the_cpu():
    on_cpu, on_gpu = small_mlp(), small_mlp()
    engine.train(on_cpu, vectors(), epochs=2, batch_size=16, progress=False)
    same = engine.train(on_gpu, vectors(), epochs=2, batch_size=16, device="cuda", progress=False)
    assert devices_of(on_gpu) == {"cuda"}  # device= moved the model in place
    for a, b in zip(on_cpu.parameters(), on_gpu.parameters(), strict=True):
        assert torch.allclose(a, b.cpu(), rtol=1e-3, atol=1e-4)
    assert len(same) == 2
    engine.fine_tune(on_gpu, vectors(), epochs=1, progress=False)  # stays on the GPU
    assert devices_of(on_gpu) == {"cuda"}
    x, _ = vectors()[:4]
    assert on_gpu(x.cuda()).shape == (4, CLASSES)
    assert 0.0 <= engine.evaluate(on_gpu, vectors())["accuracy"] <= 1.0


@cuda
def test_masked_models_train_on_cuda_and_keep_their_zeros():
    pruned = schedules.one_shot(small_mlp(), "magnitude", "unstructured", 0.8).cuda()
    engine.train(pruned, vectors(), epochs=2, progress=False)
    assert devices_of(pruned) == {"cuda"}
    for layer in pruneplug.prunable_layers(pruned).values():
        assert layer.weight_mask.device.type == "cuda"
        assert not layer.weight[layer.weight_mask == 0].any()
    assert metrics.global_sparsity(pruned) == pytest.approx(0.8, abs=0.01)
    dense = small_mlp()
    agp = schedules.gradual(
        dense, "magnitude", "unstructured", 0.5, data=vectors(), epochs=2, steps=2, device="cuda"
    )
    assert devices_of(agp.model) == {"cuda"} and devices_of(dense) == {"cpu"}
    assert metrics.global_sparsity(agp.model) == pytest.approx(0.5, abs=0.01)


@cuda
@pytest.mark.parametrize(("student_on", "teacher_on"), [("cuda", "cpu"), ("cpu", "cuda")])
def test_distillation_with_the_teacher_on_another_device(student_on, teacher_on):
    student, teacher = small_mlp().to(student_on), small_mlp().to(teacher_on)
    history = recovery.distill(student, teacher, vectors(), epochs=1, progress=False)
    assert devices_of(student) == {student_on} and devices_of(teacher) == {teacher_on}
    assert torch.isfinite(torch.tensor(history["train_loss"])).all()
    conv_student = cnn(in_channels=1, num_classes=CLASSES, widths=(4, 8)).to(student_on)
    conv_teacher = cnn(in_channels=1, num_classes=CLASSES, widths=(4, 8)).to(teacher_on)
    history = recovery.distill(
        conv_student,
        conv_teacher,
        small_images(),
        attention_pairs=[("block1", "block1")],
        epochs=1,
        progress=False,
    )
    assert torch.isfinite(torch.tensor(history["train_loss"])).all()
    assert devices_of(conv_teacher) == {teacher_on}


@cuda
def test_recipe_high_sparsity_on_cuda():
    dense = small_mlp()
    result = schedules.recipe_high_sparsity(
        dense, 0.9, data=vectors(), epochs=2, device="cuda", progress=False
    )
    assert devices_of(result.model) == {"cuda"} and devices_of(dense) == {"cpu"}
    assert metrics.global_sparsity(result.model) == pytest.approx(0.9, abs=0.01)
    on_gpu = small_mlp().cuda()  # no device=: trains where the model is, CPU teacher given
    result = schedules.recipe_high_sparsity(
        on_gpu, 0.9, data=vectors(), epochs=2, teacher=small_mlp(), progress=False
    )
    assert devices_of(result.model) == {"cuda"}


@cuda
def test_structured_pruning_of_a_torchvision_model_on_cuda():
    model = torchvision.models.resnet18(weights=None, num_classes=10).cuda().eval()
    x = torch.rand(2, 3, 32, 32)
    scores = pruneplug.get_scorer("magnitude")(model)
    pruned = pruneplug.get_pruner("structured")(model, scores, amount=0.5).eval()
    assert devices_of(pruned) == {"cuda"}
    with torch.no_grad():
        assert pruned(x.cuda()).shape == (2, 10)
    assert metrics.macs(pruned, x) < 0.4 * metrics.macs(model, x)  # CPU input, moved
    # a data-needing scorer gets CPU batches and moves them to the model
    taylor = schedules.one_shot(
        model, "taylor", "structured", 0.5, data=[(x, torch.tensor([1, 2]))]
    ).eval()
    with torch.no_grad():
        assert taylor(x.cuda()).shape == (2, 10)


@cuda
def test_compare_with_the_model_on_cuda_and_the_data_on_the_cpu():
    dense = small_mlp()
    pruned = schedules.one_shot(dense, "magnitude", "unstructured", 0.5)
    x, _ = vectors()[:1]
    on_cpu = metrics.compare(dense, pruned, x, vectors(), latency=False)
    on_gpu = metrics.compare(dense, copy.deepcopy(pruned).cuda(), x, vectors())
    for key in ("parameters", "nonzero", "sparsity", "macs"):
        assert on_gpu[key] == on_cpu[key]
    assert on_gpu["accuracy"][1] == pytest.approx(on_cpu["accuracy"][1], abs=2 / 64)
    assert on_gpu["latency_ms"][1] > 0


@cuda
def test_a_model_saved_on_cuda_loads_on_either_device(tmp_path):
    pruned = schedules.one_shot(small_mlp(), "magnitude", "unstructured", 0.5).cuda()
    x, _ = vectors()[:4]
    for location in ("cuda", "cpu"):
        path = tmp_path / f"{location}.pt"
        serialize.save(pruned, path)
        loaded = serialize.load(path, map_location=location)
        assert devices_of(loaded) == {location}
        with torch.no_grad():
            assert torch.allclose(loaded(x.to(location)).cpu(), pruned(x.cuda()).cpu(), atol=1e-5)


# --------------------------------------------------------------------------- CUDA: augmenters


def close(a: Tensor, b: Tensor) -> bool:
    """Equal up to float rounding: mean absolute difference below 1e-3.

    A mean rather than every value, because a kernel on another device may round one value of
    a discrete step (a photon count, a gradient sign) the other way; a different draw moves
    the mean by about 0.1.
    """
    return (a.cpu().float() - b.cpu().float()).abs().mean().item() < 1e-3


@cuda
@pytest.mark.parametrize("name", ALL_IMAGE_AUGMENTERS)
def test_a_cpu_generator_draws_the_same_on_cuda_images(name):
    aug = build(name)
    images, targets = batch()
    on_cpu = aug.forward_parameters(images.shape, gen(3), torch.device("cpu"))
    on_gpu = aug.forward_parameters(images.shape, gen(3), torch.device("cuda"))
    assert on_cpu.keys() == on_gpu.keys()
    for key, value in on_gpu.items():
        assert value.device.type == "cuda" and torch.equal(value.cpu(), on_cpu[key]), key
    out_cpu, t_cpu = augment(aug, images, targets, gen(3), linear_model())
    out_gpu, t_gpu = augment(aug, images.cuda(), targets.cuda(), gen(3), linear_model("cuda"))
    assert out_gpu.device.type == "cuda" and t_gpu.device.type == "cuda"
    assert close(out_gpu, out_cpu) and close(t_gpu, t_cpu)


@cuda
@pytest.mark.parametrize("name", ALL_IMAGE_AUGMENTERS)
def test_a_cuda_generator_works_with_images_on_either_device(name):
    aug = build(name)
    images, targets = batch("cuda")
    first, first_targets = augment(aug, images, targets, gen(4, "cuda"), linear_model("cuda"))
    again, again_targets = augment(aug, images, targets, gen(4, "cuda"), linear_model("cuda"))
    assert first.device.type == "cuda" and first.shape == images.shape
    assert close(first, again) and close(first_targets, again_targets)
    on_cpu, cpu_targets = augment(aug, images.cpu(), targets.cpu(), gen(4, "cuda"), linear_model())
    assert on_cpu.device.type == "cpu" and cpu_targets.device.type == "cpu"
    assert close(on_cpu, first) and close(cpu_targets, first_targets)


@cuda
@pytest.mark.parametrize("model_on", ["cpu", "cuda"])
@pytest.mark.parametrize("name", ["fgsm", "pgd"])
def test_adversarial_augmenters_attack_a_model_on_another_device(name, model_on):
    aug = build(name)
    images, targets = batch()
    model = linear_model(model_on)
    for images_on in ("cpu", "cuda"):
        out, _ = aug(images.to(images_on), targets, generator=gen(2), model=model)
        assert out.device.type == images_on
        assert (out.cpu() - images).abs().max() <= aug.config["eps"] + 1e-6
        assert devices_of(model) == {model_on}


@cuda
@pytest.mark.parametrize("name", ["random_swap", "random_deletion", "eda"])
def test_text_augmenters_take_a_cuda_generator(name):
    aug = pruneplug.get_augmenter(name)
    assert isinstance(aug, TextAugmenter)
    texts = ["the film was good and the music was better", "a dull and slow story"]
    first = aug(texts, generator=gen(0, "cuda"))
    assert first == aug(texts, generator=gen(0, "cuda"))
    assert len(first) == 2 and all(isinstance(t, str) and t for t in first)
