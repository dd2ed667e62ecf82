"""Typing probe: mypy (in CI, ``mypy`` with the project's config) must see real types in the
core and in both plugin trees. Every line below fails to type-check if a type degrades to Any
(an import mypy cannot follow, a registry typed ``Registry[Any]``): ``assert_type`` then sees
Any, and each ``type: ignore`` becomes unused, which ``warn_unused_ignores`` reports.

This file is checked, never run (pytest collects ``test_*.py`` only).
"""

from __future__ import annotations

from typing import assert_type

from fedbench.attack import Attack, AttackTarget, GroundTruth
from fedbench.attacks.gradient_inversion.dlg import DLG
from fedbench.defense import Defense, PrivacyReport
from fedbench.defenses.dp.accounting import GaussianNoise
from fedbench.defenses.secagg.channel import SecAgg
from fedbench.harness.schema import MetricRecord
from fedbench.registry import ATTACKS, DEFENSES


def registries_are_typed() -> None:
    assert_type(DEFENSES.create("secagg"), Defense)
    assert_type(ATTACKS.create("dlg"), Attack)


def plugin_classes_are_seen() -> None:
    assert_type(SecAgg().channel.protocol.dropout, float)
    assert_type(DLG().target, AttackTarget)
    assert_type(GaussianNoise().target_delta, float)


def wrong_fields_are_errors() -> None:
    GroundTruth(bogus=1)  # type: ignore[call-arg]
    PrivacyReport(epsilon=1.0)  # type: ignore[call-arg]
    SecAgg(dropout="a lot")  # type: ignore[arg-type]
    MetricRecord(metric="x")  # type: ignore[call-arg]
