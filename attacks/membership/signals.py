"""From model outputs to membership signals: logits of one or K models, φ, queries.

The workhorse signal is LiRA's logit-scaled confidence of the true class,
φ = log(p_y / (1 − p_y)), computed as z_y − logsumexp_{j≠y} z_j from the logits z so that it
stays finite for confidently classified examples (where 1 − p_y underflows in float32).

Example:
    >>> import torch
    >>> z = torch.tensor([[2.0, 0.0, 0.0]])
    >>> p = torch.softmax(z, 1)[0, 0]
    >>> bool(torch.isclose(logit_confidence(z, torch.tensor([0]))[0], torch.log(p / (1 - p))))
    True
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.func import functional_call, vmap

from fedbench.fl.params import set_flat

_CHUNK = 2048  # examples per forward pass


def trainable_names(model: nn.Module) -> list[tuple[str, torch.Size]]:
    """Names and shapes of the trainable parameters, in the order of ``get_flat``."""
    return [(n, p.shape) for n, p in model.named_parameters() if p.requires_grad]


def unflatten(model: nn.Module, flat: torch.Tensor) -> dict[str, torch.Tensor]:
    """A [K, D] stack of flat parameter vectors as {name: [K, *shape]} for ``functional_call``."""
    out: dict[str, torch.Tensor] = {}
    offset = 0
    for name, shape in trainable_names(model):
        size = shape.numel()
        out[name] = flat[:, offset : offset + size].reshape(flat.shape[0], *shape)
        offset += size
    if offset != flat.shape[1]:
        raise ValueError(f"flat parameters have {flat.shape[1]} entries, the model {offset}")
    return out


@torch.no_grad()
def model_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Logits of one model on ``x`` (eval mode, chunked), on the CPU."""
    device = next(model.parameters()).device
    model.eval()
    return torch.cat(
        [model(x[i : i + _CHUNK].to(device)).float().cpu() for i in range(0, len(x), _CHUNK)]
    )


@torch.no_grad()
def stacked_logits(
    factory: Callable[[], nn.Module], params: torch.Tensor, x: torch.Tensor,
    device: torch.device,
) -> torch.Tensor:
    """Logits [K, n, C] of K models given as flat parameter rows ``params`` [K, D].

    All K models run as one vmapped forward pass per chunk of examples; architectures that
    torch.func cannot map over fall back to a loop over the models.
    """
    base = factory().to(device).eval()
    try:
        stacked = unflatten(base, params.to(device))

        def forward(p: dict[str, torch.Tensor], xs: torch.Tensor) -> torch.Tensor:
            logits: torch.Tensor = functional_call(base, p, (xs,))
            return logits

        batched = vmap(forward, in_dims=(0, None))
        parts = [batched(stacked, x[i : i + _CHUNK].to(device)).float().cpu()
                 for i in range(0, len(x), _CHUNK)]
        return torch.cat(parts, dim=1)
    except RuntimeError:
        # e.g. a layer without a batching rule: one model at a time gives the same numbers.
        rows = []
        for row in params:
            set_flat(base, row)
            rows.append(model_logits(base, x))
        return torch.stack(rows)


def logit_confidence(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """φ = log(p_y/(1 − p_y)) of the true class, for logits [..., n, C] and labels [n]."""
    index = y.expand(*logits.shape[:-1]).unsqueeze(-1)
    true = logits.gather(-1, index).squeeze(-1)
    others = logits.scatter(-1, index, float("-inf"))
    return true - torch.logsumexp(others, dim=-1)


def true_class_probability(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """p_y from logits [..., n, C] and labels [n]."""
    index = y.expand(*logits.shape[:-1]).unsqueeze(-1)
    return torch.softmax(logits.double(), dim=-1).gather(-1, index).squeeze(-1)


def queries(x: torch.Tensor, *, data_kind: str, augment: bool) -> list[torch.Tensor]:
    """The inputs an attack queries per example: ``x``, plus its horizontal mirror for images.

    LiRA queries the augmentations the target trained with and fits one Gaussian per query, so
    a query that carries little signal weakens only its own term.
    """
    if augment and data_kind == "image" and x.dim() == 4:
        return [x, torch.flip(x, dims=(-1,))]
    return [x]
