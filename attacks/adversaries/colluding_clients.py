"""Colluding clients: k clients pool their own updates and keys, with the server or without it.

What they learn depends on the channel and on whether the server is one of them:

- **With the server.** The server reads whatever a colluding client's secrets open: every
  client's HE ciphertext (all clients hold the one secret key), nothing of a SecAgg masked
  input unless t colluding neighbours complete the shares of both of its secrets (the protocol
  coalition, :class:`~fedbench.defenses.secagg.adversary.CoalitionServer`). It subtracts the
  colluders' own updates from its sum: fewer than t colluders learn the honest clients' total,
  n − 1 of them the last client's update exactly.
- **Without it.** The clients receive only the global models; from w_{t+1} − w_t (and the public
  η and divisor) they get the released sum *after* the server stages (central DP noise
  included) and subtract their own updates from it.

The aggregate view it opens holds the honest clients' sum (their examples are behind it); the
client-update view a single honest client's update, where one of the routes above reaches it,
and otherwise says why not.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from fedbench.adversary import Adversary, AdversaryRole, Coalition, SetUp
from fedbench.defenses.secagg.adversary import CoalitionServer
from fedbench.defenses.secagg.channel import SecAggChannel
from fedbench.defenses.secagg.protocol import ServerPolicy
from fedbench.errors import ConfigError
from fedbench.fl.channel import Channel
from fedbench.fl.context import RoundContext
from fedbench.fl.threat import PrivateLog
from fedbench.fl.transcript import RoundRecord, Transcript
from fedbench.fl.views import AggregateView, View, ViewKind
from fedbench.params import NonNegativeInt
from fedbench.registry import register_adversary

_CLIENT_VIEWS = frozenset(
    {ViewKind.AGGREGATE, ViewKind.MODEL_SEQUENCE, ViewKind.FINAL_MODEL, ViewKind.CLIENT_UPDATE}
)


@register_adversary("colluding_clients")
class ColludingClients(Adversary):
    """k clients that pool what they hold, optionally together with the server.

    Args:
        colluders: The colluding clients' ids (at least one).
        with_server: Whether the server colludes with them.
    """

    name = "colluding_clients"
    role = AdversaryRole.COLLUDING_CLIENTS

    def __init__(self, *, colluders: list[NonNegativeInt], with_server: bool = True) -> None:
        if not colluders:
            raise ConfigError("colluding_clients: colluders must name at least one client")
        self.colluders = sorted(set(colluders))
        self.with_server = with_server
        self._server_lr = 1.0

    def coalition(self) -> Coalition:
        return Coalition(frozenset(self.colluders), self.with_server)

    def model_factory(
        self, factory: Callable[[], nn.Module], setup: SetUp
    ) -> Callable[[], nn.Module]:
        strangers = [c for c in self.colluders if c >= setup.num_clients]
        if strangers:
            raise ConfigError(f"colluding_clients: colluders {strangers} are not clients "
                              f"(the federation has {setup.num_clients})")
        self._server_lr = setup.server_lr  # public; clients turn model steps back into sums
        return factory

    def effect(self, *, channel: Channel) -> str | None:
        if self.with_server and channel.reveals_client_updates:
            return ("moot: the channel already shows the server every update; the colluders "
                    "only remove themselves from the sum")
        return None

    def setup_channel(self, channel: Channel) -> None:
        # The colluders subtract what they added: under distributed DP, noise shares included.
        channel.keep_contributions(frozenset(self.colluders))
        if self.with_server and isinstance(channel, SecAggChannel):
            channel.set_adversary(server=_coalition_server, colluders=self.colluders)

    def views(self, opened: frozenset[ViewKind], *, channel: Channel) -> frozenset[ViewKind]:
        if self.with_server:
            return opened | {ViewKind.CLIENT_UPDATE}
        return _CLIENT_VIEWS

    def cut_view(
        self, kind: ViewKind, *, target_round: int, target_client: int | None,
        transcript: Transcript, private: PrivateLog, channel: Channel,
    ) -> tuple[View, list[int]] | None:
        if kind not in (ViewKind.AGGREGATE, ViewKind.CLIENT_UPDATE):
            return None
        record = transcript.kept_round(target_round)
        honest = [c for c in record.contributors if c not in self.colluders]
        if not honest:
            raise KeyError(f"round {record.round}: every contributor colludes")
        rest = self.honest_sum(record)
        if kind == ViewKind.AGGREGATE:
            assert record.params is not None
            return AggregateView(
                round=record.round, params=record.params, aggregate=rest,
                contributors=tuple(honest),
                num_examples=sum(record.num_examples[c] for c in honest),
            ), honest
        target = honest[0] if target_client is None else target_client
        if target in self.colluders:
            raise KeyError(f"client {target} colludes; attack one of the honest clients {honest}")
        if target not in honest:
            raise KeyError(f"client {target} did not contribute to round {record.round}")
        update = self._single_update(record, target, honest, rest, channel)
        return record.update_view(target, update), [target]

    def honest_sum(self, record: RoundRecord) -> torch.Tensor:
        """What the coalition learns of the honest clients: the sum it sees minus its own
        updates (the server's sum with the server; the released one without)."""
        seen = self._seen_sum(record)
        own = record.coalition_updates or {}
        for c in record.contributors:
            if c in own:
                seen = seen - own[c].to(seen.dtype)
        return seen

    def _seen_sum(self, record: RoundRecord) -> torch.Tensor:
        if self.with_server:
            assert record.aggregate is not None
            return record.aggregate
        assert record.params is not None and record.next_params is not None
        if not record.denominator:
            raise KeyError(f"round {record.round}: the model did not move (no divisor), so "
                           "clients cannot read a sum from it")
        step = (record.next_params - record.params).to(torch.float64)
        return (step * record.denominator / self._server_lr).to(torch.float32)

    def _single_update(
        self, record: RoundRecord, target: int, honest: list[int], rest: torch.Tensor,
        channel: Channel,
    ) -> torch.Tensor:
        """The target's own update by the first route that reaches it, or KeyError saying
        why none does."""
        if self.with_server and record.client_updates and target in record.client_updates:
            return record.client_updates[target]  # the colluders' keys open its message
        why = ""
        if self.with_server and isinstance(channel, SecAggChannel):
            recovered = channel.recovered_updates(record.round).get(target)
            if recovered is not None:
                return torch.from_numpy(recovered).to(torch.float32)
            policy = channel.server_policies.get(record.round)
            failure = policy.failures.get(target) if isinstance(policy, CoalitionServer) else None
            why = f"; unmasking it failed: {failure}" if failure else ""
        if honest == [target]:
            return rest  # n − 1 colluders: the sum minus their own updates is the last one
        raise KeyError(f"round {record.round}: colluders {self.colluders} leave "
                       f"{len(honest)} honest clients in the sum{why}")


def _coalition_server(ctx: RoundContext) -> ServerPolicy:
    """An honest-following server that, after unmasking, tries every non-colluding input."""
    return CoalitionServer()


@register_adversary("sybil_sampling")
class SybilSampling(ColludingClients):
    """A malicious server that samples only its target and its own sybil clients each round.

    The honest draw is ignored: every round trains ``target`` and ``sybils`` (clients the
    server controls), so the sum minus the sybils' updates is the target's update, under any
    channel, whatever its threshold — SecAgg's minimum of 3 clients is met by two sybils.

    Args:
        target: The client the server isolates.
        sybils: The server's own clients (at least one; two for SecAgg's minimum).
    """

    name = "sybil_sampling"
    role = AdversaryRole.MALICIOUS_SERVER

    def __init__(self, *, target: NonNegativeInt = 0, sybils: list[NonNegativeInt]) -> None:
        if target in sybils:
            raise ConfigError(f"sybil_sampling: the target {target} cannot be one of the sybils")
        super().__init__(colluders=sybils, with_server=True)
        self.target = target

    def settings(self) -> dict[str, object]:
        return {"target": self.target, "sybils": self.colluders}

    def model_factory(
        self, factory: Callable[[], nn.Module], setup: SetUp
    ) -> Callable[[], nn.Module]:
        if self.target >= setup.num_clients:
            raise ConfigError(f"sybil_sampling: the target {self.target} is not a client "
                              f"(the federation has {setup.num_clients})")
        return super().model_factory(factory, setup)

    def sample(self, round_index: int, drawn: list[int]) -> list[int]:
        return sorted({self.target, *self.colluders})
