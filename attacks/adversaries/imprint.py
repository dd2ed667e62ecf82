"""A malicious server that imprints its inputs into the model (Fowl et al., ICLR 2022).

At set-up the server prepends the imprint block of
:mod:`fedbench.attacks.gradient_inversion.imprint` to the architecture every client trains: k
bins on a public statistic of the input, at thresholds that are quantiles of the server's own
(population) data, so the bins are equal-mass for the data. At every broadcast it resets the
block to those weights (the model step moved them), so each round's clients train the trap. The
``imprint`` attack then reads every input alone in its bin out of whatever update or sum the
channel opens: no channel stops an architecture change, only noise on the update does.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from fedbench.adversary import Adversary, AdversaryRole, SetUp
from fedbench.attacks.gradient_inversion.imprint import (
    ImprintedModel,
    Statistic,
    body_part,
    imprint_thresholds,
    imprinted_factory,
    imprinted_params,
    statistic_row,
)
from fedbench.fl.broadcast import BroadcastPolicy
from fedbench.fl.context import RoundContext
from fedbench.params import PositiveFloat, PositiveInt
from fedbench.registry import register_adversary


class ImprintBroadcast(BroadcastPolicy):
    """Every client receives the global body with the pristine imprint block in front."""

    def __init__(self, pristine: ImprintedModel) -> None:
        self.pristine = pristine

    def models(self, params: torch.Tensor, ctx: RoundContext) -> dict[int, torch.Tensor]:
        sent = imprinted_params(self.pristine, body_part(self.pristine, params))
        return dict.fromkeys(ctx.sampled, sent.to(params.device, params.dtype))


@register_adversary("imprint")
class ImprintServer(Adversary):
    """A malicious server that prepends an imprint block (trap weights) to the model.

    Args:
        bins: k, the number of bins (at most k inputs of a round can be recovered).
        statistic: The public statistic the bins split: "mean" brightness, or a fixed random
            "projection" (continuous, so many bins stay equal-mass on quantised images).
        gain: Scale of the block's output; raise it so that a quantising channel (SecAgg's
            16-bit ring) keeps the trap rows' gradients above its resolution.
    """

    name = "imprint"
    role = AdversaryRole.MALICIOUS_SERVER

    def __init__(
        self, *, bins: PositiveInt = 64, statistic: Statistic = "projection",
        gain: PositiveFloat = 30.0,
    ) -> None:
        self.bins = bins
        self.statistic: Statistic = statistic
        self.gain = gain
        self._pristine: ImprintedModel | None = None

    def model_factory(
        self, factory: Callable[[], nn.Module], setup: SetUp
    ) -> Callable[[], nn.Module]:
        row = statistic_row(setup.input_shape, self.statistic, seed=setup.seed)
        thresholds = imprint_thresholds(setup.population.x, self.bins, row)
        build = imprinted_factory(factory, thresholds=thresholds, row=row, gain=self.gain)
        self._pristine = build()
        return build

    def broadcaster(self, setup: SetUp) -> BroadcastPolicy | None:
        if self._pristine is None:
            raise RuntimeError("imprint: model_factory must run before broadcaster")
        return ImprintBroadcast(self._pristine)
