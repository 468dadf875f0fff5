"""Table 1's two readings: the hole of the composited image vs the raw prediction's whole region."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cebench.pretrain.inpaint import (
    image_masks,
    inpaint_metrics,
    inpaint_model,
    region_raw_metrics,
)

SIZE, REGION, OVERLAP = 32, 16, 4  # hole = the centre 8x8, band = 256 - 64 = 192 px of the region


class BandWrong(torch.nn.Module):
    """Predicts the whole image: exactly 0.6 (the truth) everywhere but black (-1) in the band."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.full_like(x, 0.6 * 2 - 1)
        lo = (SIZE - REGION) // 2
        y[..., lo : lo + REGION, lo : lo + REGION] = -1
        h0 = lo + OVERLAP
        y[..., h0 : h0 + REGION - 2 * OVERLAP, h0 : h0 + REGION - 2 * OVERLAP] = 0.6 * 2 - 1
        return y


def test_readings_differ_on_a_hand_made_prediction():
    images = np.full((2, SIZE, SIZE, 3), 153, np.uint8)  # 153 / 255 = 0.6
    holes = image_masks("center", 2, SIZE, region=REGION, overlap=OVERLAP, coverage=0.25, seed=0)
    assert holes[0].sum() == 64
    out, raw = inpaint_model(
        BandWrong(), images, holes, [0.5] * 3, torch.device("cpu"), region=REGION
    )
    assert raw.shape == (2, REGION, REGION, 3)
    # hole of the composited image: perfect
    hole = inpaint_metrics(out[0], images[0], holes[0])
    assert hole == {"l1": 0.0, "l2": 0.0}
    # whole region of the raw prediction: 192 of 256 pixels off by 0.6
    summary, per_image = region_raw_metrics(raw, images, REGION)
    assert per_image[0]["l1"] == pytest.approx(192 / 256 * 0.6, abs=1e-6)
    assert summary["region_raw_l1"] == pytest.approx(0.45, abs=1e-6)
    assert summary["region_raw_l2"] == pytest.approx(0.75 * 0.36, abs=1e-6)
    assert summary["region_raw_l2_percent"] == pytest.approx(27.0, abs=1e-4)
    assert summary["region_raw_l1_pm1"] == pytest.approx(0.9, abs=1e-6)  # test.py's [-1, 1] scale
    assert summary["region_raw_l2_pm1"] == pytest.approx(1.08, abs=1e-5)
    # test.py's PSNR: per image on (x+1)*127.5 with peak 255 = 10 log10(1 / l2) in [0, 1]
    want = 20 * math.log10(255 / math.sqrt(0.27 * 255**2))
    assert summary["region_raw_psnr_mean_per_image_db"] == pytest.approx(want, abs=1e-4)


def test_region_prediction_network_is_not_cropped():
    """A predict=region network returns the region itself; it must be scored as it is."""

    class RegionOnly(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.full((x.shape[0], 3, REGION, REGION), 1.0)  # white

    images = np.zeros((1, SIZE, SIZE, 3), np.uint8)
    holes = image_masks("center", 1, SIZE, region=REGION, overlap=OVERLAP, coverage=0.25, seed=0)
    _, raw = inpaint_model(
        RegionOnly(), images, holes, [0.5] * 3, torch.device("cpu"), region=REGION
    )
    summary, _ = region_raw_metrics(raw, images, REGION)
    assert summary["region_raw_l1"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="does not match"):
        region_raw_metrics(raw[:, :8], images, REGION)
