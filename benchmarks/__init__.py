"""cebench benchmarks: the suite runner, result tables and figures, speed benchmarks, and the CLI."""
