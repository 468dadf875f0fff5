"""cebench.core: what every layer shares, and nothing that knows about models or methods.

errors (`CebenchError` and its kinds), the config engine (`config`: typed dataclasses, YAML,
`key=value` overrides), atomic file IO (`io`), training checkpoints with rotation and RNG state
(`checkpoints`), the metric logger, provenance (git commit), device and distributed helpers.
Dependencies: benchmarks -> transfer -> pretrain -> core and data; core imports none of them.
"""
