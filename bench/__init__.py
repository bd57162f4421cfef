"""Benchmarks for memproxy: they start real processes and print tables; they are not tests.

    python -m bench overhead [--requests N] [--json out.json]
"""
