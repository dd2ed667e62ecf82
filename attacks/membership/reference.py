"""Reference (shadow) models trained the way the target was trained, K at a time, cached.

**Which data.** The attacker's pool (the population split, plus the candidates for online
attacks) is halved at random for every model. ``paired=True`` gives models 2j and 2j+1
complementary halves, so every pool example is IN for exactly half of the models (what LiRA's
online test and RMIA need); otherwise each model draws its own half (offline attacks).

**Which recipe — FedAvg simulated, approximately.** A reference model is trained by FedAvg on its
half with the target's public FL settings: the same algorithm, batch size, local epochs/steps,
learning rate and momentum, the same number of rounds, the same sampling scheme and sampling
rate q, the same server learning rate, and the same initial model w_0 (the factory's: public in
FL, where the server broadcasts it). What cannot be copied is the target's federation itself:
the half is cut into IID clients of *equal* size, as many as the target's typical client holds
when the attacker knows the client sizes (clients report them for weighted FedAvg), otherwise
the target's number of clients. Matching the client size keeps the number of local steps per
round, hence the optimisation progress per round and the passes over each example (q·E·T),
the same as in the target; equal sizes make every client run the same number of steps, which
is what lets the K·m clients of a round train as one vmapped batch. The clients' data are IID
even when the target's partition was not (the attacker does not know it), and defenses are not
simulated, so one set of models serves every defense stack of a suite.

**Two engines, same models.** ``sequential`` runs the harness's own :class:`Simulation` once
per model (the reference implementation, and the fallback for models torch.func cannot map
over, e.g. BatchNorm in training mode). ``vectorized`` replays exactly the same schedule —
the same client sampling and batch order from the same named streams — for all K models at
once: parameters are stacked along a leading axis (the ``torch.func.stack_module_state``
layout) and every local step is one ``vmap(grad(loss))`` call over the K·m clients of the round.
The two agree to float rounding (tests/attacks/membership/test_reference.py).

**Cache.** Models are cached in memory and, with ``cache_dir``, on disk, under a hash of the
pool's contents, the architecture and w_0, the reference FL settings, K, the seed and the
design, so the cells of a suite that share data, model and recipe train them once.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from fedbench.attack import AttackerKnowledge
from fedbench.config import FLConfig
from fedbench.data.federated import FederatedData
from fedbench.data.tensors import TensorData
from fedbench.errors import DataError
from fedbench.fl.client import batch_schedule
from fedbench.fl.params import get_flat
from fedbench.fl.pipeline import Pipeline
from fedbench.fl.sampling import ClientSampler
from fedbench.fl.simulation import Simulation
from fedbench.fl.stacked import local_sgd_stacked, stacked_gradients, vectorizable
from fedbench.fl.transcript import Transcript
from fedbench.seeding import Streams

Engine = Literal["auto", "vectorized", "sequential"]
_DESIGN_VERSION = "fedavg-equal-iid-v1"  # bump when the training procedure changes
_MEMORY: OrderedDict[str, ReferenceModels] = OrderedDict()
_MEMORY_BYTES = 1 << 30  # the in-memory cache keeps at most ~1 GiB of parameters


@dataclass(frozen=True)
class ReferenceModels:
    """K trained reference models and what each was trained on.

    Attributes:
        params: Flat parameters, one row per model, [K, D] (CPU, float32).
        in_mask: [K, n_pool] booleans: pool example i was in model k's training data.
        engine: "vectorized" or "sequential" (how they were trained; "cache" when loaded).
        seconds: Training time (0 when loaded from the cache).
    """

    params: torch.Tensor
    in_mask: np.ndarray
    engine: str
    seconds: float

    @property
    def num_models(self) -> int:
        """K."""
        return int(self.params.shape[0])


@dataclass(frozen=True)
class ModelPlan:
    """What one reference model trains on: equal-size clients (pool positions) and a seed."""

    clients: np.ndarray  # [num_clients, client_size] positions in the pool
    seed: int  # seed of the model's "sampling" and "local_training" streams


def reference_fl(target: FLConfig, train_size: int, client_size: int | None) -> FLConfig:
    """The FL settings a reference model trained on ``train_size`` examples runs with.

    Args:
        target: The target's public FL settings (``AttackerKnowledge.fl``).
        train_size: Examples in one reference model's half.
        client_size: Examples per client to mimic (None: keep the target's number of clients).
    """
    if client_size is None:
        num_clients = target.num_clients
    else:
        if client_size < 1:
            raise ValueError(f"client_size must be positive, got {client_size}")
        num_clients = max(1, train_size // client_size)
    if train_size < num_clients:
        raise DataError(
            f"reference models: {train_size} examples per model cannot make {num_clients} "
            "clients; use a larger population split (split.population_fraction)"
        )
    q = target.expected_clients / target.num_clients
    settings = {**target.model_dump(), "num_clients": num_clients, "eval_every": target.rounds}
    if target.sampling == "poisson":
        settings.update(client_fraction=q, clients_per_round=None)
    else:
        settings.update(clients_per_round=max(1, round(q * num_clients)), client_fraction=None)
    return FLConfig.model_validate(settings)


def plan_models(
    pool_size: int, *, num_models: int, seed: int, paired: bool, fl: FLConfig
) -> tuple[list[ModelPlan], np.ndarray]:
    """Each model's clients and the resulting [K, pool_size] IN mask.

    Args:
        pool_size: Examples in the attacker's pool.
        num_models: K (even when ``paired``).
        seed: Seed of the split and of the models' streams.
        paired: Give models 2j and 2j+1 complementary halves.
        fl: Reference FL settings (``num_clients`` gives the number of equal-size clients).
    """
    if num_models < 1:
        raise ValueError(f"num_models must be at least 1, got {num_models}")
    if paired and num_models % 2:
        raise ValueError(f"paired (online) reference models need an even count, got {num_models}")
    streams = Streams(seed)
    rng = streams.numpy("reference_split")
    half = pool_size // 2
    halves: list[np.ndarray] = []
    while len(halves) < num_models:
        order = rng.permutation(pool_size)
        halves.append(order[:half])
        if paired:
            halves.append(order[half : 2 * half])
    size = half // fl.num_clients
    if size < 1:
        raise DataError(f"reference models: {half} examples cannot fill {fl.num_clients} clients")
    plans, mask = [], np.zeros((num_models, pool_size), dtype=bool)
    for k, chosen in enumerate(halves):
        shuffled = streams.numpy("reference_shards", k).permutation(chosen)
        clients = shuffled[: fl.num_clients * size].reshape(fl.num_clients, size)
        mask[k, clients.ravel()] = True
        plans.append(ModelPlan(clients, streams.integer_seed("reference_model", k)))
    return plans, mask


def _train_sequential(
    plans: list[ModelPlan], pool: TensorData, factory: Callable[[], nn.Module], fl: FLConfig,
    device: torch.device, kind: Literal["image", "tabular"],
) -> torch.Tensor:
    rows = []
    for plan in tqdm(plans, desc="reference models", disable=None, leave=False):
        used = np.zeros(len(pool), dtype=bool)
        used[plan.clients.ravel()] = True
        # The examples the model did not train on (evaluated after the last round; any one
        # example will do when there are none).
        held_out = pool.subset(np.flatnonzero(~used) if (~used).any() else np.array([0]))
        data = FederatedData(
            dataset="reference", clients=[pool.subset(c) for c in plan.clients],
            population=held_out, test=held_out, num_classes=0,
            input_shape=tuple(pool.x.shape[1:]), kind=kind,
        )
        sim = Simulation(
            model_factory=factory, data=data, fl=fl, pipeline=Pipeline([]),
            streams=Streams(plan.seed),
            transcript=Transcript(rounds=fl.rounds), device=device,
        ).run()
        rows.append(get_flat(sim.model).cpu())
    return torch.stack(rows)


def _train_vectorized(
    plans: list[ModelPlan], pool: TensorData, factory: Callable[[], nn.Module], fl: FLConfig,
    device: torch.device,
) -> torch.Tensor:
    recipe = fl.recipe
    base = factory().to(device)
    base.train()
    names = [n for n, p in base.named_parameters() if p.requires_grad]
    start = {n: p.detach() for n, p in base.named_parameters() if p.requires_grad}
    k_models = len(plans)
    weights = {n: start[n].unsqueeze(0).repeat(k_models, *[1] * start[n].dim()) for n in names}
    x_pool, y_pool = pool.x.to(device), pool.y.to(device)
    samplers = [
        ClientSampler(num_clients=fl.num_clients, expected_clients=fl.expected_clients,
                      sampling=fl.sampling, streams=Streams(p.seed))
        for p in plans
    ]
    step_grads = stacked_gradients(base)
    client_size = plans[0].clients.shape[1]
    for t in tqdm(range(fl.rounds), desc="reference rounds", disable=None, leave=False):
        workers = [(k, c) for k in range(k_models) for c in samplers[k].sample(t)]
        if not workers:
            continue
        owner = torch.tensor([k for k, _ in workers], device=device)
        rows = torch.as_tensor(
            np.stack([plans[k].clients[c] for k, c in workers]), device=device
        )
        # The same batch order SGDTraining draws: stream "local_training" keyed by round, client.
        schedules = [
            batch_schedule(
                client_size, recipe, Streams(plans[k].seed).torch("local_training", t, c)
            )
            for k, c in workers
        ]
        local = local_sgd_stacked(
            step_grads, {n: weights[n][owner] for n in names}, schedules, rows, x_pool, y_pool,
            recipe,
        )
        counts = torch.bincount(owner, minlength=k_models).to(start[names[0]].dtype)
        for n in names:
            total = torch.zeros_like(weights[n]).index_add_(0, owner, local[n] - weights[n][owner])
            shape = (k_models, *[1] * start[n].dim())
            weights[n] = weights[n] + fl.server_lr * total / counts.clamp(min=1).reshape(shape)
    return torch.cat([weights[n].reshape(k_models, -1) for n in names], dim=1).detach().cpu()


def cache_key(
    pool: TensorData, factory: Callable[[], nn.Module], fl: FLConfig, *, num_models: int,
    seed: int, paired: bool,
) -> str:
    """Hash of everything the models depend on: data, architecture and w_0, recipe, K, seed."""
    model = factory()
    digest = hashlib.sha256(_DESIGN_VERSION.encode())
    digest.update(pool.x.detach().cpu().numpy().tobytes())
    digest.update(pool.y.detach().cpu().numpy().tobytes())
    digest.update(repr(model).encode())
    digest.update(get_flat(model).cpu().numpy().tobytes())
    settings = {"fl": fl.model_dump(mode="json"), "k": num_models, "seed": seed, "paired": paired}
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()[:32]


def _load(path: Path) -> ReferenceModels | None:
    if not path.exists():
        return None
    blob = torch.load(path, weights_only=True)
    return ReferenceModels(blob["params"], blob["in_mask"].numpy(), "cache", 0.0)


def _store(path: Path, models: ReferenceModels) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(handle)
    torch.save({"params": models.params, "in_mask": torch.from_numpy(models.in_mask)}, tmp)
    os.replace(tmp, path)  # atomic: parallel cells never read a half-written file


def train_reference_models(
    *,
    pool: TensorData,
    factory: Callable[[], nn.Module],
    fl: FLConfig,
    kind: Literal["image", "tabular"],
    num_models: int,
    seed: int,
    paired: bool,
    client_size: int | None = None,
    device: torch.device | str = "cpu",
    engine: Engine = "auto",
    cache_dir: str | Path | None = None,
) -> ReferenceModels:
    """Train (or fetch from the cache) K reference models on random halves of ``pool``.

    Args:
        pool: The attacker's data (population split, plus candidates for online attacks).
        factory: Builds the target's architecture with its initial weights w_0.
        fl: The target's public FL settings (``AttackerKnowledge.fl``).
        kind: "image" or "tabular".
        num_models: K.
        seed: Seed of the halves, the client shards and each model's streams.
        paired: Complementary halves for models 2j, 2j+1 (every example IN for exactly K/2).
        client_size: Examples per client to mimic (the target's typical client), or None.
        device: Training device.
        engine: "vectorized", "sequential", or "auto" (vectorized when the model allows it).
        cache_dir: Folder for the on-disk cache (None: memory only).

    Example:
        >>> from fedbench.registry import MODELS
        >>> pool = TensorData.from_arrays(torch.linspace(0, 1, 160).reshape(40, 4),
        ...                               torch.arange(40) % 2)
        >>> def make():
        ...     with torch.random.fork_rng():
        ...         torch.manual_seed(0)
        ...         return MODELS.create("logreg", in_shape=(4,), num_classes=2)
        >>> refs = train_reference_models(pool=pool, factory=make, kind="tabular",
        ...     fl={"num_clients": 2, "rounds": 2, "batch_size": 5}, num_models=4, seed=0,
        ...     paired=True)
        >>> refs.params.shape, refs.in_mask.sum(axis=0).tolist()[:3]
        (torch.Size([4, 10]), [2, 2, 2])
    """
    if engine not in ("auto", "vectorized", "sequential"):
        raise ValueError(f"engine must be auto, vectorized or sequential, got {engine!r}")
    device = torch.device(device)
    settings = reference_fl(fl, len(pool) // 2, client_size)
    key = cache_key(pool, factory, settings, num_models=num_models, seed=seed, paired=paired)
    path = Path(cache_dir) / f"references-{key}.pt" if cache_dir is not None else None
    cached = _MEMORY.get(key) or (_load(path) if path is not None else None)
    if cached is not None:
        _MEMORY[key] = cached
        _MEMORY.move_to_end(key)
        return ReferenceModels(cached.params, cached.in_mask, "cache", 0.0)

    plans, mask = plan_models(
        len(pool), num_models=num_models, seed=seed, paired=paired, fl=settings
    )
    if engine == "auto":
        probe = factory().to(device)
        engine = "vectorized" if vectorizable(
            probe, pool.x[0].to(device), pool.y[0].to(device)
        ) else "sequential"
    tick = time.perf_counter()
    if engine == "vectorized":
        params = _train_vectorized(plans, pool, factory, settings, device)
    else:
        params = _train_sequential(plans, pool, factory, settings, device, kind)
    models = ReferenceModels(params, mask, engine, time.perf_counter() - tick)
    _MEMORY[key] = models
    while len(_MEMORY) > 1 and sum(
        m.params.numel() * m.params.element_size() for m in _MEMORY.values()
    ) > _MEMORY_BYTES:
        _MEMORY.popitem(last=False)  # least recently used first
    if path is not None:
        _store(path, models)
    return models


def clear_memory_cache() -> None:
    """Forget the in-memory cache (tests, or to free memory between suites)."""
    _MEMORY.clear()


def typical_client_size(knowledge: AttackerKnowledge) -> int | None:
    """The median number of examples per client, when the attacker knows the sizes."""
    sizes = knowledge.client_sizes
    return int(np.median(sizes)) if sizes else None


def references_for(
    knowledge: AttackerKnowledge,
    *,
    pool: TensorData,
    num_models: int,
    paired: bool,
    engine: Engine = "auto",
    cache_dir: str | Path | None = None,
) -> ReferenceModels:
    """:func:`train_reference_models` with everything else taken from the attacker's knowledge."""
    return train_reference_models(
        pool=pool, factory=knowledge.model_factory, fl=knowledge.fl, kind=knowledge.data_kind,
        num_models=num_models, seed=knowledge.seed, paired=paired,
        client_size=typical_client_size(knowledge), device=knowledge.device, engine=engine,
        cache_dir=cache_dir,
    )
