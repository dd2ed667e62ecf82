"""Plain client training: the ``local_training`` stage when no defense replaces it."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from fedbench.data.tensors import TensorData
from fedbench.errors import DataError
from fedbench.fl.context import RoundContext
from fedbench.fl.params import get_flat
from fedbench.fl.recipe import TrainingRecipe
from fedbench.fl.stages import LocalResult, LocalTraining


def batch_schedule(
    num_examples: int, recipe: TrainingRecipe, generator: torch.Generator
) -> list[torch.Tensor]:
    """Positions of the examples in each local step, in order.

    FedSGD takes one batch (``batch_size`` examples, or all when it is None). FedAvg shuffles
    every epoch and runs ``local_steps`` steps (cycling over epochs) or ``local_epochs`` epochs.
    """
    if num_examples == 0:
        raise DataError("client has no data")
    size = min(recipe.batch_size or num_examples, num_examples)
    if recipe.algorithm == "fedsgd":
        return [torch.randperm(num_examples, generator=generator)[:size]]
    per_epoch = math.ceil(num_examples / size)
    steps = recipe.local_steps
    if steps is None:
        steps = recipe.local_epochs * per_epoch
    batches: list[torch.Tensor] = []
    while len(batches) < steps:
        order = torch.randperm(num_examples, generator=generator)
        batches.extend(order[i : i + size] for i in range(0, num_examples, size))
    return batches[:steps]


def used_positions(
    batches: list[torch.Tensor], num_examples: int, recipe: TrainingRecipe
) -> torch.Tensor:
    """Sorted positions of the examples ``batches`` touch: every one when FedAvg runs whole
    epochs (each epoch is a permutation of them all), else the union of the batches."""
    if recipe.algorithm == "fedavg" and recipe.local_steps is None:
        return torch.arange(num_examples)
    union: torch.Tensor = torch.unique(torch.cat(batches))  # torch types unique's result Any
    return union


class SGDTraining(LocalTraining):
    """Mini-batch SGD with cross-entropy, as FedSGD (one step) or FedAvg (epochs or steps)."""

    def train(
        self,
        model: nn.Module,
        data: TensorData,
        recipe: TrainingRecipe,
        *,
        client_id: int,
        ctx: RoundContext,
    ) -> LocalResult:
        if len(data) == 0:
            raise DataError(f"client {client_id} has no data")
        generator = ctx.streams.torch("local_training", ctx.round, client_id)
        batches = batch_schedule(len(data), recipe, generator)
        device = next(model.parameters()).device
        x, y = data.x.to(device), data.y.to(device)
        optimizer = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum)
        model.train()
        total_loss = 0.0
        for batch in batches:
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x[batch]), y[batch])
            loss.backward()
            optimizer.step()
            total_loss += float(loss.detach())
        used = used_positions(batches, len(data), recipe)
        return LocalResult(
            params=get_flat(model),
            num_examples=len(data),
            used_ids=data.ids[used],
            loss=total_loss / len(batches),
        )
