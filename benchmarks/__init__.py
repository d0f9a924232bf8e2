"""Benchmarks of noiseprop (issue 6): ``python -m benchmarks`` or ``make bench``.

Every figure is a ratio of two timings taken in the same run, interleaved (see :mod:`._timing`), and
the run rewrites the generated part of ``BENCHMARKS.md``. Nothing here is a test: the test suite holds
no timings.
"""
