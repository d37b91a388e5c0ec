"""The benchmark suite behind bench/run."""
