"""How a round's local training is computed: the loop, or chunks of clients trained at once.

The loop (each sampled client trains the reused worker model with the pipeline's
``local_training`` stage) always applies. The vectorized engine trains a chunk of the round's
clients as stacked copies of the model (:mod:`fedbench.fl.stacked`): the same batch schedules,
the same arithmetic, one batched computation per local step. It applies only where it computes
what the loop would: the stage is the plain :class:`~fedbench.fl.client.SGDTraining`, or a
defense's stage that trains a chunk itself (:class:`ChunkedTraining`: the same mechanism as its
one-client ``train``, such as DP-SGD's), and torch.func can batch the model (no buffers:
running statistics are updated in place, per copy).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from fedbench.data.federated import FederatedData
from fedbench.data.tensors import TensorData
from fedbench.errors import ConfigError, DataError
from fedbench.fl.client import SGDTraining, batch_schedule, used_positions
from fedbench.fl.context import RoundContext
from fedbench.fl.pipeline import Pipeline
from fedbench.fl.recipe import TrainingRecipe
from fedbench.fl.stacked import StackedParams, stacked_gradients, train_stacked, vectorizable
from fedbench.fl.stages import LocalTraining

#: The engines a run can use (``FLConfig.engine`` adds "auto": vectorized where it applies).
Engine = Literal["loop", "vectorized"]

#: Memory a chunk of stacked clients may take (its parameters, gradients, momentum, batches).
CHUNK_BYTES = 256 * 2**20


@dataclass(frozen=True)
class ChunkResult:
    """A chunk of clients' local training.

    Attributes:
        params: Each client's trained parameters, stacked.
        losses: Each client's mean loss over its steps (NaN: no step saw an example).
        used: Per client, the sorted positions (into its own examples) its batches
            touched, each once.
    """

    params: StackedParams
    losses: list[float]
    used: list[torch.Tensor]


@dataclass(frozen=True)
class TrainedChunk:
    """A chunk of clients' local training, as the round uses it.

    Attributes:
        updates: [W, d]: each client's update Δ = local − received, in the chunk's order.
        losses: Each client's mean loss over its steps.
        used_ids: Each client's global ids of the examples its batches touched.
    """

    updates: torch.Tensor
    losses: list[float]
    used_ids: list[torch.Tensor]


@runtime_checkable
class ChunkedTraining(Protocol):
    """A defense's ``local_training`` stage that also trains a chunk of clients at once, with
    the same mechanism, random streams and state as its one-client ``train``."""

    def chunk_problem(self, model: nn.Module, example: TensorData) -> str | None:
        """Why this stage cannot train stacked copies of ``model`` (None: it can)."""

    def vectors_per_client(self, batch: int) -> int:
        """Model-sized float vectors one client of a chunk needs beyond plain SGD's (what
        bounds the chunk size), for batches of about ``batch`` examples."""

    def train_chunk(
        self, model: nn.Module, shards: Sequence[TensorData], start: StackedParams,
        recipe: TrainingRecipe, *, clients: Sequence[int], ctx: RoundContext,
    ) -> ChunkResult:
        """The clients' local training from their stacked starting parameters."""


def choose_engine(
    requested: Literal["auto", "loop", "vectorized"], pipeline: Pipeline, model: nn.Module,
    data: FederatedData,
) -> Engine:
    """The engine a run uses: the requested one, or for "auto" vectorized where it applies.

    Raises:
        ConfigError: "vectorized" was requested where it cannot compute the loop's training.
    """
    if requested == "loop":
        return "loop"
    why = why_not_vectorized(pipeline, model, data)
    if why is None:
        return "vectorized"
    if requested == "vectorized":
        raise ConfigError(vectorized_refusal(why))
    return "loop"


def vectorized_refusal(why: str) -> str:
    """The error of ``engine: vectorized`` where it cannot apply (the run and the checks)."""
    return f"fl.engine: vectorized cannot train these clients: {why} (use engine: auto or loop)"


