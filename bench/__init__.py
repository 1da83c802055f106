"""Benchmarks of the ingest path on the local stack (``python -m bench.run``; not in tests)."""
