"""The value type every metric is reported as."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from fedbench.metrics.intervals import Interval

MetricKind = Literal["utility", "privacy", "cost", "info"]


@dataclass(frozen=True)
class Metric:
    """One measured number.

    Attributes:
        name: Metric name, e.g. "accuracy", "auc", "psnr", "epsilon".
        value: The number, or None when it cannot be measured (``note`` says why).
        higher_is_better: Whether a higher value is better **for the defended FL system**. So
            accuracy is True while an attack's success (AUC, PSNR) and ε are False. Tables bold
            the best value and ``fedbench compare`` flags regressions by this flag; None for
            descriptive numbers that are neither (e.g. a parameter count).
        kind: Column group in tables: utility, privacy, cost or info.
        unit: Unit for display ("dB", "bytes", "×"...).
        note: Why the value is missing, or a caveat (e.g. "insecure parameters").
        timing: Whether the value comes from a wall-clock measurement (so it varies between
            otherwise identical runs and is compared only as a ratio within one run).
        interval: Its 95% interval, for a value measured on finitely many examples.
    """

    name: str
    value: float | None
    higher_is_better: bool | None
    kind: MetricKind = "info"
    unit: str = ""
    note: str = ""
    timing: bool = False
    interval: Interval | None = None

    def __post_init__(self) -> None:
        if self.value is not None and not isinstance(self.value, (int, float)):
            raise TypeError(f"metric {self.name!r}: value must be a number, got {self.value!r}")
        if self.value is not None and math.isnan(float(self.value)):
            raise ValueError(f"metric {self.name!r}: NaN is not a value; use None with a note")
