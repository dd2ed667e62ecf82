"""Turn a ``client_update`` or ``aggregate`` view into what gradient inversion matches.

The server sees Δ = w_i − w_t, scaled by the client's public aggregation weight, or the sum S of
such updates. With the public recipe (client lr, batch size, local steps) the attacker rebuilds:

- FedSGD, one client: Δ = −weight·lr·ḡ, so ḡ = −Δ / (weight·lr) is exactly the mean gradient of
  the client's batch of B images.
- FedSGD, aggregate of n clients: S = −lr·Σ_c ḡ_c, so −S / (n·lr) is the mean gradient over all
  n·B images: the attack faces one large batch (exact for uniform weighting or equal client
  sizes, which make every weight 1).
- FedAvg: the per-client update Δ̄ (weight or n divided out) comes from several local SGD steps;
  the multi-step attack simulates them, the others use −Δ̄ / (lr·steps) as a one-gradient proxy.

Example:
    >>> import torch
    >>> from fedbench.fl.recipe import TrainingRecipe
    >>> from fedbench.fl.views import ClientUpdateView
    >>> view = ClientUpdateView(round=0, client_id=3, params=torch.zeros(2),
    ...                         update=torch.tensor([0.2, -0.4]), weight=2.0, num_examples=50)
    >>> recipe = TrainingRecipe("fedsgd", batch_size=1, local_epochs=1, local_steps=None, lr=0.1)
    >>> target = inversion_target(view, recipe)
    >>> target.gradient, target.num_images
    (tensor([-1.,  2.]), 1)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from fedbench.fl.recipe import TrainingRecipe
from fedbench.fl.views import AggregateView, ClientUpdateView, View, ViewKind


@dataclass(frozen=True)
class InversionTarget:
    """What the attacker matches, rebuilt from a view and the public recipe.

    Attributes:
        kind: The view it came from.
        params: The global parameters w_t the clients started from (flat).
        update: The mean per-client update Δ̄ (weights divided out), flat.
        gradient: −Δ̄ / (lr·steps): the mean gradient over all attacked images; exact for FedSGD,
            a one-gradient proxy for FedAvg.
        num_clients: Clients whose data is behind the target (1, or n for the aggregate).
        images_per_client: Examples each client's local training touched.
        steps: Local SGD steps per client (1 for FedSGD).
        batch_size: Examples per local step.
        lr: Client learning rate.
        momentum: Client SGD momentum.
        known: The coordinates that are the attacked clients' alone (bool, flat), or None for
            all: the rest is left out of the matching.
    """

    kind: ViewKind
    params: torch.Tensor
    update: torch.Tensor
    gradient: torch.Tensor
    num_clients: int
    images_per_client: int
    steps: int
    batch_size: int
    lr: float
    momentum: float
    known: torch.Tensor | None = None

    @property
    def num_images(self) -> int:
        """All images behind the target (the batch the attack reconstructs)."""
        return self.num_clients * self.images_per_client

    @property
    def exact_gradient(self) -> bool:
        """Whether ``gradient`` is exactly a mean gradient (one local step)."""
        return self.steps == 1

    def schedule(self) -> list[slice]:
        """One client's local batches, in order, as slices of its images.

        The client's shuffling is private; the first epoch's order is without loss of generality
        (the reconstructed images can be relabelled), and later epochs reuse it.
        """
        size, count = self.batch_size, self.images_per_client
        epoch = [slice(i, min(i + size, count)) for i in range(0, count, size)]
        return [epoch[s % len(epoch)] for s in range(self.steps)]


def _client_shape(num_examples: int, recipe: TrainingRecipe) -> tuple[int, int, int]:
    """(images used, local steps, batch size) of one client holding ``num_examples``."""
    if num_examples < 1:
        raise ValueError(f"the view reports {num_examples} examples; nothing to reconstruct")
    batch = min(recipe.batch_size or num_examples, num_examples)
    if recipe.algorithm == "fedsgd":
        return batch, 1, batch
    per_epoch = math.ceil(num_examples / batch)
    steps = recipe.local_epochs * per_epoch if recipe.local_steps is None else recipe.local_steps
    images = num_examples if steps >= per_epoch else steps * batch
    return images, steps, batch


def inversion_target(view: View, recipe: TrainingRecipe) -> InversionTarget:
    """The matching target of a ``client_update`` or ``aggregate`` view.

    Raises:
        TypeError: For views without an update (model_sequence, final_model).
        ValueError: For a view with zero weight, no contributors or no examples.
    """
    if isinstance(view, ClientUpdateView):
        if view.weight <= 0:
            raise ValueError(f"client {view.client_id}: aggregation weight {view.weight} ≤ 0")
        clients, per_client_examples = 1, view.num_examples
        update = view.update.to(torch.float32) / view.weight
        known = view.known
    elif isinstance(view, AggregateView):
        clients = len(view.contributors)
        if clients == 0:
            raise ValueError(f"round {view.round}: the aggregate has no contributors")
        # Client sizes are reported only in total; equal sizes is the attacker's best guess.
        per_client_examples = max(1, round(view.num_examples / clients))
        update = view.aggregate.to(torch.float32) / clients
        known = None
    else:
        raise TypeError(f"gradient inversion needs an update view, got {view.kind.value}")
    images, steps, batch = _client_shape(per_client_examples, recipe)
    return InversionTarget(
        kind=view.kind,
        params=view.params.to(torch.float32),
        update=update,
        gradient=-update / (recipe.lr * steps),
        num_clients=clients,
        images_per_client=images,
        steps=steps,
        batch_size=batch,
        lr=recipe.lr,
        momentum=recipe.momentum,
        known=known,
    )
