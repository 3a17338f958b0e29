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

The modules: :mod:`.kernels` (the pixel passes :func:`warp` and :func:`colour_pass`, and
:func:`colour_affine`, the composed colour map), :mod:`.bases` (:class:`GeometricAugmenter`,
:class:`ColourAugmenter` and their ready-made parameters), :mod:`.pipeline` (:class:`Compose`,
:class:`OneOf`) and :mod:`.adapters` (:func:`from_torchvision`). Every public name is
importable from ``pruneplug.augment``.
"""

from .adapters import TorchvisionAugmenter, from_torchvision
from .bases import FILL, INTERPOLATION, PADDING, ColourAugmenter, GeometricAugmenter
from .kernels import (
    INTERPOLATIONS,
    PADDING_MODES,
    ColourMap,
    WarpMap,
    colour_affine,
    colour_pass,
    merge_options,
    warp,
)
from .pipeline import Compose, OneOf, as_colour, as_warp

__all__ = [
    "FILL",
    "INTERPOLATION",
    "INTERPOLATIONS",
    "PADDING",
    "PADDING_MODES",
    "ColourAugmenter",
    "ColourMap",
    "Compose",
    "GeometricAugmenter",
    "OneOf",
    "TorchvisionAugmenter",
    "WarpMap",
    "as_colour",
    "as_warp",
    "colour_affine",
    "colour_pass",
    "from_torchvision",
    "merge_options",
    "warp",
]
