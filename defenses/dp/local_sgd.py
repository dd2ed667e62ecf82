"""Example-level DP for each client's local training: DP-SGD through Opacus.

Every round a sampled client trains a fresh copy of the global model made private by Opacus
(per-example gradient clipping, Gaussian noise, Poisson sampling of each batch). Opacus'
``make_private`` attaches hooks to the module it wraps, so it is never called twice on the same
module; but the client's ``PrivacyEngine`` and its accountant persist across the rounds in which
the client takes part, so the ε it reports covers all of them, not one round.

The guarantee is per client, for the examples it holds (example-level); the defense reports the
worst client's ε and, as metrics, the distribution over the clients that took part.

Under the vectorized engine (``fl.engine``) a chunk of clients trains at once instead
(``train_chunk``, :mod:`.stacked_sgd`): the same Poisson batches, clipping, noise and accountant
steps from the same streams, so the same numbers as this path (to float rounding); secure
mode stays here.

Models whose layers Opacus cannot privatise (BatchNorm mixes the examples of a batch, so
per-example gradients do not exist) are refused in ``setup`` with Opacus' own reasons.

Example:
    >>> defense = DPSGD(noise=GaussianNoise(multiplier=1.0), max_grad_norm=1.0)
    >>> type(defense.local_training).__name__
    'OpacusTraining'

    In a config: ``defenses: [{name: dp_sgd, noise: {multiplier: 1.1}, max_grad_norm: 1.0}]``.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import math
import statistics
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from opacus import PrivacyEngine
from opacus.validators import ModuleValidator
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from fedbench.data.tensors import TensorData
from fedbench.defense import SECURE_MODE_NOISE, Defense, PrivacyReport
from fedbench.defenses.dp.accounting import NOISE_MOVED, Accountant, GaussianNoise
from fedbench.defenses.dp.stacked_sgd import DPNoise, dp_sgd_stacked, poisson_round
from fedbench.errors import DataError
from fedbench.fl.context import RoundContext, RunInfo
from fedbench.fl.engine import ChunkResult, stack_shards
from fedbench.fl.params import get_flat
from fedbench.fl.recipe import TrainingRecipe
from fedbench.fl.stacked import StackedParams, per_example_gradients
from fedbench.fl.stages import LocalResult, LocalTraining
from fedbench.metrics.base import Metric
from fedbench.params import PositiveFloat
from fedbench.registry import register_defense


class _ExpectedEmptyBatch(logging.Filter):
    """Drop Opacus' warning about an empty first Poisson batch: with a client's few examples it
    is expected, and ``train`` handles it (the step is pure noise, as DP-SGD requires)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "First batch is empty" not in record.getMessage()


logging.getLogger("opacus.data_loader").addFilter(_ExpectedEmptyBatch())

# Opacus' reminders that are either answered here (secure mode is reported) or expected (a fresh
# module and loader every round).
_OPACUS_NOISE = (
    r"Secure RNG turned off|Full backward hook is firing|PrivacyEngine detected new dataset"
)


def opacus_problems(model: nn.Module) -> list[str]:
    """Opacus' reasons why ``model`` cannot be trained with DP-SGD (empty when it can)."""
    return [str(err).split(". ")[0] for err in ModuleValidator.validate(model, strict=False)]


def steps_per_round(num_examples: int, recipe: TrainingRecipe) -> tuple[float, int]:
    """(Poisson sampling rate, number of DP-SGD steps) of one round for a client of this size.

    A batch of expected size B is drawn by including each example with probability
    q = 1/⌈n/B⌉ (Opacus' rule); an epoch is ⌈n/B⌉ such steps.
    """
    batch = min(recipe.batch_size or num_examples, num_examples)
    per_epoch = math.ceil(num_examples / batch)
    if recipe.algorithm == "fedsgd":
        steps = 1
    elif recipe.local_steps is not None:
        steps = recipe.local_steps
    else:
        steps = recipe.local_epochs * per_epoch
    return 1 / per_epoch, steps


@dataclass
class _ClientPrivacy:
    """One client's persistent state: its PrivacyEngine (with our accountant) and dataset."""

    engine: PrivacyEngine
    accountant: Accountant
    dataset: TensorDataset
    rounds: int = 0


def _cycle(loader: DataLoader, steps: int) -> Iterator[list[torch.Tensor]]:
    done = 0
    while done < steps:
        for batch in loader:
            if done == steps:
                return
            done += 1
            yield batch


