"""A malicious server that deviates from secure aggregation to unmask one client's input.

Without Bonawitz et al.'s consistency-check round, the server tells some of the target's
neighbours that it dropped (they send shares of its pairwise-key seed) and the others that it
survived (they send shares of its self-mask seed); with t of each it removes every mask from the
target's masked input (:class:`~fedbench.defenses.secagg.adversary.SplitViewServer`). Against
this server the secure-aggregation channel turns its consistency check on (unless the config set
``consistency_check``): honest clients then compare signed survivor sets, abort, and the round
fails with nothing revealed. The view it opens is the target's ``client_update``, the update
as the deviation decoded it (clipped and rounded like every encoded update).
"""

from __future__ import annotations

import torch

from fedbench.adversary import Adversary, AdversaryRole
from fedbench.defenses.secagg.adversary import KeySwapServer, SplitViewServer
from fedbench.defenses.secagg.channel import SecAggChannel
from fedbench.defenses.secagg.protocol import ServerPolicy
from fedbench.fl.channel import Channel
from fedbench.fl.context import RoundContext
from fedbench.fl.threat import PrivateLog
from fedbench.fl.transcript import Transcript
from fedbench.fl.views import View, ViewKind
from fedbench.params import NonNegativeInt
from fedbench.registry import register_adversary


@register_adversary("secagg_deviation")
class SecAggDeviation(Adversary):
    """A malicious server that tells the target's neighbours inconsistent survivor sets.

    Args:
        target: The client whose input the server unmasks (when it is sampled).
        colluders: Clients that hand the server every share they hold. With the defense's
            thresholds (t above half of a client's share holders) honest holders alone never
            give t shares of both secrets, so the deviation needs one or two colluding
            neighbours of the target; without them the server stays honest.
    """

    name = "secagg_deviation"
    role = AdversaryRole.MALICIOUS_SERVER

    def __init__(self, *, target: NonNegativeInt = 0, colluders: list[int] | None = None) -> None:
        self.target = target
        self.colluders = sorted(set(colluders or []))

    def effect(self, *, channel: Channel) -> str | None:
        if isinstance(channel, SecAggChannel):
            return None
        return ("moot: no secure aggregation to deviate from (the channel is "
                f"{getattr(channel, 'name', type(channel).__name__)})")

    def setup_channel(self, channel: Channel) -> None:
        if isinstance(channel, SecAggChannel):
            channel.set_adversary(server=self._server, colluders=self.colluders)

    def _server(self, ctx: RoundContext) -> ServerPolicy:
        # A round without the target is aggregated honestly.
        return SplitViewServer(self.target) if self.target in ctx.sampled else ServerPolicy()

    def views(self, opened: frozenset[ViewKind], *, channel: Channel) -> frozenset[ViewKind]:
        if isinstance(channel, SecAggChannel):
            return opened | {ViewKind.CLIENT_UPDATE}
        return opened

    def cut_view(
        self, kind: ViewKind, *, target_round: int, target_client: int | None,
        transcript: Transcript, private: PrivateLog, channel: Channel,
    ) -> tuple[View, list[int]] | None:
        if kind != ViewKind.CLIENT_UPDATE or not isinstance(channel, SecAggChannel):
            return None
        if target_client not in (None, self.target):
            raise KeyError(f"the deviation unmasks client {self.target} only, "
                           f"not {target_client}")
        recovered = channel.recovered_updates(target_round).get(self.target)
        if recovered is None:
            raise KeyError(f"round {target_round}: the deviation unmasked nothing (the "
                           "consistency check aborted it, or too few shares were reachable)")
        update = torch.from_numpy(recovered).to(torch.float32)
        return transcript.kept_round(target_round).update_view(self.target, update), [self.target]


@register_adversary("secagg_key_swap")
class SecAggKeySwap(SecAggDeviation):
    """A malicious server in the middle of the key agreement: it forwards its own public key
    as every neighbour's to the target (and as the target's to them), opens the target's
    sealed shares, re-seals them so nobody notices, and unmasks the target's input — with no
    colluder (:class:`~fedbench.defenses.secagg.adversary.KeySwapServer`). Signed
    advertisements, on by default against a malicious server (the consistency check), make
    the target refuse the substituted keys before it deals a share.

    Args:
        target: The client whose input the server unmasks (when it is sampled).
    """

    name = "secagg_key_swap"

    def __init__(self, *, target: NonNegativeInt = 0) -> None:
        super().__init__(target=target, colluders=[])

    def settings(self) -> dict[str, object]:
        return {"target": self.target}

    def _server(self, ctx: RoundContext) -> ServerPolicy:
        return KeySwapServer(self.target) if self.target in ctx.sampled else ServerPolicy()
