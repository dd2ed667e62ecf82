"""Training many copies of one model at once: the vectorized engine of fedbench's FL.

W copies of a model (W clients of a round, or K reference models × their clients) are held as
*stacked* parameters — every tensor with a leading axis of W, the ``torch.func.
stack_module_state`` layout — and one local SGD step of all of them is one batched
computation: batched matrix products for fully connected models, ``vmap`` over
``functional_call`` otherwise. The arithmetic is :class:`~fedbench.fl.client.SGDTraining`'s
(mean cross-entropy, ``torch.optim.SGD`` without dampening, the batch schedule of
:func:`~fedbench.fl.client.batch_schedule`), so the two engines agree to float rounding
(tests/fedbench/fl/test_stacked.py). Clients of different sizes take batches of different
sizes and different numbers of steps: :func:`pad_schedules` pads them to one shape with
weight-0 slots and masks the steps a client does not take. The simulation's vectorized engine
(:mod:`fedbench.fl.engine`) and the membership attacks' reference models train with it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn
from torch.func import functional_call, grad_and_value, vmap
from torch.nn import functional as F

from fedbench.fl.recipe import TrainingRecipe

StackedParams = dict[str, torch.Tensor]

_ELEMENTWISE = (nn.ReLU, nn.Sigmoid, nn.Tanh, nn.Identity)
StackedForward = Callable[[StackedParams, torch.Tensor], torch.Tensor]


def grouped_forward(base: nn.Module) -> StackedForward | None:
    """A forward pass for stacked copies of a fully connected ``nn.Sequential``, or None.

    For ``Flatten`` followed by ``Linear`` layers and elementwise activations (``mlp``,
    ``logreg``), every layer of all W copies is one batched matrix product (``baddbmm``) on
    inputs of shape (W, B, features): about twice as fast as ``vmap`` over ``functional_call``,
    whose per-call set-up dominates on models this small, and the same arithmetic (the tests
    compare both). Any other architecture gets None and the vmap path.
    """
    if not isinstance(base, nn.Sequential) or len(base) == 0:
        return None
    first = base[0]
    if not (isinstance(first, nn.Flatten) and first.start_dim == 1 and first.end_dim == -1):
        return None
    trainable = {n for n, p in base.named_parameters() if p.requires_grad}
    layers: list[tuple[str, nn.Module]] = []
    for name, module in list(base.named_children())[1:]:
        if isinstance(module, nn.Linear):
            own = {f"{name}.{n}" for n, _ in module.named_parameters()}
            if not own <= trainable:
                return None  # a frozen layer is not in the stacked parameters
        elif not isinstance(module, _ELEMENTWISE):
            return None
        layers.append((name, module))

    def forward(params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(2)
        for name, module in layers:
            if isinstance(module, nn.Linear):
                weight = params[f"{name}.weight"].transpose(1, 2)
                bias = params.get(f"{name}.bias")
                h = torch.bmm(h, weight) if bias is None else torch.baddbmm(
                    bias.unsqueeze(1), h, weight
                )
            else:
                h = module(h)
        return h

    return forward


def vmapped_forward(base: nn.Module) -> StackedForward:
    """A forward pass for stacked copies of any architecture torch.func can map over."""
    forward: StackedForward = vmap(lambda p, x: functional_call(base, p, (x,)))
    return forward


def stacked_gradients(base: nn.Module) -> StackedGradients:
    """Per-copy gradients for W stacked copies of ``base`` (see :func:`gradients_of`), through
    batched matrix products for fully connected models and ``vmap`` otherwise."""
    return gradients_of(grouped_forward(base) or vmapped_forward(base))


@dataclass(frozen=True)
class StackedStep:
    """One step's per-copy gradients and per-copy losses (detached, shape [W])."""

    grads: StackedParams
    losses: torch.Tensor


class StackedGradients(Protocol):
    """Per-copy gradients of stacked copies on their batches x [W, B, ...], y [W, B].

    ``weights`` [W, B], when given, weighs each example's cross-entropy (1/b for a copy's b
    real examples, 0 for padding), so a padded batch gives the mean over its real examples;
    without it every slot is real and the loss is the plain mean.
    """

    def __call__(
        self, params: StackedParams, x: torch.Tensor, y: torch.Tensor,
        weights: torch.Tensor | None = None,
    ) -> StackedStep: ...


