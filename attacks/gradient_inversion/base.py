"""The common frame of gradient-inversion attacks: view in, reconstruction out, scored apart.

``run`` rebuilds the matching target from the view and the public recipe
(:mod:`.views`), puts the model at w_t on the attack's device (:mod:`.objective`) and hands both
to the subclass's ``reconstruct``. It never sees private data; ``score`` and ``figures`` alone
receive the ground truth.

Example:
    >>> from fedbench.registry import ATTACKS
    >>> attack = ATTACKS.create("dlg", {"iterations": 5})
    >>> [v.value for v in attack.views]
    ['client_update', 'aggregate']
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import ClassVar, TypeVar

import numpy as np
import torch
from tqdm.auto import tqdm

from fedbench.attack import Attack, AttackerKnowledge, AttackResult, AttackTarget, GroundTruth
from fedbench.attacks.gradient_inversion.figures import reconstruction_grid
from fedbench.attacks.gradient_inversion.objective import FunctionalModel
from fedbench.attacks.gradient_inversion.scoring import per_image_psnr, score_reconstruction
from fedbench.attacks.gradient_inversion.views import InversionTarget, inversion_target
from fedbench.fl.views import View, ViewKind
from fedbench.metrics.base import Metric

T = TypeVar("T")


def check_positive(name: str, value: float) -> None:
    """Raise a ValueError naming ``name`` unless ``value`` > 0."""
    if not value > 0:
        raise ValueError(f"{name} must be positive, got {value}")


def progress(iterable: Iterable[T], desc: str) -> Iterator[T]:
    """A progress bar over iterations (shown on a terminal only)."""
    yield from tqdm(iterable, desc=desc, disable=None, leave=False)


def pixel_box(knowledge: AttackerKnowledge) -> tuple[float, float] | None:
    """The valid input range: [0, 1] for images, unbounded for tabular data."""
    return (0.0, 1.0) if knowledge.data_kind == "image" else None


def input_statistics(knowledge: AttackerKnowledge) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation of the public population data, per channel (images) or per
    feature (tabular), shaped to broadcast over one example; (0, 1) without population data.
    """
    shape = knowledge.input_shape
    population = knowledge.population
    if population is None or len(population) < 2:
        return torch.zeros(()), torch.ones(())
    x = population.x.float()
    dims: tuple[int, ...] = (0,)
    view: tuple[int, ...] = shape
    if knowledge.data_kind == "image" and len(shape) == 3:
        dims, view = (0, 2, 3), (shape[0], 1, 1)
    return x.mean(dim=dims).view(view), x.std(dim=dims).clamp_min(1e-3).view(view)


def random_inputs(
    shape: tuple[int, ...], knowledge: AttackerKnowledge, stream: int = 0
) -> torch.Tensor:
    """Gaussian dummy inputs with the population's mean and spread, from the attack's seed.

    DLG and Inverting Gradients start from N(0, 1) in the space of *normalised* images (data
    standardised with the dataset's mean and std); fedbench's models see unnormalised values,
    so the same start is N(mean, std²) per channel, with statistics of the public population
    split. Drawn on CPU (reproducible across devices), then moved to the attack's device.
    """
    mean, std = input_statistics(knowledge)  # broadcast over leading (restart, batch) dims
    return (mean + std * _draw(shape, knowledge.seed + stream)).to(knowledge.device)


def standard_normal(
    shape: tuple[int, ...], knowledge: AttackerKnowledge, stream: int = 0
) -> torch.Tensor:
    """N(0, 1) draws from the attack's seed (drawn on CPU, then moved to its device)."""
    return _draw(shape, knowledge.seed + stream).to(knowledge.device)


def _draw(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


class InversionAttack(Attack):
    """Base of the gradient-inversion attacks (one client's update first, else the aggregate).

    Args:
        target_round: The attacked round (negative counts from the end).
        target_client: The attacked client for the ``client_update`` view (None: the first
            contributor).
    """

    views = (ViewKind.CLIENT_UPDATE, ViewKind.AGGREGATE)
    name: ClassVar[str] = "gradient_inversion"

    def __init__(self, *, target_round: int = 0, target_client: int | None = None) -> None:
        self.target = AttackTarget(round=target_round, client=target_client)

    def run(self, view: View, knowledge: AttackerKnowledge) -> AttackResult:
        target = inversion_target(view, knowledge.recipe)
        model = FunctionalModel(knowledge.model_factory(), target.params, knowledge.device)
        result = self.reconstruct(target, model, knowledge)
        if result.reconstruction is None:
            raise RuntimeError(f"{self.name} produced no reconstruction")
        result.reconstruction = result.reconstruction.detach().cpu()
        if result.labels is not None:
            result.labels = result.labels.detach().cpu()
        result.extras.update(
            data_kind=knowledge.data_kind,
            view=view.kind.value,
            num_images=target.num_images,
            num_clients=target.num_clients,
            local_steps=target.steps,
        )
        return result

    @abstractmethod
    def reconstruct(
        self, target: InversionTarget, model: FunctionalModel, knowledge: AttackerKnowledge
    ) -> AttackResult:
        """Reconstruct the ``target.num_images`` inputs behind ``target``."""

    def score(self, result: AttackResult, truth: GroundTruth) -> list[Metric]:
        if result.reconstruction is None:
            raise ValueError(f"{self.name}: the result has no reconstruction to score")
        if truth.examples is None:
            raise ValueError(f"{self.name}: scoring needs the private examples")
        metrics = score_reconstruction(
            result.reconstruction,
            result.labels,
            truth.examples.x,
            truth.examples.y,
            data_kind=str(result.extras.get("data_kind", "image")),
        )
        # Caveats of the run (e.g. a FedAvg update matched as one gradient) go with the PSNR.
        caveat = "; ".join(
            str(result.extras[k]) for k in ("note", "labels") if result.extras.get(k)
        )
        metrics = [
            replace(m, note="; ".join(p for p in (m.note, caveat) if p)) if m.name == "psnr" else m
            for m in metrics
        ]
        if "final_loss" in result.extras:
            loss = float(result.extras["final_loss"])
            metrics.append(Metric(
                "final_matching_loss", None if math.isnan(loss) else loss, None, kind="info",
                note="distance to the target at the end" if loss == loss else "diverged (NaN)",
            ))
        return metrics

    def figures(
        self, result: AttackResult, truth: GroundTruth, folder: Path, *, caption: str = ""
    ) -> list[Path]:
        if (
            result.reconstruction is None
            or truth.examples is None
            or result.extras.get("data_kind") != "image"
        ):
            return []
        ordered, values = per_image_psnr(
            result.reconstruction, truth.examples.x, data_kind="image"
        )
        headline = (f"{self.name} on the {result.extras.get('view', '?')} view: median PSNR "
                    f"{float(np.nanmedian(values)):.1f} dB over {len(values)} images")
        title = "\n".join(p for p in (caption, headline) if p)
        path = folder / f"{self.name}_reconstruction.png"
        return [reconstruction_grid(truth.examples.x, ordered, values, path, title=title)]

    @staticmethod
    def proxy_note(target: InversionTarget) -> str:
        """Caveat for one-gradient attacks on a multi-step FedAvg update (empty for FedSGD)."""
        if target.exact_gradient:
            return ""
        return (
            f"FedAvg update of {target.steps} local steps matched as one gradient "
            "(fedavg_inversion simulates the steps)"
        )
