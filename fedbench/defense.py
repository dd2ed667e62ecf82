"""The defense interface: a bundle of optional round stages plus a privacy report.

A defense sets any of ``local_training``, ``client_update``, ``channel`` and ``server_update``
(see :mod:`fedbench.fl.stages`); several defenses compose into one round pipeline
(:mod:`fedbench.fl.pipeline`), with at most one owning the channel and at most one owning local
training. The implementations live in ``defenses/`` (installed as ``fedbench.defenses``) and
register with :func:`fedbench.registry.register_defense`.

Example:
    >>> import torch
    >>> from fedbench.fl.stages import ClientUpdateStage
    >>> class Halve(ClientUpdateStage):
    ...     def apply(self, client_id, update, ctx):
    ...         return update / 2
    >>> class HalveDefense(Defense):
    ...     def __init__(self) -> None:
    ...         self.client_update = Halve()
    >>> [type(s).__name__ for s in HalveDefense().stages()]
    ['Halve']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from fedbench.errors import ConfigError
from fedbench.fl.channel import Channel
from fedbench.fl.context import RunInfo
from fedbench.fl.stages import ClientUpdateStage, LocalTraining, ServerUpdateStage, Stage
from fedbench.metrics.base import Metric

SECURE_MODE_NOISE: Final = "secure_mode draws the noise from the OS CSPRNG, which no seed fixes"

PrivacyLevel = Literal["user", "example"]


@dataclass(frozen=True)
class PrivacyReport:
    """An (ε, δ) guarantee from a real accountant for the mechanism that actually ran.

    Attributes:
        epsilon: ε (may be ``inf``).
        delta: δ.
        accountant: Which accountant computed it ("rdp", "prv"...).
        secure_mode: Whether noise came from a CSPRNG.
        level: What a neighbouring dataset differs by: "user" (one client) or "example".
        note: Caveats (e.g. the worst client's ε out of several).
    """

    epsilon: float
    delta: float
    accountant: str
    secure_mode: bool
    level: PrivacyLevel = "user"
    note: str = ""


class Defense:
    """A bundle of optional stages. Subclasses set the stage attributes in ``__init__``.

    Attributes:
        local_training: Replaces the clients' plain SGD (e.g. DP-SGD).
        client_update: Transforms each Δ_i on the client (clip, noise, prune...).
        channel: Carries updates to the server (secure aggregation, HE).
        server_update: Transforms the aggregate on the server (central noise).
        insecure: Why this configuration is insecure, when an insecure setting was explicitly
            allowed (e.g. a 1024-bit Paillier key); every table marks such rows. Known once
            ``check`` has seen the run.
        irreproducible: Why two runs with the same seeds can give different results (noise
            drawn from the OS), or None when the seeds fix every result; ``fedbench compare``
            reports changes in such cells without failing on them.
    """

    local_training: LocalTraining | None = None
    client_update: ClientUpdateStage | None = None
    channel: Channel | None = None
    server_update: ServerUpdateStage | None = None
    insecure: str | None = None
    irreproducible: str | None = None

    def stages(self) -> list[Stage]:
        """The stages this defense sets, in round order."""
        candidates = (self.local_training, self.client_update, self.channel, self.server_update)
        return [s for s in candidates if s is not None]

    def check(self, run: RunInfo) -> list[str]:
        """Why this defense cannot run ``run`` (one line each, naming the field); empty when it
        can. Cheap and without side effects: ``fedbench run --dry-run`` calls it for every cell
        before any training. Sets ``insecure`` when an insecure setting was allowed."""
        return [problem for stage in self.stages() for problem in stage.check(run)]

    def setup(self, run: RunInfo) -> None:
        """Refuse a run ``check`` rejects, then ``prepare`` and set up every stage (once,
        before round 0)."""
        problems = self.check(run)
        if problems:
            raise ConfigError("\n".join(problems))
        self.prepare(run)
        for stage in self.stages():
            stage.setup(run)

    def prepare(self, run: RunInfo) -> None:
        """Defense-level preparation once ``check`` passed (calibrate the noise, reset the
        per-run state); nothing by default."""

    def privacy_spent(self, delta: float) -> PrivacyReport | None:
        """(ε, δ) spent so far, or None for defenses without a DP guarantee."""
        return None

    def metrics(self) -> list[Metric]:
        """Defense-specific numbers for the results (e.g. quantization error)."""
        return []
