"""nbval settings for the chapters.

The chapters store only what is the same on every machine (shapes, counts, settings,
deterministic draws, text, and the claims of :mod:`pruneplug.claims` about training results),
so nbval compares them strictly under whatever numeric environment it is given: ``make test``
runs the course twice, with native vector kernels and 2 threads, and with ATen, oneDNN and MKL
held to baseline instructions and 1 thread. The kernels inherit this process's environment.
"""
