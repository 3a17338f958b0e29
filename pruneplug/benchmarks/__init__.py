"""Benchmarks printed by ``pruneplug bench NAME``: each module has ``run(quick: bool) -> None``.

Figures are printed side by side with the anchor libraries, run in the same process; they are
never asserted as timings in the test suite (which only runs ``--quick``).
"""
