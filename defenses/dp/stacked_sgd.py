"""Local DP-SGD for a chunk of clients at once: Opacus' mechanism, computed on stacked copies.

:class:`~fedbench.defenses.dp.local_sgd.OpacusTraining` trains one client at a time through
Opacus. For the vectorized engine (:mod:`fedbench.fl.engine`) it trains a chunk of clients here
instead, with the same mechanism step by step, so that the result is not merely equal in
distribution but the same numbers from the same streams (to float rounding; the tests compare
both paths):

- Poisson batches as Opacus' ``DPDataLoader`` draws them from the client's
  ``local_training`` generator: each pass over the loader first draws the DataLoader
  iterator's base seed, then each batch includes every example with probability q = 1/⌈n/B⌉
  (``torch.rand(n) < q``), ``int(1/q)`` batches a pass, cycled for the round's steps;
- each example's own gradient (torch.func), clipped to ``max_grad_norm`` with Opacus' factor
  ``min(1, C / (‖g‖ + 1e-6))`` over all parameters together, summed over the real examples;
- Gaussian noise of std σ·C per parameter tensor, in parameter order, from the client's
  ``dp_sgd.noise`` generator; the sum divided by Opacus' expected batch size ⌊n·q'⌋
  (q' = 1/``int(1/q)``, the rate its accountant records);
- torch.optim.SGD's step with momentum; one accountant step (σ, q') per DP-SGD step.

Secure mode draws from a CSPRNG inside Opacus and stays on the one-client path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from fedbench.fl.recipe import TrainingRecipe
from fedbench.fl.stacked import PerExampleGradients, StackedParams, sgd_step

#: Opacus' clipping constant: factor = min(1, C / (norm + ε)).
_CLIP_EPSILON = 1e-6


@dataclass(frozen=True)
class PoissonRound:
    """One client's round of DP-SGD as Opacus runs it.

    Attributes:
        batches: The positions (into the client's examples) of every step's batch; a batch
            may be empty (the step is then pure noise).
        sample_rate: The rate Opacus' accountant records per step, 1/``int(1/q)``.
        expected_batch_size: What Opacus divides each step's noisy sum by, ⌊n · sample_rate⌋.
    """

    batches: list[torch.Tensor]
    sample_rate: float
    expected_batch_size: int


def poisson_round(
    num_examples: int, batch: int, steps: int, generator: torch.Generator
) -> PoissonRound:
    """The batches OpacusTraining's ``DPDataLoader`` (over a loader of batch size ``batch``)
    draws from ``generator`` in a round of ``steps`` DP-SGD steps."""
    rate = 1 / math.ceil(num_examples / batch)  # 1/len(DataLoader): the inclusion probability
    per_pass = int(1 / rate)  # the sampler's batches per pass over the loader
    batches: list[torch.Tensor] = []
    while len(batches) < steps:
        # Every pass creates a DataLoader iterator, which first draws its base seed.
        torch.empty((), dtype=torch.int64).random_(generator=generator)
        for _ in range(min(per_pass, steps - len(batches))):
            mask = torch.rand(num_examples, generator=generator) < rate
            batches.append(mask.nonzero(as_tuple=False).reshape(-1))
    sample_rate = 1 / per_pass
    return PoissonRound(batches, sample_rate, int(num_examples * sample_rate))


@dataclass(frozen=True)
class DPNoise:
    """The Gaussian mechanism of a DP-SGD step: σ, C and each client's noise generator."""

    noise_multiplier: float
    max_grad_norm: float
    generators: Sequence[torch.Generator]


def dp_sgd_stacked(
    per_example: PerExampleGradients,
    start: StackedParams,
    rounds: Sequence[PoissonRound],
    rows: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    recipe: TrainingRecipe,
    noise: DPNoise,
) -> tuple[StackedParams, list[list[float]]]:
    """W clients' DP-SGD at once: their trained parameters and each one's per-step losses
    (of the steps that saw an example).

    Args:
        per_example: Per-example gradients of stacked copies (``per_example_gradients``).
        start: Each client's starting parameters, stacked.
        rounds: Each client's Poisson batches (:func:`poisson_round`).
        rows: [W, n] positions of each client's examples in ``x`` and ``y``.
        x: The examples all clients draw from.
        y: Their labels.
        recipe: Learning rate and momentum.
        noise: σ, C and the clients' noise generators.
    """
    local = dict(start)
    momentum: StackedParams | None = None
    losses: list[list[float]] = [[] for _ in rounds]
    divisor = torch.tensor([float(r.expected_batch_size) for r in rounds], device=rows.device)
    for step in range(max(len(r.batches) for r in rounds)):
        active = [step < len(r.batches) for r in rounds]
        positions, real = _padded_step(rounds, step, rows.device)
        at = torch.gather(rows, 1, positions)
        grads, per_loss = per_example(local, x[at], y[at])
        summed = _clipped_sums(grads, real, noise.max_grad_norm)
        drawn = _noise(summed, noise, active)
        noisy = {
            n: (summed[n] + drawn[n]) / divisor.view(-1, *[1] * (summed[n].dim() - 1))
            for n in summed
        }
        counts = real.sum(dim=1)
        for client, count in enumerate(counts.tolist()):
            if active[client] and count:
                losses[client].append(float((per_loss[client] * real[client]).sum() / count))
        mask = None if all(active) else torch.tensor(active, device=rows.device)
        local, momentum = sgd_step(local, momentum, noisy, recipe, mask)
    return local, losses


def _padded_step(
    rounds: Sequence[PoissonRound], step: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """[W, B] positions of this step's batches (0 in padded slots) and which slots are real."""
    batches = [r.batches[step] if step < len(r.batches) else r.batches[0][:0] for r in rounds]
    width = max(1, *(len(b) for b in batches))
    positions = torch.zeros(len(batches), width, dtype=torch.long)
    real = torch.zeros(len(batches), width, dtype=torch.bool)
    for client, batch in enumerate(batches):
        positions[client, : len(batch)] = batch
        real[client, : len(batch)] = True
    return positions.to(device), real.to(device)


def _clipped_sums(
    grads: StackedParams, real: torch.Tensor, max_grad_norm: float
) -> StackedParams:
    """Σ_i min(1, C/(‖g_i‖ + 1e-6)) · g_i over each client's real examples (Opacus' clipping:
    one norm over all parameters of an example)."""
    norms = torch.stack([g.flatten(2).norm(2, dim=-1) for g in grads.values()], dim=-1)
    factor = (max_grad_norm / (norms.norm(2, dim=-1) + _CLIP_EPSILON)).clamp(max=1.0)
    factor = factor * real
    return {n: torch.einsum("wb,wb...->w...", factor, g) for n, g in grads.items()}


def _noise(summed: StackedParams, noise: DPNoise, active: list[bool]) -> StackedParams:
    """Each active client's Gaussian noise, drawn as Opacus draws it: one ``torch.normal`` per
    parameter tensor in parameter order, from the client's generator (zeros when σ·C is 0)."""
    std = noise.noise_multiplier * noise.max_grad_norm
    drawn: dict[str, list[torch.Tensor]] = {n: [] for n in summed}
    for client, generator in enumerate(noise.generators):
        for n, total in summed.items():
            reference = total[client]
            drawn[n].append(
                torch.normal(mean=0, std=std, size=reference.shape, device=reference.device,
                             generator=generator, dtype=reference.dtype)
                if std and active[client] else torch.zeros_like(reference)
            )
    return {n: torch.stack(parts) for n, parts in drawn.items()}
