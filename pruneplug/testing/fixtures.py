"""Tiny models, batches, images and texts the checks run plugins on."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor, nn


def tiny_mlp() -> nn.Sequential:
    """A 64-16-12-10 MLP (Flatten first) for 1 x 8 x 8 inputs; initialised from torch's RNG."""
    return nn.Sequential(
        OrderedDict(
            flatten=nn.Flatten(),
            fc1=nn.Linear(64, 16),
            relu1=nn.ReLU(),
            fc2=nn.Linear(16, 12),
            relu2=nn.ReLU(),
            fc3=nn.Linear(12, 10),
        )
    )


def tiny_cnn() -> nn.Sequential:
    """Two Conv-BN-ReLU blocks (4 and 6 channels), pooling to 2 x 2 and a Linear classifier,
    for 1 x 8 x 8 inputs. Batch-norm affine parameters and statistics are randomised, so
    scorers that read them see distinct values."""
    conv1, bn1 = nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4)
    conv2, bn2 = nn.Conv2d(4, 6, 3, padding=1), nn.BatchNorm2d(6)
    with torch.no_grad():
        for bn in (bn1, bn2):
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_(0, 0.1)
            assert bn.running_mean is not None and bn.running_var is not None  # tracked stats
            bn.running_mean.normal_(0, 0.1)
            bn.running_var.uniform_(0.5, 1.5)
    return nn.Sequential(
        OrderedDict(
            conv1=conv1,
            bn1=bn1,
            relu1=nn.ReLU(),
            conv2=conv2,
            bn2=bn2,
            relu2=nn.ReLU(),
            pool=nn.AdaptiveAvgPool2d(2),
            flatten=nn.Flatten(),
            fc=nn.Linear(24, 10),
        )
    )


def _batches(example: Tensor, classes: int) -> list[tuple[Tensor, Tensor]]:
    """Two batches shaped like ``example`` with random class targets."""
    return [
        (torch.rand_like(example), torch.randint(0, classes, (len(example),))) for _ in range(2)
    ]


def _images(n: int = 6, shape: tuple[int, ...] = (3, 16, 16)) -> Tensor:
    """Random images in [0, 1], about 8 % of the pixels exactly 0 and 8 % exactly 1."""
    return (torch.rand(n, *shape) * 1.2 - 0.1).clamp(0, 1)


TEXTS = (
    "the film was not good at all",
    "a truly wonderful and moving story about two brothers",
    "I loved the acting but the plot was thin",
    "great",
)


def _attack_model(images: Tensor, classes: int) -> nn.Module:
    """A small classifier for ``images`` (with batch norm, in training mode)."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(images[0].numel(), 8),
        nn.BatchNorm1d(8),
        nn.ReLU(),
        nn.Linear(8, classes),
    )
