"""Benchmarks (never part of the test run): `make bench` prints JSON."""
