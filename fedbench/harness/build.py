"""Build a cell's parts from its configuration: data, model factory, defenses, pipeline, run.

The same builders serve a cell's run and ``fedbench run --dry-run``, which builds every cell's
pipeline and asks every stage's ``check`` before any training.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from fedbench.config import ExperimentConfig
from fedbench.data.federated import FederatedData, federate
from fedbench.data.membership import Canaries, insert_canaries
from fedbench.defense import Defense
from fedbench.fl.context import RunInfo
from fedbench.fl.engine import vectorized_refusal, why_not_vectorized
from fedbench.fl.params import num_params
from fedbench.fl.pipeline import Pipeline
from fedbench.fl.simulation import run_info
from fedbench.registry import DATASETS, DEFENSES, MODELS, PARTITIONERS
from fedbench.seeding import Streams


def build_data(cfg: ExperimentConfig, streams: Streams) -> FederatedData:
    """Load and split the experiment's dataset (partition stream)."""
    dataset = DATASETS.create(cfg.data.name, cfg.data.params)
    partitioner = PARTITIONERS.create(cfg.partition.name, cfg.partition.params)
    return federate(
        dataset,
        partitioner=partitioner,
        num_clients=cfg.fl.num_clients,
        test_fraction=cfg.split.test_fraction,
        population_fraction=cfg.split.population_fraction,
        max_train_examples=cfg.split.max_train_examples,
        rng=streams.numpy("partition"),
    )


def cell_data(cfg: ExperimentConfig, streams: Streams) -> tuple[FederatedData, Canaries | None]:
    """The experiment's data with its canaries (when it audits with them) already removed or
    kept by their coins."""
    data = build_data(cfg, streams)
    if not cfg.canaries:
        return data, None
    return insert_canaries(data, cfg.canaries, streams.numpy("canaries"))


def model_factory(
    cfg: ExperimentConfig, data: FederatedData, streams: Streams
) -> Callable[[], nn.Module]:
    """A factory that builds the model with the same initialisation every call.

    Initialisation draws from the "model_init" stream inside ``fork_rng``, so torch's global
    random state is left as it was.
    """
    seed = streams.integer_seed("model_init")

    def build() -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return MODELS.create(
                cfg.model.name, cfg.model.params,
                in_shape=data.input_shape, num_classes=data.num_classes,
            )

    return build


def build_defenses(cfg: ExperimentConfig) -> list[tuple[str, Defense]]:
    """The experiment's defenses, by the names they were configured under, in order."""
    return [(d.name, DEFENSES.create(d.name, d.params)) for d in cfg.defenses]


def build_run_info(
    cfg: ExperimentConfig, data: FederatedData, factory: Callable[[], nn.Module],
    streams: Streams,
) -> RunInfo:
    """The run facts every stage's ``check`` and ``setup`` receive (before any training)."""
    dim = num_params(factory())
    return run_info(cfg.fl, data, dim, factory, streams, torch.device(cfg.device))


def pipeline_problems(cfg: ExperimentConfig) -> list[str]:
    """Everything that stops ``cfg`` from running, found without training: the data cannot be
    built or split, the defenses do not compose, or a stage's ``check`` refuses the run."""
    from fedbench.errors import FedbenchError

    streams = Streams(cfg.seed)
    try:
        data, _ = cell_data(cfg, streams)
        factory = model_factory(cfg, data, streams)
        pipeline = Pipeline(build_defenses(cfg))
        problems = pipeline.check(build_run_info(cfg, data, factory, streams))
        if cfg.fl.engine == "vectorized":
            why = why_not_vectorized(pipeline, factory(), data)
            problems += [vectorized_refusal(why)] if why else []
        return problems
    except (FedbenchError, ValueError) as err:
        return [str(err)]
