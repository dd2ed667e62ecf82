"""A thin adapter over Opacus' RDP and PRV accountants for sampled Gaussian mechanisms.

Every DP defense in fedbench accounts the same way: each release (a round, or a DP-SGD step) is
a Poisson-sampled Gaussian mechanism with noise multiplier z and sampling rate q, and the
releases compose. Opacus implements both the accountants and the search for z; this module only
chooses their numerical settings so that the reported ε is tight:

- RDP: Opacus' default orders plus the large ones Google's ``dp-accounting`` also uses
  (128…1024), which matter when ε is large (little noise, no sampling).
- PRV: Opacus' PRV accountant with an ε discretisation error of at most 0.2% of ε (Opacus'
  default is 0.01 absolute, i.e. 1% at ε = 1).

No privacy formula lives here: tests compare the results with Google's ``dp-accounting``.

Example:
    >>> acc = Accountant("rdp")
    >>> acc.step(noise_multiplier=1.0, sample_rate=0.1, steps=100)
    >>> round(acc.epsilon(1e-5), 1)
    7.9
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import Literal

import numpy as np
from opacus.accountants import IAccountant, PRVAccountant, RDPAccountant
from opacus.accountants.utils import get_noise_multiplier
from pydantic import model_validator

from fedbench.errors import ConfigError
from fedbench.params import NonNegativeFloat, OpenUnitInterval, ParamBlock, PositiveFloat

AccountantName = Literal["rdp", "prv"]
ACCOUNTANTS: tuple[str, ...] = ("rdp", "prv")

# Opacus' default orders plus the large orders Google's dp-accounting also uses; the optimum
# moves to large orders when ε is large.
RDP_ORDERS: list[float] = [*RDPAccountant.DEFAULT_ALPHAS, 128, 256, 512, 1024]

_PRV_RELATIVE_ERROR = 0.002
_PRV_MIN_ERROR = 1e-4


def _opacus_accountant(kind: str) -> IAccountant:
    if kind == "rdp":
        return RDPAccountant()
    if kind == "prv":
        return PRVAccountant()
    raise ValueError(f"accountant must be one of {', '.join(ACCOUNTANTS)}, got {kind!r}")


def _epsilon_of(opacus: IAccountant, delta: float) -> float:
    if isinstance(opacus, RDPAccountant):
        with warnings.catch_warnings():
            # "Optimal order is the largest alpha": 1024 is as far as anyone looks.
            warnings.filterwarnings("ignore", message="Optimal order")
            return float(opacus.get_epsilon(delta, alphas=RDP_ORDERS))
    if isinstance(opacus, PRVAccountant):
        # A first pass at Opacus' absolute error, then one at a relative error. (With q = 1
        # Opacus takes log(1 - q) = -inf on purpose; numpy's warning about it is noise.)
        with np.errstate(divide="ignore"):
            eps = float(opacus.get_epsilon(delta, eps_error=0.01))
            wanted = max(_PRV_RELATIVE_ERROR * eps, _PRV_MIN_ERROR)
            if math.isfinite(eps) and wanted < 0.01:
                eps = float(opacus.get_epsilon(delta, eps_error=wanted))
        return eps
    return float(opacus.get_epsilon(delta))


def _check(noise_multiplier: float, sample_rate: float, steps: int) -> None:
    if noise_multiplier < 0 or not math.isfinite(noise_multiplier):
        raise ValueError(f"noise_multiplier must be finite and >= 0, got {noise_multiplier}")
    if not 0 <= sample_rate <= 1:
        raise ValueError(f"sample_rate must be in [0, 1], got {sample_rate}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")


def _check_delta(delta: float) -> None:
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}")


class Accountant:
    """Composition of Poisson-sampled Gaussian mechanisms, backed by an Opacus accountant.

    Args:
        kind: "rdp" (Rényi DP, Mironov et al.) or "prv" (privacy random variables, Gopi et al.;
            tighter).

    Attributes:
        opacus: The Opacus accountant holding the history; it can be handed to an Opacus
            ``PrivacyEngine`` so that DP-SGD steps land in the same history.
    """

    def __init__(self, kind: str = "rdp") -> None:
        self.kind = kind
        self.opacus = _opacus_accountant(kind)
        self._non_private = False

    def step(self, *, noise_multiplier: float, sample_rate: float, steps: int = 1) -> None:
        """Record ``steps`` releases of a Gaussian mechanism with Poisson sampling rate q.

        A noise multiplier of 0 is a non-private release: ε becomes infinite.
        """
        _check(noise_multiplier, sample_rate, steps)
        if steps == 0 or sample_rate == 0:
            return
        if noise_multiplier == 0:
            self._non_private = True
            return
        history = self.opacus.history
        if history and history[-1][:2] == (noise_multiplier, sample_rate):
            history[-1] = (noise_multiplier, sample_rate, history[-1][2] + steps)
        else:
            history.append((noise_multiplier, sample_rate, steps))

    @property
    def steps(self) -> int:
        """Number of releases recorded (private ones)."""
        return int(sum(entry[2] for entry in self.opacus.history))

    def epsilon(self, delta: float) -> float:
        """ε spent so far at ``delta`` (0 before any release, ``inf`` after a noiseless one)."""
        _check_delta(delta)
        if self._non_private:
            return math.inf
        if not self.opacus.history:
            return 0.0
        return _epsilon_of(self.opacus, delta)


def epsilon(
    *,
    noise_multiplier: float,
    sample_rate: float,
    steps: int,
    delta: float,
    accountant: str = "rdp",
) -> float:
    """ε of ``steps`` releases of a Poisson-sampled Gaussian mechanism.

    Example:
        >>> round(epsilon(noise_multiplier=1.0, sample_rate=0.1, steps=100, delta=1e-5), 2)
        7.9
    """
    acc = Accountant(accountant)
    acc.step(noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=steps)
    return acc.epsilon(delta)


@functools.lru_cache(maxsize=256)  # a pure search, asked again by set-up after the checks
def noise_multiplier_for(
    *,
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: str = "rdp",
) -> float:
    """The smallest noise multiplier (to 0.5% in ε) whose ε after ``steps`` is <= the target.

    Uses Opacus' ``get_noise_multiplier`` binary search with this adapter's accountant settings.

    Example:
        >>> z = noise_multiplier_for(target_epsilon=8.0, delta=1e-5, sample_rate=0.1, steps=100)
        >>> 0.95 < z < 1.05
        True
    """
    if not target_epsilon > 0 or not math.isfinite(target_epsilon):
        raise ValueError(f"target_epsilon must be positive and finite, got {target_epsilon}")
    _check(1.0, sample_rate, steps)
    _check_delta(delta)
    if steps == 0 or sample_rate == 0:
        raise ValueError("target_epsilon needs at least one release with a positive sample rate")
    options: dict[str, object] = {}
    if accountant == "rdp":
        options["alphas"] = RDP_ORDERS
    elif accountant == "prv":
        options["eps_error"] = max(_PRV_RELATIVE_ERROR * target_epsilon, _PRV_MIN_ERROR)
    else:
        _opacus_accountant(accountant)  # raises the clear error
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Optimal order")
        return float(
            get_noise_multiplier(
                target_epsilon=target_epsilon,
                target_delta=delta,
                sample_rate=sample_rate,
                steps=steps,
                accountant=accountant,
                epsilon_tolerance=0.005 * target_epsilon,
                **options,
            )
        )


# Before the shared block, every DP defense took these flat (records of schema 1 have them so).
NOISE_MOVED = {
    "noise_multiplier": "noise.multiplier",
    "target_epsilon": "noise.target_epsilon",
    "target_delta": "noise.target_delta",
    "accountant": "noise.accountant",
    "secure_mode": "noise.secure_mode",
}


class GaussianNoise(ParamBlock):
    """The accounted Gaussian noise every DP defense takes, as its ``noise:`` group.

    Either ``multiplier`` fixes z, or ``target_epsilon`` asks for the smallest z whose ε after
    the run (at ``target_delta``) is at most the target, once the run's sampling rate and length
    are known; with neither, z = 1.

    Attributes:
        multiplier: z, the noise standard deviation over the sensitivity (0: no noise, ε = ∞,
            where the defense allows it).
        target_epsilon: ε to reach after all rounds.
        target_delta: δ of the target.
        accountant: "rdp" or "prv" (Opacus).
        secure_mode: Draw the noise from the OS CSPRNG instead of the seeded stream.

    Example:
        >>> GaussianNoise(target_epsilon=8.0).start("dp_fedavg") is None  # chosen at set-up
        True
        >>> GaussianNoise().start("dp_fedavg")
        1.0
    """

    multiplier: NonNegativeFloat | None = None
    target_epsilon: PositiveFloat | None = None
    target_delta: OpenUnitInterval = 1e-5
    accountant: AccountantName = "rdp"
    secure_mode: bool = False

    @model_validator(mode="after")
    def _one_choice(self) -> GaussianNoise:
        if self.multiplier is not None and self.target_epsilon is not None:
            raise ValueError("set multiplier or target_epsilon, not both")
        return self

    def start(self, name: str, *, zero_noise: bool = False) -> float | None:
        """The noise multiplier to start from: the one given, 1.0 when neither is set, None
        when ``target_epsilon`` will choose it once the run is known.

        Raises:
            ConfigError: z = 0 for a defense that needs noise (``zero_noise`` False).
        """
        if self.multiplier == 0 and not zero_noise:
            raise ConfigError(f"{name}: noise.multiplier must be positive, got 0")
        if self.multiplier is None and self.target_epsilon is None:
            return 1.0
        return self.multiplier

    def for_run(self, *, sample_rate: float, steps: int, given: float | None) -> float:
        """z for a run of ``steps`` releases at ``sample_rate``: ``given`` (the start value),
        or the one that meets ``target_epsilon``."""
        if self.target_epsilon is None:
            assert given is not None
            return given
        return noise_multiplier_for(
            target_epsilon=self.target_epsilon,
            delta=self.target_delta,
            sample_rate=sample_rate,
            steps=steps,
            accountant=self.accountant,
        )