def gradients_of(forward: StackedForward) -> StackedGradients:
    """Per-copy gradients of the mean cross-entropy, given a forward pass over stacked copies.

    The forward pass runs over all copies at once; one ordinary backward pass of the summed
    per-copy losses then gives every copy its own gradient (the copies share nothing). This is
    about twice as fast on small models as ``vmap(grad(loss))``, which re-enters autograd per
    call.
    """

    def gradients(
        params: StackedParams, x: torch.Tensor, y: torch.Tensor,
        weights: torch.Tensor | None = None,
    ) -> StackedStep:
        leaves = {n: p.detach().requires_grad_(True) for n, p in params.items()}
        with torch.enable_grad():
            logits = forward(leaves, x)
            per_example = F.cross_entropy(
                logits.flatten(0, 1), y.flatten(), reduction="none"
            ).view(y.shape)
            if weights is None:
                per_copy = per_example.sum(1) / y.shape[1]
            else:
                per_copy = (per_example * weights).sum(1)
            grads = torch.autograd.grad(per_copy.sum(), list(leaves.values()))
        return StackedStep(dict(zip(leaves, grads, strict=True)), per_copy.detach())

    return gradients


PerExampleGradients = Callable[
    [StackedParams, torch.Tensor, torch.Tensor], tuple[StackedParams, torch.Tensor]
]


