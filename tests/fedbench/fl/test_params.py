"""Tests for fedbench.fl.params."""

from __future__ import annotations

import pytest
import torch

from fedbench.fl.params import get_flat, num_params, set_flat


def test_round_trip() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    vector = torch.arange(num_params(model), dtype=torch.float32)
    set_flat(model, vector)
    assert torch.equal(get_flat(model), vector)
    assert torch.equal(model[0].bias.detach(), vector[12:16])


def test_set_flat_copies_instead_of_aliasing() -> None:
    # Training a model loaded from w_t must never rewrite w_t (Δ = w_i − w_t would become 0).
    model = torch.nn.Linear(3, 2)
    optimizer_params = list(model.parameters())
    vector = torch.zeros(num_params(model))
    set_flat(model, vector)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    assert torch.equal(vector, torch.zeros_like(vector))
    assert all(a is b for a, b in zip(optimizer_params, model.parameters(), strict=True))


def test_get_flat_is_detached_copy() -> None:
    model = torch.nn.Linear(2, 1)
    flat = get_flat(model)
    with torch.no_grad():
        model.weight.add_(1.0)
    assert not torch.equal(flat, get_flat(model)) and not flat.requires_grad


def test_wrong_length() -> None:
    with pytest.raises(ValueError, match="flat vector has 3 entries, model has 9"):
        set_flat(torch.nn.Linear(2, 3), torch.zeros(3))
