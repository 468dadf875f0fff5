"""cebench.benchmarks: the suite runner, result tables and figures, and speed benchmarks.
Installed as `cebench.benchmarks`."""