def per_example_gradients(base: nn.Module) -> PerExampleGradients:
    """Each example's own cross-entropy gradient and loss, for stacked copies of ``base``.

    Given params [W, ...], x [W, B, ...] and y [W, B], returns gradients [W, B, ...] per
    tensor and losses [W, B]: what DP-SGD clips, one example at a time (``vmap`` over the
    copies of ``vmap`` over the examples of ``grad``).
    """

    def loss(params: StackedParams, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = functional_call(base, params, (x.unsqueeze(0),))
        return F.cross_entropy(logits, y.unsqueeze(0))

    per_copy = vmap(grad_and_value(loss), in_dims=(None, 0, 0))
    gradients: PerExampleGradients = vmap(per_copy, in_dims=(0, 0, 0))
    return gradients


def vectorizable(model: nn.Module, example: torch.Tensor, label: torch.Tensor) -> bool:
    """Whether torch.func can train stacked copies of ``model`` (no buffers, a trial step runs)."""
    if any(True for _ in model.buffers()):
        return False  # running statistics are updated in place, which vmap cannot batch
    params = {n: p.detach().unsqueeze(0).repeat(2, *[1] * p.dim())
              for n, p in model.named_parameters() if p.requires_grad}
    try:
        stacked_gradients(model)(params, example.expand(2, 1, *example.shape),
                                  label.reshape(1).expand(2, 1))
    except Exception:  # any torch.func limitation of this architecture: use the loop instead
        return False
    return True


@dataclass(frozen=True)
class PaddedSchedules:
    """W clients' batch schedules padded to one shape: one batched computation per local step.

    Clients of a round differ in size, so their batches (the last of an epoch is short, a
    client smaller than a batch is its own batch) and their numbers of steps differ. Padded
    slots carry weight 0, so each client's loss is the mean over its real batch; a client
    past its last step is inactive and keeps its parameters and momentum.

    Attributes:
        positions: [S, W, B] each step's batch, as positions into the client's own examples;
            padded slots hold 0, a position every client has.
        weights: [S, W, B] 1/b on a client's b real slots of a step, 0 elsewhere.
        active: [S, W] whether the client takes step s.
        full: Per step, whether every client takes it with B real examples: the plain mean,
            without weights (the arithmetic of equal clients).
        everyone: Per step, whether every client takes it (no client's state is kept).
        steps: [W] each client's number of steps.
    """

    positions: torch.Tensor
    weights: torch.Tensor
    active: torch.Tensor
    full: list[bool]
    everyone: list[bool]
    steps: torch.Tensor


def pad_schedules(
    schedules: Sequence[Sequence[torch.Tensor]], device: torch.device | None = None
) -> PaddedSchedules:
    """Pad the clients' schedules (:func:`~fedbench.fl.client.batch_schedule`) to one shape."""
    if not schedules or any(len(s) == 0 for s in schedules):
        raise ValueError("every client needs at least one local step")
    # One scatter for every (step, client, slot) at once: a slice assignment per client and
    # step costs more than the training of a one-example client.
    lengths = [int(b.shape[0]) for schedule in schedules for b in schedule]
    steps_of = [step for schedule in schedules for step in range(len(schedule))]
    clients_of = [client for client, schedule in enumerate(schedules) for _ in schedule]
    num_steps, batch = max(steps_of) + 1, max(lengths)
    positions = torch.zeros(num_steps, len(schedules), batch, dtype=torch.long)
    counts = torch.zeros(num_steps, len(schedules), dtype=torch.long)
    sizes = torch.tensor(lengths)
    counts[torch.tensor(steps_of), torch.tensor(clients_of)] = sizes
    starts = torch.repeat_interleave(torch.cumsum(sizes, 0) - sizes, sizes)
    slots = torch.arange(int(sizes.sum())) - starts
    positions[torch.repeat_interleave(torch.tensor(steps_of), sizes),
              torch.repeat_interleave(torch.tensor(clients_of), sizes), slots] = torch.cat(
        [b for schedule in schedules for b in schedule])
    real = torch.arange(batch) < counts.unsqueeze(-1)
    weights = real / counts.clamp(min=1).unsqueeze(-1)
    return PaddedSchedules(
        positions=positions.to(device),
        weights=weights.to(device),
        active=(counts > 0).to(device),
        full=(counts == batch).all(dim=1).tolist(),
        everyone=(counts > 0).all(dim=1).tolist(),
        steps=(counts > 0).sum(dim=0).to(device),
    )


@dataclass(frozen=True)
class StackedTraining:
    """W clients' local training: their trained parameters (stacked) and each client's mean
    loss over its own steps ([W], float64, as :class:`~fedbench.fl.client.SGDTraining`
    reports it)."""

    params: StackedParams
    losses: torch.Tensor


def train_stacked(
    gradients: StackedGradients,
    start: StackedParams,
    schedules: Sequence[Sequence[torch.Tensor]],
    rows: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    recipe: TrainingRecipe,
) -> StackedTraining:
    """W clients' local SGD at once, each on its own examples and batch order.

    Args:
        gradients: Per-copy gradients of stacked copies (:func:`stacked_gradients`).
        start: Each client's starting parameters, stacked ([W, ...] per tensor).
        schedules: Per client, the positions (into its own examples) of every local step's
            batch; clients may take different numbers of steps with different batch sizes.
        rows: [W, n] positions of each client's examples in ``x`` and ``y`` (n: the largest
            client; a smaller client's row is padded with any valid position, never read).
        x: The examples all clients draw from.
        y: Their labels.
        recipe: Learning rate and momentum.

    Returns:
        Each client's trained parameters and mean loss.
    """
    plan = pad_schedules(schedules, rows.device)
    local = dict(start)
    momentum: StackedParams | None = None
    total_loss = torch.zeros(rows.shape[0], dtype=torch.float64, device=rows.device)
    for step, (full, everyone) in enumerate(zip(plan.full, plan.everyone, strict=True)):
        positions = torch.gather(rows, 1, plan.positions[step])
        result = gradients(local, x[positions], y[positions],
                           None if full else plan.weights[step])
        total_loss += result.losses.to(torch.float64)
        local, momentum = sgd_step(local, momentum, result.grads, recipe,
                                   None if everyone else plan.active[step])
    return StackedTraining(local, total_loss / plan.steps.to(torch.float64))


def sgd_step(
    local: StackedParams, momentum: StackedParams | None, grads: StackedParams,
    recipe: TrainingRecipe, active: torch.Tensor | None,
) -> tuple[StackedParams, StackedParams | None]:
    """One torch.optim.SGD step (no dampening) of stacked copies: the new parameters and
    momentum buffers. ``active`` [W] (None: all) marks the copies that take this step; the
    others keep theirs. The buffer starts as the first gradient, so every copy must take the
    first step."""
    if recipe.momentum:
        # torch.optim.SGD: buf = g, then buf = μ·buf + g.
        stepped = grads if momentum is None else {
            n: recipe.momentum * momentum[n] + grads[n] for n in local
        }
        momentum = stepped if active is None or momentum is None else _where_active(
            active, stepped, momentum
        )
        grads = stepped
    # p ← p − lr·buf as torch.optim.SGD computes it (one fused add).
    trained = {n: torch.add(local[n], grads[n], alpha=-recipe.lr) for n in local}
    return (trained if active is None else _where_active(active, trained, local)), momentum


def _where_active(
    active: torch.Tensor, stepped: StackedParams, kept: StackedParams
) -> StackedParams:
    """The stepped tensors for active clients, the kept ones for clients past their last step."""
    return {
        n: torch.where(active.view(-1, *[1] * (kept[n].dim() - 1)), stepped[n], kept[n])
        for n in kept
    }


def local_sgd_stacked(
    gradients: StackedGradients,
    start: StackedParams,
    schedules: Sequence[Sequence[torch.Tensor]],
    rows: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    recipe: TrainingRecipe,
) -> StackedParams:
    """Each client's trained parameters, stacked (:func:`train_stacked` without the losses)."""
    return train_stacked(gradients, start, schedules, rows, x, y, recipe).params
