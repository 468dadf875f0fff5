"""cebench.pretrain: context-encoder models, masks, losses, the training loop, inpainting.

Installed as `cebench.pretrain` (this folder is mapped in pyproject.toml). It builds on
`cebench.core` and `cebench.data`; `cebench.transfer` and `cebench.benchmarks` build on it.
"""
