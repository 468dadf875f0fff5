"""cebench pretraining: context-encoder models, masks, losses, data readers and the training loop.

Everything that both pretraining and the transfer harnesses need (encoders, the encoder checkpoint
format, dataset readers) lives here, so that dependencies flow one way:
benchmarks -> transfer -> pretrain.
"""

__version__ = "0.1.0"
