"""The attack interface: what an attack may know, what it returns, and the truth it is scored on.

An attack declares the views it can use, strongest first (``views``), and the round and client
it targets (``target``). The harness hands it a view the defenses and the adversary leave open,
together with :class:`AttackerKnowledge` (public facts and the population split). ``run`` never
receives private data; ``score`` alone receives :class:`GroundTruth`. The implementations live
in ``attacks/`` (installed as ``fedbench.attacks``) and register with
:func:`fedbench.registry.register_attack`.

Example:
    >>> from fedbench.fl.views import ViewKind
    >>> class Guess(Attack):
    ...     views = (ViewKind.FINAL_MODEL,)
    ...     def run(self, view, knowledge):
    ...         return AttackResult(scores=np.zeros(len(knowledge.candidates)))
    ...     def score(self, result, truth):
    ...         return []
    >>> Guess().usable_views({ViewKind.FINAL_MODEL, ViewKind.AGGREGATE})
    (<ViewKind.FINAL_MODEL: 'final_model'>,)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import nn

from fedbench.config import FLConfig
from fedbench.data.tensors import TensorData
from fedbench.fl.recipe import TrainingRecipe
from fedbench.fl.views import View, ViewKind
from fedbench.metrics.base import Metric


@dataclass(frozen=True)
class AttackTarget:
    """What an attack aims at.

    Attributes:
        round: The round whose update or aggregate is attacked (negative counts from the end).
        client: The client whose update is attacked in the ``client_update`` view (None: the
            first contributor of that round).
    """

    round: int = 0
    client: int | None = None


@dataclass(frozen=True)
class AttackerKnowledge:
    """What the attacker knows besides the view: public configuration and population data.

    Attributes:
        model_factory: Builds a fresh model of the run's architecture (load view params into it).
        input_shape: Shape of one example.
        num_classes: Number of classes.
        data_kind: "image" (values in [0, 1]) or "tabular".
        fl: The public FL settings (clients, rounds, sampling, weighting, the training recipe).
        defenses: Public parameters of the defenses that ran, by name.
        population: The held-out population split (never given to a client).
        candidates: Records whose membership the attacker must guess (membership hidden; ids
            renumbered so they carry no information), or None.
        device: Device to run on.
        seed: Seed of the attack's own random stream.
        client_sizes: Examples each client reported (public: FedAvg weighting needs them), or
            None when unknown.
    """

    model_factory: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    num_classes: int
    data_kind: Literal["image", "tabular"]
    fl: FLConfig
    defenses: dict[str, dict[str, Any]]
    population: TensorData
    candidates: TensorData | None
    device: torch.device
    seed: int
    client_sizes: tuple[int, ...] | None = None

    @property
    def recipe(self) -> TrainingRecipe:
        """The public client-training recipe (lr, steps, batch size)."""
        return self.fl.recipe


@dataclass(frozen=True)
class GroundTruth:
    """Private truth, given only to ``Attack.score``.

    Attributes:
        examples: The private examples behind the attacked update or aggregate (inversion).
        membership: 1 for members, 0 for non-members, aligned with ``knowledge.candidates``.
        canaries: True when membership was decided by an independent fair coin per candidate
            (canaries kept in or removed from training before it started), False when members
            and non-members come from a fixed split (members vs the test split).
    """

    examples: TensorData | None = None
    membership: np.ndarray | None = None
    canaries: bool = False


@dataclass
class AttackResult:
    """What an attack produced.

    Attributes:
        scores: Membership score per candidate (higher = more likely a member).
        reconstruction: Reconstructed inputs (gradient inversion).
        labels: Recovered labels (gradient inversion).
        extras: Anything else worth recording (iterations, final loss...).
    """

    scores: np.ndarray | None = None
    reconstruction: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)


class Attack(ABC):
    """Base class of attacks.

    Attributes:
        views: The views this attack can use (a class attribute, or set per instance by
            attacks that wrap another); the harness runs it on every one that is open.
        target: The round (and client) attacked.
        guesses_membership: Whether the attack guesses the membership of candidate records;
            only such attacks are handed candidates (``AttackerKnowledge.candidates``).
    """

    views: tuple[ViewKind, ...] = ()
    target: AttackTarget = AttackTarget()
    guesses_membership: ClassVar[bool] = False

    def usable_views(self, open_views: Collection[ViewKind]) -> tuple[ViewKind, ...]:
        """This attack's views that are open, in its order (the harness runs it on each)."""
        return tuple(v for v in self.views if v in open_views)

    @abstractmethod
    def run(self, view: View, knowledge: AttackerKnowledge) -> AttackResult:
        """Attack the view. Must not need anything private."""

    @abstractmethod
    def score(self, result: AttackResult, truth: GroundTruth) -> list[Metric]:
        """Score the result against the ground truth."""

    def figures(
        self, result: AttackResult, truth: GroundTruth, folder: Path, *, caption: str = ""
    ) -> list[Path]:
        """Write figures for this result under ``folder`` (optional); return their paths.

        ``caption`` names the experiment, defense and adversary; titles start with it."""
        return []
