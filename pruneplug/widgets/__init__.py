"""ipywidgets for the course: controls generated from declared parameters, and explorers.

* :func:`controls` builds a control for every declared :class:`~pruneplug.Param` of a plugin
  (slider for a bounded number, one range slider for a linear min/max pair, dropdown for
  choices, checkbox for a bool, text box otherwise), with the parameter's help as tooltip.
  No plugin writes widget code.
* Explorers do real work on every change and **render by updating widget state** - a PNG drawn
  with matplotlib's Agg backend into an :class:`ipywidgets.Image`, an HTML table - never by
  printing or clearing output inside callbacks, which strict ``nbval`` rejects. Each exposes its
  last numbers as ``explorer.result`` so that the next cell can print them (and nbval checks it).
* What a control does not change (the trained model, the scores) is cached, so moving a slider
  only re-prunes and redraws.

The explorers: :class:`PruningExplorer` (scorer, pruner, amount -> accuracy, MACs, sparsity per
layer, weights or masks), :class:`RankingExplorer` (do two scorers rank weights alike?),
:class:`SensitivityViewer` (accuracy against the amount, one layer at a time),
:class:`TrainingCurves` (train on every change and overlay the curves),
:class:`AugmentationGallery` (augmented samples), :class:`DeploymentExplorer` (prune, quantise,
store sparse: size, latency and accuracy against the dense model deployed the same way) and
:class:`ResultsExplorer` (a sweep's results: filter by axis, metric against metric with error
bars over seeds, Pareto front).

The modules: :mod:`.controls` (controls, slider grids, :class:`PluginPicker`), :mod:`.explorer`
(the :class:`Explorer` base and rendering), :mod:`.pruning`, :mod:`.training`, :mod:`.gallery`,
:mod:`.deployment` and :mod:`.results` (the explorers). Every public name is importable from
``pruneplug.widgets``.
"""

from ..metrics import kendall, pruned_overlap, spearman
from .controls import (
    MAX_STEPS,
    MIN_STEPS,
    RANGE_JOIN,
    TARGET_STEPS,
    PluginPicker,
    SliderGrid,
    browser_snap,
    choose,
    control,
    controls,
    linear_grid,
    log_grid,
    nice_steps,
    param_controls,
    range_control,
    readout_format,
    slider_grid,
    value_slider,
    values,
)
from .deployment import Deployment, DeploymentExplorer
from .explorer import Explorer, figure_png, host, html_table
from .gallery import AugmentationGallery
from .pruning import (
    SENSITIVITY_AMOUNTS,
    PruningExplorer,
    RankingExplorer,
    ScoreCache,
    SensitivityViewer,
    first_input,
    removed_per_layer,
)
from .results import ResultsExplorer
from .training import Run, TrainingCurves

__all__ = [
    "MAX_STEPS",
    "MIN_STEPS",
    "SENSITIVITY_AMOUNTS",
    "RANGE_JOIN",
    "TARGET_STEPS",
    "AugmentationGallery",
    "Deployment",
    "DeploymentExplorer",
    "Explorer",
    "PluginPicker",
    "PruningExplorer",
    "RankingExplorer",
    "ResultsExplorer",
    "Run",
    "ScoreCache",
    "SensitivityViewer",
    "SliderGrid",
    "TrainingCurves",
    "browser_snap",
    "choose",
    "control",
    "controls",
    "figure_png",
    "first_input",
    "host",
    "html_table",
    "kendall",
    "linear_grid",
    "log_grid",
    "nice_steps",
    "param_controls",
    "pruned_overlap",
    "range_control",
    "readout_format",
    "removed_per_layer",
    "slider_grid",
    "spearman",
    "value_slider",
    "values",
]
