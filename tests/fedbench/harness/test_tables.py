"""Tests for fedbench.harness.tables on synthetic records."""

from __future__ import annotations

import pytest
from records_factory import CellRecords, make_cell, read_back

from fedbench.fl.views import ViewKind
from fedbench.harness.records import RecordSet
from fedbench.harness.tables import main_table, to_csv, to_latex, to_markdown


def _records() -> RecordSet:
    rows = []
    for seed, (acc_none, acc_dp) in enumerate([(0.95, 0.80), (0.97, 0.84)]):
        none = CellRecords(make_cell("none", seed))
        none.metric("accuracy", acc_none, True)
        # Two membership attacks: the table must show the stronger one per row.
        none.metric("mia_auc", 0.60, False, source="attack:loss_threshold", kind="privacy",
                    attack="loss_threshold")
        none.metric("mia_auc", 0.70, False, source="attack:lira", kind="privacy", attack="lira")
        none.metric("psnr", 30.0 + seed, False, source="attack:dlg", kind="privacy",
                    attack="dlg", view=ViewKind.CLIENT_UPDATE)
        dp = CellRecords(make_cell("dp_fedavg", seed))
        dp.metric("accuracy", acc_dp, True)
        dp.metric("epsilon", 8.0, False, source="defense:dp_fedavg", kind="privacy")
        dp.metric("mia_auc", 0.52, False, source="attack:loss_threshold", kind="privacy",
                  attack="loss_threshold")
        dp.metric("mia_auc", 0.51, False, source="attack:lira", kind="privacy", attack="lira")
        dp.metric("applicable", None, None, source="attack:dlg", kind="info", attack="dlg",
                  status="not_applicable")
        rows += none.rows() + dp.rows(insecure="paillier: 1024-bit key")
    return read_back(rows)


def test_mean_std_over_seeds_and_worst_case_attack() -> None:
    table = main_table(_records())
    text = table.text
    assert text.loc[("exp", "none", ""), "accuracy"] == "0.960 ± 0.014"
    assert text.loc[("exp", "none", ""), "MIA AUC"] == "0.700 ± 0.000 (lira)"
    assert text.loc[("exp", "dp_fedavg", ""), "MIA AUC"] == "0.520 ± 0.000 (loss_threshold)"
    assert text.loc[("exp", "none", ""), "ε"] == "–"  # no DP, no ε
    assert text.loc[("exp", "dp_fedavg", ""), "GI PSNR (dB)"] == "n/a"  # attack could not run
    assert text.loc[("exp", "none", ""), "GI PSNR (dB)"] == "30.5 ± 0.7 (client_update)"


def test_best_per_column_follows_higher_is_better() -> None:
    table = main_table(_records())
    assert table.best["accuracy"] == pytest.approx(0.96)  # higher is better
    assert table.best["MIA AUC"] == pytest.approx(0.52)  # lower attack success is better
    md = to_markdown(table)
    assert "**0.960 ± 0.014**" in md and "**0.520 ± 0.000 (loss_threshold)**" in md
    assert "0.820 ± 0.028" in md and "**0.820" not in md


def test_insecure_rows_are_marked_everywhere() -> None:
    table = main_table(_records())
    assert "dp_fedavg †" in to_markdown(table) and "1024-bit key" in to_markdown(table)
    assert r"dp\_fedavg $^\dagger$" in to_latex(table)
    assert "paillier: 1024-bit key" in to_csv(table)


def test_latex_uses_booktabs_and_bold() -> None:
    latex = to_latex(table := main_table(_records()), caption="Main results")
    assert r"\toprule" in latex and r"\midrule" in latex and r"\bottomrule" in latex
    assert r"\bfseries 0.960 $\pm$ 0.014" in latex
    assert r"\caption{Main results}" in latex and "privacy" in latex and table.columns


def test_csv_has_numeric_means() -> None:
    csv = to_csv(main_table(_records()))
    header = csv.splitlines()[0]
    assert "accuracy (mean)" in header and "MIA AUC (mean)" in header


def test_empty_records() -> None:
    assert to_markdown(main_table(RecordSet())) == "(no complete records)"


def test_rows_follow_suite_order_not_completion_order() -> None:
    table = main_table(_records(), order=[("exp", "dp_fedavg", ""), ("exp", "none", "")])
    assert [key[1] for key in table.text.index] == ["dp_fedavg", "none"]
    assert [key[1] for key in main_table(_records()).text.index] == ["none", "dp_fedavg"]