def why_not_vectorized(pipeline: Pipeline, model: nn.Module, data: FederatedData) -> str | None:
    """Why the vectorized engine cannot train this run's clients, or None when it can."""
    trainer = pipeline.local_training
    owners = [n for n, d in pipeline.defenses if d.local_training is trainer]
    owner = f"defense {owners[0]!r} ({type(trainer).__name__})" if owners else "the pipeline"
    # A subclass of SGDTraining may train differently: only the plain one, or a stage that
    # trains chunks itself.
    if type(trainer) is not SGDTraining and not isinstance(trainer, ChunkedTraining):
        return f"{owner} replaces local training and cannot train a chunk of clients at once"
    buffers = [n for n, _ in model.named_buffers()]
    if buffers:
        return (f"the model ({type(model).__name__}) has buffers ({', '.join(buffers[:3])}), "
                "which stacked copies cannot update in place")
    shard = next((c for c in data.clients if len(c)), None)
    if shard is None:
        return "no client has data"
    device = next(model.parameters()).device
    if not vectorizable(model, shard.x[0].to(device), shard.y[0].to(device)):
        return f"torch.func cannot run stacked copies of the model ({type(model).__name__})"
    if isinstance(trainer, ChunkedTraining):
        why = trainer.chunk_problem(model, shard.subset(np.arange(1)))
        return f"{owner}: {why}" if why else None
    return None


