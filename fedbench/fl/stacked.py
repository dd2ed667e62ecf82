"""Training many copies of one model at once: the vectorized engine of fedbench's FL.

W copies of a model (W clients of a round, or K reference models × their clients) are held as
*stacked* parameters — every tensor with a leading axis of W, the ``torch.func.
stack_module_state`` layout — and one local SGD step of all of them is one batched
computation: batched matrix products for fully connected models, ``vmap`` over
``functional_call`` otherwise. The arithmetic is :class:`~fedbench.fl.client.SGDTraining`'s
(mean cross-entropy, ``torch.optim.SGD`` without dampening, the batch schedule of
:func:`~fedbench.fl.client.batch_schedule`), so the two engines agree to float rounding
(tests/fedbench/fl/test_stacked.py); the membership attacks' reference models train with it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.func import functional_call, vmap
from torch.nn import functional as F

from fedbench.fl.recipe import TrainingRecipe

StackedParams = dict[str, torch.Tensor]
StackedGradients = Callable[[StackedParams, torch.Tensor, torch.Tensor], StackedParams]

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


def gradients_of(forward: StackedForward) -> StackedGradients:
    """Per-copy gradients of the mean cross-entropy, given a forward pass over stacked copies.

    The forward pass runs over all copies at once; one ordinary backward pass of the summed
    per-copy losses then gives every copy its own gradient (the copies share nothing). This is
    about twice as fast on small models as ``vmap(grad(loss))``, which re-enters autograd per
    call.
    """

    def gradients(
        params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        leaves = {n: p.detach().requires_grad_(True) for n, p in params.items()}
        with torch.enable_grad():
            logits = forward(leaves, x)
            loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum")
            grads = torch.autograd.grad(loss / y.shape[1], list(leaves.values()))
        return dict(zip(leaves, grads, strict=True))

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


def local_sgd_stacked(
    gradients: StackedGradients,
    start: StackedParams,
    schedules: Sequence[Sequence[torch.Tensor]],
    rows: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    recipe: TrainingRecipe,
) -> StackedParams:
    """W clients' local SGD at once, each on its own examples and batch order.

    Args:
        gradients: Per-copy gradients of stacked copies (:func:`stacked_gradients`).
        start: Each client's starting parameters, stacked ([W, ...] per tensor).
        schedules: Per client, the positions (into its own examples) of every local step's
            batch; all clients take the same number of steps with the same batch size.
        rows: [W, n] positions of each client's n examples in ``x`` and ``y``.
        x: The examples all clients draw from.
        y: Their labels.
        recipe: Learning rate and momentum.

    Returns:
        Each client's trained parameters, stacked.
    """
    local = dict(start)
    momentum: StackedParams | None = None
    device = rows.device
    for step in range(len(schedules[0])):
        batch = torch.stack([s[step] for s in schedules]).to(device)
        positions = torch.gather(rows, 1, batch)
        grads = gradients(local, x[positions], y[positions])
        if recipe.momentum:
            # torch.optim.SGD without dampening: buf = g, then buf = μ·buf + g.
            momentum = grads if momentum is None else {
                n: recipe.momentum * momentum[n] + grads[n] for n in local
            }
            grads = momentum
        local = {n: local[n] - recipe.lr * grads[n] for n in local}
    return local
