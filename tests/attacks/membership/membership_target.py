"""A small overfitted FL target for the membership-attack tests (imported by conftest.py).

``build_target`` trains FedAvg on digits with the harness's own pieces and hands out exactly
what the harness would give an attack: the views, the AttackerKnowledge (membership hidden)
and, separately, the membership labels for scoring.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fedbench.attack import AttackerKnowledge
from fedbench.config import parse_experiment
from fedbench.data.federated import FederatedData
from fedbench.data.membership import membership_candidates
from fedbench.fl.pipeline import Pipeline
from fedbench.fl.simulation import Simulation, SimulationResult
from fedbench.fl.transcript import Transcript
from fedbench.harness.build import build_data, model_factory
from fedbench.seeding import Streams

# Overfits on purpose: 2 clients × 60 digits, 30 rounds of 5 local epochs at a high learning
# rate (test accuracy ≈ 0.91, training loss ≈ 0); 120 members and 120 non-members are
# candidates, and 30% of the remaining training data is the attacker's population.
OVERFIT: dict[str, Any] = {
    "data": "digits",
    "split": {"test_fraction": 0.2, "population_fraction": 0.3, "max_train_examples": 120},
    "model": {"name": "mlp", "hidden": [128]},
    "fl": {"num_clients": 2, "rounds": 30, "local_epochs": 5, "batch_size": 32,
           "client_lr": 0.3},
    "mia_candidates": 500,
    "seed": 5,
}


@dataclass
class Target:
    """A trained target and the attacker's side of it."""

    sim: SimulationResult
    data: FederatedData
    knowledge: AttackerKnowledge
    membership: np.ndarray


def build_target(config: dict[str, Any], *, keep_round: int = -1) -> Target:
    """Train ``config`` and return the target with its knowledge and membership labels."""
    cfg = parse_experiment(config)
    streams = Streams(cfg.seed)
    data = build_data(cfg, streams)
    factory = model_factory(cfg, data, streams)
    transcript = Transcript(rounds=cfg.fl.rounds, keep_rounds={keep_round},
                            keep_model_sequence=True)
    sim = Simulation(model_factory=factory, data=data, fl=cfg.fl, pipeline=Pipeline([]),
                     streams=streams, transcript=transcript).run()
    candidates, membership = membership_candidates(
        data, sim.private.participants, cfg.mia_candidates, streams.numpy("candidates")
    )
    knowledge = AttackerKnowledge(
        model_factory=factory, input_shape=data.input_shape, num_classes=data.num_classes,
        data_kind=data.kind, fl=cfg.fl,
        defenses={}, population=data.population, candidates=candidates,
        device=torch.device("cpu"), seed=streams.integer_seed("attack", 0),
        client_sizes=tuple(len(c) for c in data.clients),
    )
    return Target(sim, data, knowledge, membership)
