"""Load benchmarks: ``python -m bench --help``."""
