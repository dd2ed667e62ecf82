"""A malicious server that sends the target the real model and everyone else a dead one
(Pasquini et al., "Eluding Secure Aggregation via Model Inconsistency", CCS 2022).

The dead model has every Linear/Conv weight at zero and every hidden bias at −10⁴: each hidden
activation (ReLU or sigmoid) is exactly 0, so no gradient flows and the other clients' updates
are zero in every coordinate but one layer: the output bias, whose gradient p − y no model can
zero for labels it does not know. The secure sum is then the target's update everywhere else,
and the server attacks it as the target's ``client_update`` view, with the output bias marked as
not the target's alone (``ClientUpdateView.known``). SecAgg's model-consistency check
(``model_consistency: true``: each client binds the hash of the model it received into its
signed key advertisement) refuses the round.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from fedbench.adversary import Adversary, AdversaryRole, SetUp
from fedbench.fl.broadcast import BroadcastPolicy
from fedbench.fl.channel import Channel
from fedbench.fl.context import RoundContext
from fedbench.fl.threat import PrivateLog
from fedbench.fl.transcript import Transcript
from fedbench.fl.views import View, ViewKind
from fedbench.params import NonNegativeInt
from fedbench.registry import register_adversary

DEAD_BIAS = -1e4  # sigmoid(−10⁴) and ReLU(−10⁴) are exactly 0 in float32


def dead_layout(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For ``model``'s flat parameters: which to keep from w_t (the output bias), which to set
    to :data:`DEAD_BIAS` (hidden biases), and which coordinates the target owns alone in the
    sum (all but the output bias). Every other parameter is set to zero.

    Raises:
        ValueError: A parameter outside Linear/Conv layers (a norm layer's scale), or no final
            Linear with a bias: the construction would not zero those updates.
    """
    keep, dead = [], []
    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))]
    owned = {id(p) for m in layers for p in m.parameters(recurse=False)}
    for name, param in model.named_parameters():
        if id(param) not in owned:
            raise ValueError(f"model inconsistency: parameter {name!r} is not in a Linear/Conv "
                             "layer, so a dead model would not zero its update")
    last = layers[-1] if layers else None
    if not isinstance(last, nn.Linear) or last.bias is None:
        raise ValueError("model inconsistency needs a final Linear layer with a bias")
    for param in model.parameters():
        is_bias = param.dim() == 1
        keep.append(torch.full((param.numel(),), param is last.bias))
        dead.append(torch.full((param.numel(),), is_bias and param is not last.bias))
    keep_flat, dead_flat = torch.cat(keep), torch.cat(dead)
    return keep_flat, dead_flat, ~keep_flat


class InconsistentBroadcast(BroadcastPolicy):
    """The target receives w_t; every other sampled client the dead model."""

    def __init__(self, target: int, keep: torch.Tensor, dead: torch.Tensor) -> None:
        self.target = target
        self.keep = keep
        self.dead = dead

    def models(self, params: torch.Tensor, ctx: RoundContext) -> dict[int, torch.Tensor]:
        if self.target not in ctx.sampled:
            return dict.fromkeys(ctx.sampled, params)
        dead = torch.where(self.keep.to(params.device), params, torch.zeros_like(params))
        dead = torch.where(self.dead.to(params.device), torch.full_like(params, DEAD_BIAS), dead)
        return {c: params if c == self.target else dead for c in ctx.sampled}


@register_adversary("model_inconsistency")
class ModelInconsistency(Adversary):
    """A malicious server that sends every client but the target a model whose update is zero.

    Args:
        target: The client isolated in the sum (when it is sampled).
    """

    name = "model_inconsistency"
    role = AdversaryRole.MALICIOUS_SERVER

    def __init__(self, *, target: NonNegativeInt = 0) -> None:
        self.target = target
        self._known: torch.Tensor | None = None
        self._layout: tuple[torch.Tensor, torch.Tensor] | None = None

    def effect(self, *, channel: Channel) -> str | None:
        if channel.reveals_client_updates:
            return "moot: the channel already reveals every client's update"
        return None

    def model_factory(
        self, factory: Callable[[], nn.Module], setup: SetUp
    ) -> Callable[[], nn.Module]:
        keep, dead, self._known = dead_layout(factory())
        self._layout = (keep, dead)
        return factory

    def broadcaster(self, setup: SetUp) -> BroadcastPolicy | None:
        if self._layout is None:
            raise RuntimeError("model_inconsistency: model_factory must run before broadcaster")
        return InconsistentBroadcast(self.target, *self._layout)

    def views(self, opened: frozenset[ViewKind], *, channel: Channel) -> frozenset[ViewKind]:
        return opened | {ViewKind.CLIENT_UPDATE}

    def cut_view(
        self, kind: ViewKind, *, target_round: int, target_client: int | None,
        transcript: Transcript, private: PrivateLog, channel: Channel,
    ) -> tuple[View, list[int]] | None:
        if kind != ViewKind.CLIENT_UPDATE or channel.reveals_client_updates:
            return None  # the channel's own view of each update
        if target_client not in (None, self.target):
            raise KeyError(f"model inconsistency isolates client {self.target} only, "
                           f"not {target_client}")
        aggregate = transcript.aggregate_view(target_round)
        if self.target not in aggregate.contributors:
            raise KeyError(f"round {target_round}: client {self.target} is not in the sum")
        record = transcript.kept_round(target_round)
        return record.update_view(self.target, aggregate.aggregate, known=self._known), [
            self.target]



