"""Tests for fedbench.harness.tables on synthetic records."""

from __future__ import annotations

from records_factory import CellRecords, make_cell, read_back

from fedbench.defense import PrivacyReport
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
        dp.metric("epsilon", 8.0, False, source="defense:dp_fedavg", kind="privacy",
                  privacy=PrivacyReport(epsilon=8.0, delta=1e-5, accountant="rdp",
                                        secure_mode=False))
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
    assert text.loc[("exp", "none", ""), "ε (user)"] == "–"  # no DP, no ε
    assert text.loc[("exp", "dp_fedavg", ""), "GI PSNR (dB)"] == "n/a"  # attack could not run
    assert text.loc[("exp", "none", ""), "GI PSNR (dB)"] == "30.5 ± 0.7 (dlg @ client_update)"


def test_bold_only_beyond_noise() -> None:
    table = main_table(_records())
    # Accuracy 0.96 ± 0.014 vs 0.82 ± 0.028 over two seeds: t intervals (±12.7 std/√2) overlap;
    # the AUCs do not move between seeds at all (0.52 vs 0.70).
    assert table.bold == {(("exp", "dp_fedavg", ""), "MIA AUC")}
    md = to_markdown(table)
    assert "**0.960" not in md and "0.960 ± 0.014" in md
    assert "**0.520 ± 0.000 (loss_threshold)**" in md


def _one_seed(rows: dict[str, tuple[float, tuple[float, float] | None]], metric: str = "accuracy",
              source: str = "fl") -> RecordSet:
    out = []
    for defense, (value, interval) in rows.items():
        cell = CellRecords(make_cell(defense))
        attack = source.split(":", 1)[1] if ":" in source else None
        cell.metric(metric, value, metric == "accuracy", source=source, attack=attack,
                    kind="utility" if source == "fl" else "privacy", interval=interval)
        out += cell.rows()
    return read_back(out)


def test_a_unique_best_with_a_disjoint_interval_is_bold() -> None:
    table = main_table(_one_seed({"none": (0.95, (0.93, 0.97)), "dp_fedavg": (0.80, (0.77, 0.83))}))
    assert table.bold == {(("exp", "none", ""), "accuracy")}
    assert table.text.loc[("exp", "none", ""), "accuracy"] == "0.950 [0.930, 0.970]"
    assert "**0.950 [0.930, 0.970]**" in to_markdown(table)


def test_overlapping_or_missing_intervals_are_not_bold() -> None:
    overlapping = _one_seed({"none": (0.95, (0.90, 0.97)), "dp_fedavg": (0.89, (0.85, 0.91))})
    assert not main_table(overlapping).bold
    unknown = _one_seed({"none": (0.95, None), "dp_fedavg": (0.50, None)})
    assert not main_table(unknown).bold


def test_auc_whose_interval_holds_half_is_chance_and_nothing_is_bold() -> None:
    records = _one_seed({"none": (0.80, (0.75, 0.85)), "dp_fedavg": (0.52, (0.47, 0.57)),
                         "secagg": (0.65, (0.60, 0.70))}, "mia_auc", "attack:lira")
    table = main_table(records)
    assert table.text.loc[("exp", "dp_fedavg", ""), "MIA AUC"].startswith("chance (0.520")
    assert not table.bold  # the best defense made the attack fail: no number wins


def test_psnr_near_a_random_image_is_a_failed_reconstruction() -> None:
    out = []
    for defense, value in (("none", 40.0), ("dp_fedavg", 9.5)):
        cell = CellRecords(make_cell(defense))
        cell.metric("psnr", value, False, source="attack:dlg", kind="privacy", attack="dlg")
        cell.metric("psnr_failure_baseline", 7.0, None, source="attack:dlg", kind="info",
                    attack="dlg")
        out += cell.rows()
    table = main_table(read_back(out))
    assert table.text.loc[("exp", "dp_fedavg", ""), "GI PSNR (dB)"] == "failed (9.5) (dlg)"
    assert table.text.loc[("exp", "none", ""), "GI PSNR (dB)"] == "40.0 (dlg)"
    assert not table.bold


def test_user_and_example_epsilon_are_separate_columns() -> None:
    out = []
    for defense, level in (("dp_fedavg", "user"), ("dp_sgd", "example")):
        cell = CellRecords(make_cell(defense))
        cell.metric("epsilon", 1.0 if level == "example" else 8.0, False,
                    source=f"defense:{defense}", kind="privacy",
                    privacy=PrivacyReport(epsilon=1.0, delta=1e-5, level=level,
                                          accountant="rdp", secure_mode=False))
        out += cell.rows()
    text = main_table(read_back(out)).text
    assert text.loc[("exp", "dp_fedavg", ""), "ε (user)"] == "8.00"
    assert text.loc[("exp", "dp_fedavg", ""), "ε (example)"] == "–"
    assert text.loc[("exp", "dp_sgd", ""), "ε (example)"] == "1.00"


def test_a_meaningless_metric_shows_na() -> None:
    cell = CellRecords(make_cell("none"))
    cell.metric("accuracy", None, True, note="n/a: one FedSGD round trains nothing")
    other = CellRecords(make_cell("dp_fedavg"))
    other.metric("accuracy", 0.5, True)
    text = main_table(read_back(cell.rows() + other.rows())).text
    assert text.loc[("exp", "none", ""), "accuracy"] == "n/a"


def test_insecure_rows_are_marked_everywhere() -> None:
    table = main_table(_records())
    assert "dp_fedavg †" in to_markdown(table) and "1024-bit key" in to_markdown(table)
    assert r"dp\_fedavg $^\dagger$" in to_latex(table)
    assert "paillier: 1024-bit key" in to_csv(table)


def test_latex_uses_booktabs_and_bold() -> None:
    latex = to_latex(table := main_table(_records()), caption="Main results")
    assert r"\toprule" in latex and r"\midrule" in latex and r"\bottomrule" in latex
    assert r"\bfseries 0.520 $\pm$ 0.000" in latex and r"\bfseries 0.960" not in latex
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


def _adversary_records(adversary: str | None) -> RecordSet:
    rows = []
    for defense, value in (("none", 0.9), ("secagg", 0.8)):
        cell = CellRecords(make_cell(defense, experiment="e"))
        if adversary is not None:
            cell.writer.adversary = adversary
        rows += cell.metric("accuracy", value, True).rows()
    return read_back(rows)


def test_the_adversary_column_appears_once_an_active_adversary_ran() -> None:
    honest = to_markdown(main_table(_adversary_records(None)))
    assert "adversary" not in honest.splitlines()[0]
    active = to_markdown(main_table(_adversary_records("imprint(bins=64)")))
    header, *_ = active.splitlines()
    assert "| defense | adversary |" in header and "imprint(bins=64)" in active
