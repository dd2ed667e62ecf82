"""Gradient and update matching, written with ``torch.func`` so it batches over restarts.

The model becomes a pure function of (parameters, inputs) through ``functional_call``; its
training gradient is ``torch.func.grad`` of the loss, and the attack differentiates the distance
between that gradient and the target with respect to the dummy inputs (double backward). Every
function here handles one restart; :meth:`MatchingObjective.batched` ``vmap``s it over a leading
restart dimension. Nothing here moves data between devices, so the same code runs on CUDA.

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    >>> fm = FunctionalModel(net, torch.zeros(15), torch.device("cpu"))
    >>> x, y = torch.ones(2, 1, 2, 2), torch.tensor([0, 2])
    >>> target = fm.gradient(fm.params, x, y)
    >>> objective = MatchingObjective(fm, target, distance="euclidean")
    >>> float(objective(x, y))
    0.0
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.func import functional_call, grad, replace_all_batch_norm_modules_, vmap
from torch.nn import functional as F

from fedbench.fl.params import set_flat

Params = dict[str, torch.Tensor]
Distance = Literal["euclidean", "cosine"]


class FunctionalModel:
    """A model at fixed parameters w_t, as a pure function for ``torch.func``.

    The module is put in training mode, as the clients trained it; batch norm uses batch
    statistics and keeps no running statistics (they would be mutated inside ``vmap``).

    Args:
        model: A fresh model of the run's architecture (it is modified and kept).
        flat_params: w_t as a flat vector (the order of ``model.parameters()``).
        device: Where every computation runs.
    """

    def __init__(self, model: nn.Module, flat_params: torch.Tensor, device: torch.device):
        self.module = model.to(device)
        replace_all_batch_norm_modules_(self.module)
        set_flat(self.module, flat_params)
        self.module.train()
        self.device = device
        self.params: Params = {
            name: p.detach() for name, p in self.module.named_parameters() if p.requires_grad
        }

    def split(self, flat: torch.Tensor) -> Params:
        """A flat vector (same layout as the parameters) as per-parameter tensors on device."""
        expected = sum(p.numel() for p in self.params.values())
        if flat.numel() != expected:
            raise ValueError(f"flat vector has {flat.numel()} entries, the model has {expected}")
        flat = flat.to(self.device, torch.float32)
        out: Params = {}
        offset = 0
        for name, p in self.params.items():
            out[name] = flat[offset : offset + p.numel()].view_as(p)
            offset += p.numel()
        return out

    def logits(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        """Model outputs at ``params``."""
        out: torch.Tensor = functional_call(self.module, params, (x,))
        return out

    def loss(self, params: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy; ``y`` holds class indices or per-class probabilities."""
        return F.cross_entropy(self.logits(params, x), y)

    def gradient(self, params: Params, x: torch.Tensor, y: torch.Tensor) -> Params:
        """The mean training gradient of the batch (x, y), differentiable in x and y."""
        result: Params = grad(self.loss)(params, x, y)
        return result

    def local_update(
        self, params: Params, x: torch.Tensor, y: torch.Tensor, steps: LocalSteps
    ) -> Params:
        """Δ = w_S − w_0 after the client's local SGD steps on (x, y), per client, averaged.

        ``x`` holds ``steps.clients`` consecutive groups of images, one group per client.
        """
        per_client = x.shape[0] // steps.clients
        deltas: list[Params] = []
        for c in range(steps.clients):
            xc = x[c * per_client : (c + 1) * per_client]
            yc = y[c * per_client : (c + 1) * per_client]
            current = dict(params)
            buffers: Params = {}
            for batch in steps.schedule:
                g = self.gradient(current, xc[batch], yc[batch])
                for name in current:
                    if steps.momentum > 0:  # torch.optim.SGD: buf = g, then buf = μ·buf + g
                        g[name] = (
                            g[name] if name not in buffers
                            else steps.momentum * buffers[name] + g[name]
                        )
                        buffers[name] = g[name]
                    current[name] = current[name] - steps.lr * g[name]
            deltas.append({name: current[name] - params[name] for name in params})
        return {name: torch.stack([d[name] for d in deltas]).mean(0) for name in params}


@dataclass(frozen=True)
class LocalSteps:
    """The public local-training schedule a multi-step attack simulates.

    Attributes:
        schedule: Each local step's batch, as a slice of one client's images.
        lr: Client learning rate.
        momentum: Client SGD momentum.
        clients: Number of clients averaged in the target (1 for a client update).
    """

    schedule: tuple[slice, ...]
    lr: float
    momentum: float = 0.0
    clients: int = 1


