"""Compose defenses into the stages of one round."""

from __future__ import annotations

from collections.abc import Sequence

from fedbench.defense import Defense
from fedbench.errors import ConfigError
from fedbench.fl.channel import Channel, PlaintextChannel
from fedbench.fl.client import SGDTraining
from fedbench.fl.context import RunInfo
from fedbench.fl.stages import ClientUpdateStage, LocalTraining, ServerUpdateStage, Stage


class Pipeline:
    """The round's stages, taken from a list of defenses (in the order given).

    Client-update and server-update stages chain in list order; at most one defense may own the
    channel and at most one local training. Missing stages are the identity (plain SGD, the
    plaintext channel).

    Args:
        defenses: The defenses of the experiment, with the names they were configured under.
    """

    def __init__(self, defenses: Sequence[tuple[str, Defense]] = ()) -> None:
        self.defenses = list(defenses)
        trainers = [(n, d.local_training) for n, d in self.defenses if d.local_training]
        channels = [(n, d.channel) for n, d in self.defenses if d.channel]
        if len(trainers) > 1:
            raise ConfigError(
                "defenses: at most one defense may replace local training, got "
                + ", ".join(n for n, _ in trainers)
            )
        if len(channels) > 1:
            raise ConfigError(
                "defenses: at most one defense may own the channel, got "
                + ", ".join(n for n, _ in channels)
            )
        self.local_training: LocalTraining = trainers[0][1] if trainers else SGDTraining()
        self.channel: Channel = channels[0][1] if channels else PlaintextChannel()
        self.client_stages: list[ClientUpdateStage] = [
            d.client_update for _, d in self.defenses if d.client_update
        ]
        self.server_stages: list[ServerUpdateStage] = [
            d.server_update for _, d in self.defenses if d.server_update
        ]

    def _default_stages(self) -> list[Stage]:
        """The identity stages that run because no defense replaces them."""
        defaults: list[Stage] = []
        if not any(d.local_training for _, d in self.defenses):
            defaults.append(self.local_training)
        if not any(d.channel for _, d in self.defenses):
            defaults.append(self.channel)
        return defaults

    def check(self, run: RunInfo) -> list[str]:
        """Every defense's and default stage's objections to ``run``, each line prefixed with
        the name the defense was configured under; empty when the pipeline can run."""
        problems = [
            f"{name}: {p}" if not p.startswith(f"{name}:") else p
            for name, defense in self.defenses
            for p in defense.check(run)
        ]
        return problems + [p for stage in self._default_stages() for p in stage.check(run)]

    def setup(self, run: RunInfo) -> None:
        """Set up each defense (which checks and sets up its own stages) and the default
        stages; a check that fails raises ConfigError before anything is set up."""
        problems = [p for stage in self._default_stages() for p in stage.check(run)]
        if problems:
            raise ConfigError("\n".join(problems))
        for _, defense in self.defenses:
            defense.setup(run)
        for stage in self._default_stages():
            stage.setup(run)
