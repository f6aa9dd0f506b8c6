"""Benchmark: tornado_kerb's guarded handler against a bare-Tornado Negotiate floor.

Run it with ``make bench`` or ``python -m bench`` (``python -m bench --help`` lists the
options). It starts a throwaway MIT realm, two single-core Tornado servers and a load
generator on another core, and prints requests per second for both and their ratio.
"""
