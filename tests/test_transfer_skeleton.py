"""The three harnesses share one skeleton, one way of freezing, and a typed encoder record."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cebench.transfer import classify, detect, segment
from cebench.transfer.encoders import EncoderInfo, resolve_encoder
from cebench.transfer.harness import FrozenEncoder, Harness


def test_every_harness_runs_the_one_skeleton():
    for module, cls in (
        (classify, classify.Finetune),  # the two classification harnesses share the data code
        (classify, classify.Probes),
        (detect, detect.Detect),
        (segment, segment.Segment),
    ):
        assert issubclass(cls, Harness) and "run" not in vars(cls)  # no harness has its own run()
        assert cls.task == module.__name__.rsplit(".", 1)[-1]


def test_frozen_encoder_stays_in_eval_mode_and_without_gradients():
    class Model(FrozenEncoder):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
            self.head = nn.Linear(4, 2)

    m = Model()
    m.freeze_encoder()
    m.train()
    assert m.head.training and not m.encoder.training and not m.encoder[1].training
    assert not any(p.requires_grad for p in m.encoder.parameters())
    before = m.encoder[1].running_mean.clone()
    m.encoder(torch.randn(2, 3, 8, 8))
    assert torch.equal(before, m.encoder[1].running_mean)  # BatchNorm statistics untouched
    # the harness models use it
    for cls in (classify.FinetuneModel, detect.EncoderBackbone, segment.FCN):
        assert issubclass(cls, FrozenEncoder)


def test_resolved_encoder_is_a_typed_record():
    enc, info = resolve_encoder("random:tiny,width=4", input_size=32)
    assert isinstance(info, EncoderInfo)
    assert info.input_size == 32 and info.name == "tiny" and info["hash"] == info.hash
    assert info.as_dict()["spec"] == "random:tiny,width=4" and "path" not in info.as_dict()
    with pytest.raises(KeyError):
        info["nope"]  # noqa: B018
