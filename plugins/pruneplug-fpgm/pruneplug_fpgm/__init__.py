"""pruneplug-fpgm: an example third-party pruneplug plugin.

It provides one scorer, ``fpgm`` (:class:`~pruneplug_fpgm.fpgm.FPGM`), and one image augmenter,
``cutout`` (:class:`~pruneplug_fpgm.cutout.Cutout`). pruneplug finds this module through the
entry point declared in ``pyproject.toml``::

    [project.entry-points.pruneplug]
    fpgm = "pruneplug_fpgm"

and calls the two hooks below, which register the classes.
"""

from pruneplug import hookimpl

from .cutout import Cutout
from .fpgm import FPGM

__all__ = ["FPGM", "Cutout"]


@hookimpl
def register_scorers(register):
    register(FPGM)


@hookimpl
def register_augmenters(register):
    register(Cutout)