class OpacusTraining(LocalTraining):
    """The local_training stage: DP-SGD on a fresh private copy of the model each round."""

    def __init__(self, owner: DPSGD) -> None:
        self.owner = owner

    def _client(self, client_id: int, data: TensorData) -> _ClientPrivacy:
        state = self.owner.clients.get(client_id)
        if state is None:
            accountant = Accountant(self.owner.accountant_name)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=_OPACUS_NOISE)
                engine = PrivacyEngine(
                    accountant=self.owner.accountant_name, secure_mode=self.owner.secure_mode
                )
            engine.accountant = accountant.opacus  # DP-SGD steps land in our accountant
            # The positions let the round report which examples it used (ground truth).
            dataset = TensorDataset(data.x, data.y, torch.arange(len(data)))
            state = _ClientPrivacy(engine, accountant, dataset)
            self.owner.clients[client_id] = state
        return state

    def train(
        self,
        model: nn.Module,
        data: TensorData,
        recipe: TrainingRecipe,
        *,
        client_id: int,
        ctx: RoundContext,
    ) -> LocalResult:
        if len(data) == 0:
            raise DataError(f"client {client_id} has no data")
        owner = self.owner
        assert owner.noise_multiplier is not None
        state = self._client(client_id, data)
        device = next(model.parameters()).device
        private = copy.deepcopy(model)  # make_private hooks a module once, so a fresh copy
        private.train()
        optimizer = torch.optim.SGD(private.parameters(), lr=recipe.lr, momentum=recipe.momentum)
        batch = min(recipe.batch_size or len(data), len(data))
        sampling = None if owner.secure_mode else ctx.streams.torch("local_training", ctx.round,
                                                                      client_id)
        noise_generator = None if owner.secure_mode else ctx.generator("dp_sgd.noise", client_id)
        loader = DataLoader(state.dataset, batch_size=batch, generator=sampling)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_OPACUS_NOISE)
            module, dp_optimizer, dp_loader = state.engine.make_private(
                module=private,
                optimizer=optimizer,
                data_loader=loader,
                noise_multiplier=owner.noise_multiplier,
                max_grad_norm=owner.max_grad_norm,
                poisson_sampling=True,
                noise_generator=noise_generator,
            )
            _, steps = steps_per_round(len(data), recipe)
            losses: list[float] = []
            used: list[torch.Tensor] = []
            for x, y, positions in _cycle(dp_loader, steps):
                dp_optimizer.zero_grad(set_to_none=True)
                out = module(x.to(device))
                if len(y) == 0:  # an empty Poisson batch still takes a (pure noise) step
                    loss = out.sum() * 0.0
                else:
                    loss = F.cross_entropy(out, y.to(device))
                    losses.append(float(loss.detach()))
                    used.append(positions)
                loss.backward()
                dp_optimizer.step()
        state.rounds += 1
        positions_used = torch.unique(torch.cat(used)) if used else torch.zeros(0, dtype=torch.long)
        return LocalResult(
            params=get_flat(private),
            num_examples=len(data),
            used_ids=data.ids[positions_used],
            loss=statistics.fmean(losses) if losses else math.nan,
        )

    def chunk_problem(self, model: nn.Module, example: TensorData) -> str | None:
        """Why the vectorized engine cannot run this DP-SGD on stacked copies of ``model``."""
        if self.owner.secure_mode:
            return ("noise.secure_mode: Opacus draws the noise and the Poisson batches from a "
                    "CSPRNG, one client at a time")
        device = next(model.parameters()).device
        params = {n: p.detach().unsqueeze(0) for n, p in model.named_parameters()
                  if p.requires_grad}
        try:
            per_example_gradients(model)(params, example.x[:1].unsqueeze(0).to(device),
                                         example.y[:1].unsqueeze(0).to(device))
        except Exception:  # any torch.func limitation of this architecture: use the loop
            return "torch.func cannot compute per-example gradients of the model"
        return None

    def vectors_per_client(self, batch: int) -> int:
        """Per-example gradients of a Poisson batch (its size varies: room for twice B)."""
        return 2 * batch

    def train_chunk(
        self, model: nn.Module, shards: Sequence[TensorData], start: StackedParams,
        recipe: TrainingRecipe, *, clients: Sequence[int], ctx: RoundContext,
    ) -> ChunkResult:
        """The clients' DP-SGD at once (:mod:`.stacked_sgd`): the numbers ``train`` gives from
        the same streams, and the same accountant steps."""
        owner = self.owner
        assert owner.noise_multiplier is not None
        states = [self._client(c, d) for c, d in zip(clients, shards, strict=True)]
        rounds = []
        for cid, data in zip(clients, shards, strict=True):
            _, steps = steps_per_round(len(data), recipe)
            batch = min(recipe.batch_size or len(data), len(data))
            sampling = ctx.streams.torch("local_training", ctx.round, cid)
            rounds.append(poisson_round(len(data), batch, steps, sampling))
        noise = DPNoise(owner.noise_multiplier, owner.max_grad_norm,
                        [ctx.generator("dp_sgd.noise", c) for c in clients])
        x, y, rows = stack_shards(shards, ctx.device)
        params, losses = dp_sgd_stacked(per_example_gradients(model), start, rounds, rows, x, y,
                                        recipe, noise)
        for state, drawn in zip(states, rounds, strict=True):
            for _ in drawn.batches:  # what Opacus' optimizer hook records per step
                state.accountant.opacus.step(noise_multiplier=owner.noise_multiplier,
                                             sample_rate=drawn.sample_rate)
            state.rounds += 1
        return ChunkResult(
            params,
            [statistics.fmean(step_losses) if step_losses else math.nan for step_losses in losses],
            [torch.unique(torch.cat(r.batches)) for r in rounds],
        )


