"""Benchmarks behind `riskstream bench`; their figures go to docs/benchmarks.md."""

from riskstream.bench.core import BenchResult, machine_info

__all__ = ["BenchResult", "machine_info"]
