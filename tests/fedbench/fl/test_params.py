"""Tests for fedbench.fl.params."""

from __future__ import annotations

import pytest
import torch

from fedbench.fl.params import FlatParameters, get_flat, num_params, set_flat


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


def _mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))


def test_flat_parameters_keep_the_model_and_load_in_place() -> None:
    model = _mlp()
    before = get_flat(model)
    params = list(model.parameters())
    flat = FlatParameters(model)
    assert torch.equal(get_flat(model), before)  # seating changes no value
    assert all(a is b for a, b in zip(params, model.parameters(), strict=True))
    vector = torch.randn(num_params(model))
    flat.load(vector)
    assert torch.equal(get_flat(model), vector)


def test_flat_parameters_never_alias_the_loaded_vector() -> None:
    model = _mlp()
    flat = FlatParameters(model)
    vector = torch.zeros(num_params(model))
    flat.load(vector)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()  # training writes into the private buffer, not into ``vector``
    assert torch.equal(vector, torch.zeros_like(vector))
    assert torch.equal(flat.buffer, get_flat(model)) and not torch.equal(flat.buffer, vector)


def test_flat_parameters_train_like_a_plain_model() -> None:
    plain, seated = _mlp(), _mlp()
    FlatParameters(seated)
    x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
    for model in (plain, seated):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        for _ in range(3):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
    assert torch.equal(get_flat(plain), get_flat(seated))


def test_flat_parameters_reseat_a_rebound_parameter() -> None:
    model = _mlp()
    flat = FlatParameters(model)
    model[0].weight.data = torch.zeros(4, 3)  # a stage rebinding storage must not be lost
    vector = torch.arange(num_params(model), dtype=torch.float32)
    flat.load(vector)
    assert torch.equal(get_flat(model), vector)
    with pytest.raises(ValueError, match="flat vector has 3 entries, model has 26"):
        flat.load(torch.zeros(3))
