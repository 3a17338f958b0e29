"""``pruneplug bench sweep``: trials per second in-process against the local process pool."""

from __future__ import annotations

from pruneplug.sweep import bench


def run(quick: bool = False) -> None:
    """Print the sweep backends' throughput on toy trials (``quick``: a 16-trial sweep)."""
    bench(quick)
