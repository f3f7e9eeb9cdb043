"""Benchmarks of the sync pipeline on the emulators: speed, request economy and memory against
the physical bound the APIs allow (``make bench``; see :mod:`bench.cli`)."""