@register_defense("dp_sgd", moved=NOISE_MOVED)
class DPSGD(Defense):
    """Local DP-SGD (Opacus) with one persistent accountant per client; worst client's ε.

    Args:
        noise: σ/C of the Gaussian noise on each summed batch gradient, or a target ε for a
            client taking part in every round (for the worst client size); the accountant and
            Opacus' secure mode (CSPRNG noise and sampling; needs ``torchcsprng``). See
            :class:`~.accounting.GaussianNoise`.
        max_grad_norm: C, the per-example gradient clip norm.

    Example:
        >>> DPSGD(noise=GaussianNoise(target_epsilon=4.0)).noise_multiplier is None
        True
    """

    def __init__(
        self, *, noise: GaussianNoise = GaussianNoise(), max_grad_norm: PositiveFloat = 1.0
    ) -> None:
        self.noise = noise
        self.noise_multiplier = noise.start("dp_sgd")
        self.max_grad_norm = max_grad_norm
        self.accountant_name = noise.accountant
        self.secure_mode = noise.secure_mode
        self.irreproducible = SECURE_MODE_NOISE if noise.secure_mode else None
        self.clients: dict[int, _ClientPrivacy] = {}
        self.local_training = OpacusTraining(self)
        self._delta = 1e-5

    def check(self, run: RunInfo) -> list[str]:
        problems = []
        if self.secure_mode and importlib.util.find_spec("torchcsprng") is None:
            problems.append(
                "dp_sgd: noise.secure_mode needs the torchcsprng package (Opacus draws its "
                "CSPRNG noise and sampling from it), which is not installed"
            )
        unfit = opacus_problems(run.model_factory())
        if unfit:
            problems.append(
                "dp_sgd: Opacus cannot train this model with per-example gradients: "
                + "; ".join(unfit)
                + ". Use a model without BatchNorm (e.g. model: {name: resnet18, norm: group})."
            )
        return problems + super().check(run)

    def prepare(self, run: RunInfo) -> None:
        if self.noise.target_epsilon is not None:
            worst = {steps_per_round(n, run.recipe) for n in set(run.client_sizes) if n > 0}
            self.noise_multiplier = max(
                self.noise.for_run(sample_rate=q, steps=steps * run.rounds, given=None)
                for q, steps in worst
            )
        self.clients = {}

    def client_epsilons(self, delta: float) -> dict[int, float]:
        """ε of every client that has taken part so far (clients with equal histories share)."""
        cache: dict[tuple[tuple[float, float, int], ...], float] = {}
        out = {}
        for cid, state in self.clients.items():
            key = tuple(state.accountant.opacus.history)
            if key not in cache:
                cache[key] = state.accountant.epsilon(delta)
            out[cid] = cache[key]
        return out

    def privacy_spent(self, delta: float) -> PrivacyReport:
        self._delta = delta
        epsilons = self.client_epsilons(delta)
        worst = max(epsilons.values(), default=0.0)
        who = max(epsilons, key=lambda c: epsilons[c]) if epsilons else None
        return PrivacyReport(
            epsilon=worst,
            delta=delta,
            accountant=self.accountant_name,
            secure_mode=self.secure_mode,
            level="example",
            note=f"worst of {len(epsilons)} clients (client {who}); "
                 f"z={self.noise_multiplier}, C={self.max_grad_norm}",
        )

    def metrics(self) -> list[Metric]:
        values = sorted(self.client_epsilons(self._delta).values())
        out = [Metric("noise_multiplier", float(self.noise_multiplier or 0.0), None,
                      kind="privacy"),
               Metric("clients_accounted", len(values), None, kind="info")]
        if values:
            note = f"over clients that took part, δ={self._delta:g}"
            out += [
                Metric("epsilon_min", values[0], False, kind="privacy", note=note),
                Metric("epsilon_median", statistics.median(values), False, kind="privacy",
                       note=note),
                Metric("epsilon_mean", statistics.fmean(values), False, kind="privacy",
                       note=note),
            ]
        return out
