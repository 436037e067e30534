"""Tiny trained models of the three families, their procedural data and the prompt check.

The edge of the pack: the demo node and ``scripts/demo``, the tests and the benchmarks
all load a tiny model through :func:`load_tiny`. Nothing in ``otcache_core`` or the
runtime imports from here.
"""
