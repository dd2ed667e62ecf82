"""The adversary of an experiment: who attacks, where it may act, and what it then sees.

Every experiment runs against one registered adversary (``adversary:`` in the config, default
``honest_but_curious``). An adversary may act at the seams a real one has, and nowhere else:

| seam | what it may do | hook |
|---|---|---|
| set-up | change the architecture the clients train (once) | ``model_factory`` |
| sampling | choose which clients train each round | ``sample`` |
| broadcast | send each sampled client a model of its choice | ``broadcaster`` |
| the channel | deviate from secure aggregation, pool colluders' shares | ``setup_channel`` |
| the views | open views it creates (a target isolated in the sum) | ``views``, ``cut_view`` |
| the clients | pool colluding clients' own updates and keys | ``coalition`` |

What it did is visible to the defenses (the Transcript records each client's model hash, so a
model-consistency check can refuse a round) and to the reader: every record names the
adversary (:meth:`Adversary.label`), and :meth:`Adversary.effect` says when a combination is
moot (model inconsistency against a plaintext channel, which reveals each update anyway) —
such a cell runs and is labelled, it is not refused.

Implementations live in the plugin tree (``fedbench.attacks.adversaries``), reached through
:data:`fedbench.registry.ADVERSARIES`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, ClassVar, Final

from torch import nn

from fedbench.data.tensors import TensorData
from fedbench.fl.views import View, ViewKind

if TYPE_CHECKING:  # the threat model holds an adversary: import its types for annotations only
    from fedbench.fl.broadcast import BroadcastPolicy
    from fedbench.fl.channel import Channel
    from fedbench.fl.threat import PrivateLog
    from fedbench.fl.transcript import Transcript

HONEST_BUT_CURIOUS: Final = "honest_but_curious"


class AdversaryRole(str, Enum):
    """Who the adversary is (the table's adversary column groups by it)."""

    HONEST_BUT_CURIOUS = "honest-but-curious server"
    MALICIOUS_SERVER = "malicious server"
    COLLUDING_CLIENTS = "colluding clients"


@dataclass(frozen=True)
class SetUp:
    """The public facts an adversary acts on at set-up.

    Attributes:
        input_shape: Shape of one example.
        num_classes: Number of classes.
        population: The held-out public split (the server's own data).
        num_clients: Clients in the federation.
        seed: Seed of the adversary's own random stream.
        server_lr: The server's learning rate η (public: clients see w_{t+1} = w_t + η·S'/n).
    """

    input_shape: tuple[int, ...]
    num_classes: int
    population: TensorData
    num_clients: int
    seed: int
    server_lr: float = 1.0


@dataclass(frozen=True)
class Coalition:
    """Clients that pool what they hold: their own updates, and their keys.

    Attributes:
        members: The colluding clients.
        with_server: Whether the server is one of them. With it, the coalition reads every
            message a client's secrets open (a shared HE secret key decrypts any client's
            ciphertext) and the server's sum; without it, only what clients receive — the
            global models w_t, from which the post-noise sum follows.
    """

    members: frozenset[int]
    with_server: bool


class Adversary:
    """Base of adversaries: an honest-but-curious server, acting nowhere.

    Subclasses override the hooks of the seams they act at; the defaults leave the run as an
    honest server would.
    """

    name: ClassVar[str] = HONEST_BUT_CURIOUS
    role: ClassVar[AdversaryRole] = AdversaryRole.HONEST_BUT_CURIOUS

    def label(self) -> str:
        """The adversary as records and tables name it: its registry name and settings."""
        settings = ", ".join(f"{k}={v}" for k, v in sorted(self.settings().items()))
        return f"{self.name}({settings})" if settings else self.name

    def settings(self) -> dict[str, Any]:
        """The adversary's parameters (for its label)."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def effect(self, *, channel: Channel) -> str | None:
        """Why acting changes nothing against this channel (the cell is labelled so), or
        None when it matters."""
        return None

    def model_factory(
        self, factory: Callable[[], nn.Module], setup: SetUp
    ) -> Callable[[], nn.Module]:
        """The architecture every client trains (an honest server's: ``factory``)."""
        return factory

    def broadcaster(self, setup: SetUp) -> BroadcastPolicy | None:
        """Who gets which model each round (None: everyone gets w_t)."""
        return None

    def sample(self, round_index: int, drawn: list[int]) -> list[int]:
        """The clients the server asks to train in ``round_index``, given the honest draw
        ``drawn`` (an honest server keeps it)."""
        return drawn

    def setup_channel(self, channel: Channel) -> None:
        """Act inside the channel (e.g. deviate from secure aggregation); by default nothing."""

    def coalition(self) -> Coalition | None:
        """The colluding clients whose own updates the Transcript keeps for this adversary
        (None: no client colludes)."""
        return None

    def views(self, opened: frozenset[ViewKind], *, channel: Channel) -> frozenset[ViewKind]:
        """The views open to this adversary, given those the channel leaves open."""
        return opened

    def cut_view(
        self, kind: ViewKind, *, target_round: int, target_client: int | None,
        transcript: Transcript, private: PrivateLog, channel: Channel,
    ) -> tuple[View, list[int]] | None:
        """A view this adversary's action created (with the clients whose examples are behind
        it), or None to let the threat model cut ``kind`` as for an honest server."""
        return None
