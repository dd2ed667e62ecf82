"""Tests for fedbench.cli: the quick suite end to end, list, report, compare, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedbench.cli import main
from fedbench.harness.records import read_results_dir


def _value(records, experiment: str, defense: str, metric: str, attack: str | None = None):
    rows = [
        m
        for m in records.metrics
        if m["experiment"] == experiment
        and m["defense"] == defense
        and m["metric"] == metric
        and (attack is None or m["attack"] == attack)
    ]
    assert rows, (experiment, defense, metric, attack)
    return rows[0]


def test_quick_suite_end_to_end(tmp_path: Path, capsys) -> None:
    # Two workers: the CI machine's two cores, and the process-pool executor end to end.
    assert main(["run", "--results-dir", str(tmp_path), "--no-progress", "--jobs", "2"]) == 0
    out = capsys.readouterr().out
    assert "quick: 22 cells, 0 already complete, 22 run, 0 failed" in out
    header = next(line for line in out.splitlines() if line.startswith("| experiment"))
    assert "accuracy" in header and "MIA AUC" in header and "GI PSNR" in header
    folder = tmp_path / "quick"
    records = read_results_dir(folder)
    assert len(records.cells) == 22 and not records.failed and not records.problems

    # Every defense family ran and every attack family was applied where its view is open.
    psnr = _value(records, "patches-gi", "none", "psnr", "dlg")
    assert psnr["view"] == "client_update" and psnr["value"] > 25
    hidden = _value(records, "patches-gi", "secagg", "psnr", "dlg")
    assert hidden["view"] == "aggregate" and hidden["value"] < psnr["value"] - 10
    for channel in ("paillier packed", "ckks"):
        assert _value(records, "patches-gi", channel, "psnr", "dlg")["view"] == "aggregate"
    update = _value(records, "digits-mia", "secagg", "mia_auc", "update_mia")
    assert update["view"] == "model_sequence"  # SecAgg closes the per-client view
    assert _value(records, "digits-mia", "none", "mia_auc", "update_mia")["view"] == "client_update"
    assert _value(records, "digits-mia", "none", "mia_auc", "lira")["value"] > 0.55
    epsilon = _value(records, "digits-mia", "dp_fedavg ε≈8", "epsilon")
    assert 7.5 < epsilon["value"] <= 8.05 and "user-level" in epsilon["note"]
    assert _value(records, "digits-mia", "none", "accuracy")["value"] > 0.9
    paillier = _value(records, "digits-mia", "paillier packed", "upload_bytes_per_param")
    assert 4 < paillier["value"] < 8

    report = (folder / "report.md").read_text()
    assert f"fedbench run --results-dir {tmp_path} --no-progress --jobs 2" in report
    for name in (
        "tables/main.md",
        "tables/main.tex",
        "tables/main.csv",
        "figures/privacy_utility.png",
        "figures/attack_success.png",
    ):
        assert (folder / name).exists(), name
    assert "reconstruction.png" in report and "roc_" in report  # per-cell figures linked

    # A second run skips every finished cell; report rebuilds the same table from records;
    # compare of a run with itself finds nothing.
    assert main(["run", "--results-dir", str(tmp_path), "--no-progress"]) == 0
    assert "22 already complete, 0 run" in capsys.readouterr().out
    assert main(["report", str(folder)]) == 0
    assert header in capsys.readouterr().out
    assert main(["compare", str(folder), str(folder)]) == 0


def test_list_shows_components_and_parameters(capsys) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "  dirichlet:" in out and "alpha: float = 0.5" in out
    assert "  lenet:" in out and "quick" in out
    assert "mode: Literal['packed', 'per_value'] = 'packed'" in out


def test_errors_exit_2_with_message(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: digitz\n")
    assert main(["run", str(bad), "--results-dir", str(tmp_path)]) == 2
    assert "unknown dataset 'digitz'" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_help_lists_commands(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert all(command in out for command in ("run", "report", "compare", "list", "bench"))
