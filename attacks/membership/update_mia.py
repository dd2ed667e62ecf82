"""Passive server-side membership inference from updates (after Nasr et al., IEEE S&P 2019).

A client's update Δ = w_i − w_t is (for SGD) minus a learning-rate-weighted sum of gradients of
the examples it trained on, so an example that took part has a gradient at w_t that points along
−Δ more than an example that did not. The score of a candidate is the cosine between its loss
gradient at w_t and −Δ.

- ``client_update`` view (plaintext channel): one client's Δ_i in the target round; the
  question is whether the candidate was behind that update.
- ``model_sequence`` view (what remains under secure aggregation or HE): consecutive global
  models give the averaged step w_{t+1} − w_t; the score is the mean cosine over the last
  ``last_rounds`` rounds — the same test against the aggregate of every client.

Nasr et al. feed gradients, losses and activations into a trained attack model; this is the
attack-model-free core of it (the gradient alignment), so it needs no reference data.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from torch.func import functional_call, grad, vmap
from torch.nn import functional as F

from fedbench.attack import AttackerKnowledge, AttackResult, AttackTarget
from fedbench.attacks.membership.base import MembershipAttack
from fedbench.attacks.membership.signals import trainable_names, unflatten
from fedbench.data.tensors import TensorData
from fedbench.fl.views import ClientUpdateView, ModelSequenceView, View, ViewKind
from fedbench.params import PositiveInt
from fedbench.registry import register_attack

_FLOATS_PER_CHUNK = 2**25  # per-example gradients held at once (128 MiB of float32)


def gradient_alignment(
    model: torch.nn.Module, params: torch.Tensor, direction: torch.Tensor, data: TensorData,
    device: torch.device,
) -> torch.Tensor:
    """cos(∇_w loss(w; x, y), ``direction``) for every example, at w = ``params`` (flat).

    Per-example gradients come from ``vmap(grad(...))`` in chunks small enough to hold.
    """
    names = [n for n, _ in trainable_names(model)]
    weights = unflatten(model, params.to(device).reshape(1, -1))
    weights = {n: w[0] for n, w in weights.items()}
    target = direction.to(device).float()
    target = target / torch.clamp(target.norm(), min=1e-30)

    def loss(w: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(model, w, (x[None],)), y[None])

    per_example = vmap(grad(loss), in_dims=(None, 0, 0))
    chunk = max(1, _FLOATS_PER_CHUNK // max(1, params.numel()))
    out = []
    model.eval()
    for start in range(0, len(data), chunk):
        x = data.x[start : start + chunk].to(device)
        y = data.y[start : start + chunk].to(device)
        grads = per_example(weights, x, y)
        flat = torch.cat([grads[n].reshape(len(x), -1) for n in names], dim=1)
        cos = flat @ target / torch.clamp(flat.norm(dim=1), min=1e-30)
        out.append(cos.detach().cpu())
    return torch.cat(out)


@register_attack("update_mia")
class UpdateMIA(MembershipAttack):
    """Gradient-alignment membership inference by an honest-but-curious server.

    Args:
        target_round: Round whose client update is attacked (negative counts from the end).
        last_rounds: With the model-sequence view, how many final rounds to average over.

    Example:
        >>> from fedbench.registry import ATTACKS
        >>> [v.value for v in ATTACKS.create("update_mia").views]
        ['client_update', 'model_sequence']
    """

    name: ClassVar[str] = "update_mia"
    views = (ViewKind.CLIENT_UPDATE, ViewKind.MODEL_SEQUENCE)

    def __init__(self, *, target_round: int = -1, last_rounds: PositiveInt = 10) -> None:
        if last_rounds < 1:
            raise ValueError(f"update_mia: last_rounds must be positive, got {last_rounds}")
        self.target = AttackTarget(round=target_round)
        self.last_rounds = last_rounds

    def run(self, view: View, knowledge: AttackerKnowledge) -> AttackResult:
        candidates = self.candidates(knowledge)
        if isinstance(view, ClientUpdateView):
            steps = [(view.params, view.update)]
        elif isinstance(view, ModelSequenceView):
            seq = view.params
            if len(seq) < 2:
                raise ValueError("update_mia: the model sequence needs at least two models")
            first = max(0, len(seq) - 1 - self.last_rounds)
            steps = [(seq[t], seq[t + 1] - seq[t]) for t in range(first, len(seq) - 1)]
        else:
            raise TypeError(f"update_mia needs a client_update or model_sequence view, got "
                            f"{view.kind}")
        model = knowledge.model_factory().to(knowledge.device)
        scores = torch.zeros(len(candidates))
        used = 0
        for params, update in steps:
            if not torch.any(update != 0):
                continue  # a round that failed or had no contributor moves nothing
            scores += gradient_alignment(model, params, -update, candidates, knowledge.device)
            used += 1
        if used == 0:
            raise ValueError("update_mia: every observed update is zero")
        return AttackResult(scores=(scores / used).numpy().astype(np.float64),
                            extras={"rounds_used": used})