def _total(terms: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack(terms).sum()


def euclidean(produced: Params, target: Params) -> torch.Tensor:
    """Σ over layers of ‖produced − target‖² (DLG's distance)."""
    return _total([((produced[k] - target[k]) ** 2).sum() for k in target])


def cosine(produced: Params, target: Params) -> torch.Tensor:
    """1 − ⟨produced, target⟩ / (‖produced‖·‖target‖) over all layers at once (Geiping et al.)."""
    dot = _total([(produced[k] * target[k]).sum() for k in target])
    norm_p = _total([(produced[k] ** 2).sum() for k in target])
    norm_t = _total([(target[k] ** 2).sum() for k in target])
    return 1 - dot / (torch.sqrt(norm_p) * torch.sqrt(norm_t)).clamp_min(1e-12)


DISTANCES: dict[str, Callable[[Params, Params], torch.Tensor]] = {
    "euclidean": euclidean,
    "cosine": cosine,
}


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of neighbouring pixels, vertically plus horizontally.

    Zero for inputs that are not images (fewer than 3 dimensions per example).
    """
    if x.dim() < 4:
        return x.new_zeros(())
    vertical = (x[..., 1:, :] - x[..., :-1, :]).abs().mean()
    horizontal = (x[..., :, 1:] - x[..., :, :-1]).abs().mean()
    return vertical + horizontal


def known_layers(model: FunctionalModel, known: torch.Tensor | None) -> Params | None:
    """A flat bool vector of the attacked data's own coordinates, per layer as 0/1 floats."""
    return None if known is None else model.split(known.to(torch.float32))


class MatchingObjective:
    """Distance between what dummy data would send and what the server received (+ TV).

    Args:
        model: The model at w_t.
        target: The target gradient (one-step attacks) or update (``steps`` given), per layer.
        distance: "euclidean" (DLG) or "cosine" (Inverting Gradients).
        tv_weight: Weight of the total-variation prior on the dummy images.
        steps: Simulate these local steps and match the update instead of one gradient.
        relative: Divide the distance by the target's squared norm. The minimiser is the same,
            and an optimiser's trajectory no longer depends on the target's scale (a small
            gradient, from a confidently classified example, is attacked like a large one).
        known: Per layer, 1 where the target is the attacked data's alone and 0 where others
            also filled it (None: everywhere): the distance leaves the zeros out.
    """

    def __init__(
        self,
        model: FunctionalModel,
        target: Params,
        *,
        distance: Distance,
        tv_weight: float = 0.0,
        steps: LocalSteps | None = None,
        relative: bool = False,
        known: Params | None = None,
    ) -> None:
        if distance not in DISTANCES:
            raise ValueError(f"distance must be one of {sorted(DISTANCES)}, got {distance!r}")
        self.model = model
        self.known = None if known is None else {k: v.detach() for k, v in known.items()}
        self.target = self._masked({k: v.detach() for k, v in target.items()})
        self.distance = DISTANCES[distance]
        self.tv_weight = tv_weight
        self.steps = steps
        self.scale = 1.0
        if relative:
            norm = float(torch.stack([(v**2).sum() for v in self.target.values()]).sum())
            self.scale = 1.0 / norm if norm > 0 else 1.0

    def matching(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The distance term alone (what restarts are scored by)."""
        if self.steps is None:
            produced = self.model.gradient(self.model.params, x, y)
        else:
            produced = self.model.local_update(self.model.params, x, y, self.steps)
        return self.distance(self._masked(produced), self.target) * self.scale

    def _masked(self, layers: Params) -> Params:
        """``layers`` with the coordinates others filled set to zero on both sides."""
        if self.known is None:
            return layers
        return {k: v * self.known[k] for k, v in layers.items()}

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Distance plus ``tv_weight`` · total variation, for one restart."""
        loss = self.matching(x, y)
        if self.tv_weight > 0:
            loss = loss + self.tv_weight * total_variation(x)
        return loss

    def batched(
        self, *, tv: bool = True
    ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The objective ``vmap``ped over a leading restart dimension of x and y."""
        single = self.__call__ if tv else self.matching
        batched: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = vmap(
            single, randomness="different"
        )
        return batched
