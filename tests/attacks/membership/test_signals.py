"""Membership signals: φ, stacked logits and queries."""

from __future__ import annotations

import numpy as np
import torch

from fedbench.attacks.membership.signals import (
    logit_confidence,
    queries,
    stacked_logits,
    true_class_probability,
    unflatten,
)
from fedbench.fl.params import get_flat, set_flat
from fedbench.registry import MODELS


def test_logit_confidence_is_the_log_odds_of_the_true_class() -> None:
    logits = torch.randn(3, 50, 7, dtype=torch.float64)
    y = torch.randint(0, 7, (50,))
    p = torch.softmax(logits, -1).gather(-1, y.expand(3, 50).unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(logit_confidence(logits, y), torch.log(p / (1 - p)))
    torch.testing.assert_close(true_class_probability(logits, y), p)


def test_logit_confidence_stays_finite_where_probabilities_saturate() -> None:
    logits = torch.tensor([[60.0, 0.0, 0.0], [0.0, 60.0, 0.0]])
    phi = logit_confidence(logits, torch.tensor([0, 0]))
    assert torch.isfinite(phi).all()
    assert phi[0] > 59 and phi[1] < -59  # log(p/(1-p)) ≈ ±(60 − log 2)


def test_stacked_logits_equal_one_forward_per_model() -> None:
    def factory() -> torch.nn.Module:
        return MODELS.create("lenet", in_shape=(1, 8, 8), num_classes=10)

    base = factory()
    rows = torch.stack([get_flat(base) + 0.01 * k for k in range(3)])
    x = torch.rand(20, 1, 8, 8)
    stacked = stacked_logits(lambda: base, rows, x, torch.device("cpu"))
    for k in range(3):
        model = factory()
        set_flat(model, rows[k])
        model.eval()
        with torch.no_grad():
            torch.testing.assert_close(stacked[k], model(x), atol=1e-5, rtol=1e-5)
    shapes = {n: t.shape for n, t in unflatten(base, rows).items()}
    assert shapes["fc.weight"] == (3, *base.fc.weight.shape)


def test_queries_mirror_images_only_when_asked() -> None:
    image = torch.arange(8.0).reshape(1, 1, 2, 4)
    mirrored = queries(image, data_kind="image", augment=True)
    assert len(mirrored) == 2
    np.testing.assert_array_equal(mirrored[1][0, 0, 0].numpy(), [3, 2, 1, 0])
    assert len(queries(image, data_kind="image", augment=False)) == 1
    assert len(queries(torch.zeros(5, 30), data_kind="tabular", augment=True)) == 1
