"""Benchmarks of the gateway's hot path beside bare pass-throughs and LiteLLM.

Run with ``make bench`` (or ``python -m benchmarks.run``); results go to ``benchmarks/RESULTS.md``.
"""
