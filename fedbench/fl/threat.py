"""The threat model: which views a run leaves open, and the view for a target with its truth.

``ThreatModel`` answers the two questions the harness asks — which views are open for this
pipeline and adversary, and what exactly an attack on a given target receives — so that the
rest of the harness never decides visibility itself. The channel decides what an
honest-but-curious server reads; an active adversary (:mod:`fedbench.adversary`) may open more
(a target it isolated in the sum, an update its colluders unmasked) and cut those views itself.
What the server saw is in the :class:`~fedbench.fl.transcript.Transcript`; what only scoring
may read (which examples were behind an update) is in the :class:`PrivateLog`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch

from fedbench.adversary import Adversary
from fedbench.attack import AttackTarget, GroundTruth
from fedbench.data.federated import FederatedData
from fedbench.fl.channel import Channel
from fedbench.fl.transcript import Transcript
from fedbench.fl.views import View, ViewKind

PER_ROUND_VIEWS = frozenset({ViewKind.CLIENT_UPDATE, ViewKind.AGGREGATE})


@dataclass
class PrivateLog:
    """Ground truth the server never sees: which examples each client used in kept rounds.

    Only scoring code reads this.
    """

    used_ids: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)
    participants: set[int] = field(default_factory=set)


class ThreatModel:
    """Who sees what in a run whose updates travel through ``channel``, against ``adversary``.

    Args:
        channel: The pipeline's channel; it declares whether single updates are readable.
        adversary: Who attacks (an honest-but-curious server when None).
    """

    def __init__(self, *, channel: Channel, adversary: Adversary | None = None) -> None:
        self.channel = channel
        self.adversary = adversary or Adversary()

    def open_views(self) -> frozenset[ViewKind]:
        """The views the run leaves open to the adversary."""
        opened = {ViewKind.AGGREGATE, ViewKind.MODEL_SEQUENCE, ViewKind.FINAL_MODEL}
        if self.channel.reveals_client_updates:
            opened.add(ViewKind.CLIENT_UPDATE)
        return self.adversary.views(frozenset(opened), channel=self.channel)

    def transcript(
        self, *, rounds: int, wanted: Iterable[tuple[ViewKind, AttackTarget]]
    ) -> Transcript:
        """A Transcript that keeps exactly what the wanted (view, target) pairs need."""
        pairs = list(wanted)
        return Transcript(
            rounds=rounds,
            keep_rounds={target.round for kind, target in pairs if kind in PER_ROUND_VIEWS},
            keep_model_sequence=any(kind == ViewKind.MODEL_SEQUENCE for kind, _ in pairs),
            coalition=self.adversary.coalition(),
        )

    def view(
        self,
        kind: ViewKind,
        target: AttackTarget,
        *,
        transcript: Transcript,
        private: PrivateLog,
        data: FederatedData,
    ) -> tuple[View, GroundTruth]:
        """The view of ``kind`` for ``target`` and the private examples behind it.

        Raises:
            PermissionError: The view is closed for this run.
            KeyError: The target round was not kept, failed, or the client did not contribute.
        """
        if kind not in self.open_views():
            raise PermissionError(f"the {kind.value} view is closed for this run")
        made = self.adversary.cut_view(
            kind, target_round=target.round, target_client=target.client,
            transcript=transcript, private=private, channel=self.channel,
        )
        if made is not None:
            view, behind = made
            ids = torch.cat([private.used_ids[(target.round, c)] for c in behind])
            return view, GroundTruth(examples=data.client_examples(ids))
        if kind == ViewKind.CLIENT_UPDATE:
            single = transcript.client_update_view(target.round, target.client)
            ids = private.used_ids[(single.round, single.client_id)]
            return single, GroundTruth(examples=data.client_examples(ids))
        if kind == ViewKind.AGGREGATE:
            agg = transcript.aggregate_view(target.round)
            ids = torch.cat([private.used_ids[(agg.round, c)] for c in agg.contributors])
            return agg, GroundTruth(examples=data.client_examples(ids))
        if kind == ViewKind.MODEL_SEQUENCE:
            return transcript.model_sequence_view(), GroundTruth()
        return transcript.final_model_view(), GroundTruth()