def default_chunk_size(dim: int, batch: int, example_numel: int, extra_vectors: int = 0) -> int:
    """Clients per chunk such that a chunk takes about ``CHUNK_BYTES``.

    Per client: its start, trained copy, gradient and momentum (with autograd's intermediates,
    about 8 float vectors of the model's size), ``extra_vectors`` more of them (a stage's own,
    e.g. per-example gradients), and a batch's inputs and activations (the widest layer of the
    registered models is at most ~16× the input).
    """
    per_client = 4 * ((8 + extra_vectors) * dim + 16 * batch * example_numel)
    return max(1, CHUNK_BYTES // per_client)


class VectorizedClients:
    """Trains chunks of a round's clients as stacked copies of one model.

    Args:
        model: A model of the run's architecture (its values are not used; its trainable
            parameters' order is the flat vectors' order, as in ``get_flat``).
        data: The client shards.
        recipe: The clients' training recipe.
        trainer: The pipeline's local_training stage: plain SGD, or a :class:`ChunkedTraining`
            that trains the chunk itself.
        chunk_size: Clients trained at once (default: :func:`default_chunk_size`): memory is
            O(chunk × model size), whatever the number of clients in a round.
    """

    def __init__(
        self, model: nn.Module, data: FederatedData, recipe: TrainingRecipe,
        trainer: LocalTraining | None = None, chunk_size: int | None = None,
    ) -> None:
        model.train()
        self.model = model
        self.trainer = trainer
        self.data = data
        self.recipe = recipe
        self.gradients = stacked_gradients(model)
        trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.names = [n for n, _ in trainable]
        self.shapes = [p.shape for _, p in trainable]
        self.sizes = [p.numel() for _, p in trainable]
        batch = recipe.batch_size or max(len(c) for c in data.clients)
        example = int(data.clients[0].x[0].numel()) if len(data.clients[0]) else 1
        extra = trainer.vectors_per_client(batch) if isinstance(trainer, ChunkedTraining) else 0
        self.chunk_size = chunk_size or default_chunk_size(sum(self.sizes), batch, example, extra)

    def chunks(self, clients: Sequence[int]) -> Iterator[list[int]]:
        """The clients in chunks of at most ``chunk_size``, in order."""
        for i in range(0, len(clients), self.chunk_size):
            yield list(clients[i : i + self.chunk_size])

    def train(
        self, clients: Sequence[int], received: Mapping[int, torch.Tensor], ctx: RoundContext
    ) -> TrainedChunk:
        """Each client's local training from the model it received, as the loop's: the
        chunk's updates Δ = local − received ([W, d], one subtraction for all of them), losses
        and examples used."""
        shards = [self.data.clients[c] for c in clients]
        for cid, shard in zip(clients, shards, strict=True):
            if len(shard) == 0:
                raise DataError(f"client {cid} has no data")
        sent = _stack_received([received[c] for c in clients], ctx.device)
        start = self._unflatten(sent)
        if isinstance(self.trainer, ChunkedTraining):
            chunk = self.trainer.train_chunk(self.model, shards, start, self.recipe,
                                             clients=clients, ctx=ctx)
        else:
            chunk = self._sgd(shards, start, clients, ctx)
        used_ids = [_used_ids(shard, used) for shard, used in zip(shards, chunk.used, strict=True)]
        # In place: the trained copies are not needed once their updates are taken, and a
        # chunk-sized allocation costs its page faults.
        return TrainedChunk(self._flatten(chunk.params).sub_(sent), chunk.losses, used_ids)

    def _sgd(
        self, shards: Sequence[TensorData], start: StackedParams, clients: Sequence[int],
        ctx: RoundContext,
    ) -> ChunkResult:
        """SGDTraining's training of each client, at once."""
        # The batch order SGDTraining draws: stream "local_training" keyed by round, client.
        schedules = [
            batch_schedule(len(s), self.recipe, ctx.streams.torch("local_training", ctx.round, c))
            for c, s in zip(clients, shards, strict=True)
        ]
        x, y, rows = stack_shards(shards, ctx.device)
        trained = train_stacked(self.gradients, start, schedules, rows, x, y, self.recipe)
        return ChunkResult(trained.params, trained.losses.tolist(),
                           [used_positions(s, len(shard), self.recipe)
                            for s, shard in zip(schedules, shards, strict=True)])

    def _unflatten(self, flat: torch.Tensor) -> StackedParams:
        parts = torch.split(flat, self.sizes, dim=1)
        return {
            n: part.reshape(flat.shape[0], *shape).contiguous()
            for n, shape, part in zip(self.names, self.shapes, parts, strict=True)
        }

    def _flatten(self, params: StackedParams) -> torch.Tensor:
        return torch.cat([params[n].reshape(params[n].shape[0], -1) for n in self.names], dim=1)


def _used_ids(shard: TensorData, used: torch.Tensor) -> torch.Tensor:
    """The global ids at sorted, distinct positions ``used`` of the shard: its own ids when
    they are all of them (whole epochs: read-only ground truth, which a copy per client made
    a thousand-client round microseconds a client slower)."""
    return shard.ids if len(used) == len(shard) else shard.ids[used]


def _stack_received(models: Sequence[torch.Tensor], device: torch.device) -> torch.Tensor:
    """[W, d]: the model each client received, a row each; a view of one row when they all
    received the same tensor (an honest server's w_t) rather than W copies of it."""
    first = models[0]
    if all(m is first for m in models):
        return first.to(device).expand(len(models), -1)
    return torch.stack([m.to(device) for m in models])


def stack_shards(
    shards: Sequence[TensorData], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The chunk's examples and labels concatenated, and each client's rows into them."""
    x = torch.cat([s.x for s in shards]).to(device)
    y = torch.cat([s.y for s in shards]).to(device)
    return x, y, _rows([len(s) for s in shards], device)


def _rows(sizes: Sequence[int], device: torch.device) -> torch.Tensor:
    """[W, n_max]: each client's positions in the concatenated examples; a smaller client's
    row is padded with its first position (a valid index its schedule never asks for)."""
    offsets = torch.cumsum(torch.tensor([0, *sizes[:-1]]), dim=0)
    columns = torch.arange(max(sizes))
    sizes_t = torch.tensor(sizes)
    within = torch.where(columns < sizes_t.unsqueeze(1), columns, 0)
    return (offsets.unsqueeze(1) + within).to(device)

