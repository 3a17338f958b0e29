"""Sweeps: run a grid or random sample of experiments, keep every result, resume for free.

A sweep declares named axes (model, scorer, pruner, amount, schedule, recovery, augmenter, their
parameters, seed...) in Python or a TOML file; each trial is a pure function of its config that
returns metrics. :func:`run` validates the whole sweep first (every problem in one
:class:`SweepConfigError`), then runs it in process, on a local process pool (the default) or on
Ray, writing each finished trial at once to a JSON Lines store keyed by a hash of its config:
a rerun skips what is done, an interrupted one resumes. See ``pruneplug sweep --help``.

* :mod:`.spec` - :class:`Sweep`, expansion, :func:`config_hash`;
* :mod:`.standard` - the built-in trial (``trial="standard"``);
* :mod:`.runner` - :func:`run` and the backends; :mod:`.store` - the results file;
* :mod:`.results` - :class:`Results`, ``to_rows()`` and ``summary()`` (mean, std and the
  t-based 95 % interval of :func:`spread`);
* :mod:`.cli` - ``pruneplug sweep``; :mod:`.bench` - trials/s of the backends.
"""

from .bench import bench, toy_trial
from .results import Results, Spread, format_table, spread, t_quantile
from .runner import BACKENDS, PoolStartError, TrialError, run
from .spec import Sweep, SweepConfigError, config_hash
from .standard import standard_trial
from .store import ResultsStore, StoreWarning

__all__ = [
    "BACKENDS",
    "PoolStartError",
    "Results",
    "ResultsStore",
    "Spread",
    "StoreWarning",
    "Sweep",
    "SweepConfigError",
    "TrialError",
    "bench",
    "config_hash",
    "format_table",
    "run",
    "spread",
    "standard_trial",
    "t_quantile",
    "toy_trial",
]
