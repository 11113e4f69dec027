"""piko's benchmark suite: `python -m benchmarks` runs every bench_*.py against its peers.

See docs/benchmarks.md. Nothing here is imported by piko itself.
"""
