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
        if m.experiment == experiment
        and m.defense == defense
        and m.metric == metric
        and (attack is None or m.attack == attack)
    ]
    assert rows, (experiment, defense, metric, attack)
    return rows[0]


@pytest.mark.slow
def test_quick_suite_end_to_end(tmp_path: Path, capsys) -> None:
    # Two workers: the CI machine's two cores, and the process-pool executor end to end.
    assert main(["run", "--results-dir", str(tmp_path), "--no-progress", "--jobs", "2"]) == 0
    out = capsys.readouterr().out
    assert "quick: 55 cells, 0 already complete, 55 run, 0 failed" in out
    header = next(line for line in out.splitlines() if line.startswith("| experiment"))
    assert "accuracy" in header and "MIA AUC" in header and "GI PSNR" in header
    folder = tmp_path / "quick"
    records = read_results_dir(folder)
    assert len(records.cells) == 55 and not records.failed and not records.problems

    # Every defense family ran and every attack family was applied where its view is open.
    psnr = _value(records, "patches-gi", "none", "psnr", "dlg")
    assert psnr.view == "client_update" and psnr.value > 25
    hidden = _value(records, "patches-gi", "secagg", "psnr", "dlg")
    assert hidden.view == "aggregate" and hidden.value < psnr.value - 10
    for channel in ("paillier packed", "ckks"):
        assert _value(records, "patches-gi", channel, "psnr", "dlg").view == "aggregate"
    update = _value(records, "digits-mia", "secagg", "mia_auc", "update_mia")
    assert update.view == "model_sequence"  # SecAgg closes the per-client view
    assert _value(records, "digits-mia", "none", "mia_auc", "update_mia").view == "client_update"
    assert _value(records, "digits-mia", "none", "mia_auc", "lira").value > 0.55
    epsilon = _value(records, "digits-mia", "dp_fedavg ε≈8", "epsilon")
    assert 7.5 < epsilon.value <= 8.05 and "user-level" in epsilon.note
    assert _value(records, "digits-mia", "none", "accuracy").value > 0.9
    paillier = _value(records, "digits-mia", "paillier packed", "upload_bytes_per_param")
    assert 4 < paillier.value < 8
    imprinted = _value(records, "digits-imprint", "secagg", "images_recovered", "imprint")
    assert imprinted.view == "aggregate" and imprinted.value >= 1  # SecAgg hides nothing here

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
    assert "reconstruction-" in report and "roc_" in report  # per-cell figures linked

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
    assert "adversaries:" in out and "  imprint:" in out and "bins: int = 64" in out


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


SMALL_SUITE = """
name: small
experiments:
  - name: digits-mia
    data: digits
    model: {name: mlp, hidden: [32]}
    fl: {num_clients: 6, client_fraction: 0.5, sampling: poisson, weighting: uniform,
         rounds: 3, local_epochs: 1, batch_size: 16}
    mia_candidates: 100
    attacks: [loss_threshold, update_mia]
  - name: patches-gi
    data: {name: image_patches, per_image: 5}
    model: lenet
    fl: {algorithm: fedsgd, num_clients: 4, client_fraction: 1.0, sampling: poisson,
         weighting: uniform, rounds: 1, batch_size: 1, client_lr: 0.1}
    attacks: [{name: idlg, iterations: 30}]
defenses:
  - label: none
  - label: dp_fedavg
    stack: [{name: dp_fedavg, noise: {multiplier: 1.0}}]
  - label: secagg
    stack: [secagg]
"""


def test_a_suite_end_to_end(tmp_path: Path, capsys) -> None:
    suite = tmp_path / "small.yaml"
    suite.write_text(SMALL_SUITE)
    out_dir = tmp_path / "out"
    assert main(["run", str(suite), "--results-dir", str(out_dir), "--no-progress",
                 "--jobs", "2"]) == 0
    assert "small: 6 cells, 0 already complete, 6 run, 0 failed" in capsys.readouterr().out
    folder = out_dir / "small"
    records = read_results_dir(folder)
    assert len(records.cells) == 6 and not records.failed and not records.problems
    assert _value(records, "patches-gi", "none", "psnr", "idlg").view == "client_update"
    assert _value(records, "patches-gi", "secagg", "psnr", "idlg").view == "aggregate"
    assert _value(records, "digits-mia", "secagg", "mia_auc", "update_mia").view == (
        "model_sequence"
    )
    epsilon = _value(records, "digits-mia", "dp_fedavg", "epsilon")
    assert epsilon.level == "user" and epsilon.accountant == "rdp" and epsilon.value > 0
    for name in ("report.md", "tables/main.md", "tables/privacy.md", "figures/attack_success.png"):
        assert (folder / name).exists(), name
    assert main(["run", str(suite), "--results-dir", str(out_dir), "--no-progress"]) == 0
    assert "6 already complete, 0 run" in capsys.readouterr().out
    assert main(["compare", str(folder), str(folder)]) == 0


def test_every_problem_of_every_cell_is_listed_before_any_work(tmp_path: Path, capsys) -> None:
    suite = tmp_path / "bad.yaml"
    suite.write_text("""
name: bad
experiments:
  - name: fixed
    data: digits
    model: logreg
    fl: {num_clients: 4, clients_per_round: 2, rounds: 1}
defenses:
  - label: none
  - label: dp
    stack: [dp_fedavg]
  - label: secagg
    stack: [secagg]
""")
    for extra in (["--dry-run"], []):
        assert main(["run", str(suite), "--results-dir", str(tmp_path / "out"),
                     "--no-progress", *extra]) == 2
        err = capsys.readouterr().err
        assert "2 of 3 cells cannot run" in err
        assert "fixed/dp/seed=0" in err and "fl.sampling is 'fixed'" in err
        assert "fl.weighting is 'weighted'" in err  # both problems of that cell, at once
        assert "fixed/secagg/seed=0" in err and "at least 3 clients" in err
    assert not (tmp_path / "out").exists()  # nothing written, nothing trained
    assert main(["run", "--dry-run", "--no-progress"]) == 0  # the packaged default suite
    assert "55 cells: every pipeline builds" in capsys.readouterr().out


def test_version_quiet_only_show_and_no_progress_bars_off_a_terminal(
    tmp_path: Path, capsys
) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("fedbench ")
    suite = tmp_path / "small.yaml"
    suite.write_text(SMALL_SUITE)
    out_dir = str(tmp_path / "out")
    assert main(["run", str(suite), "--results-dir", out_dir, "--only", "digits-mia/secagg*",
                 "-q"]) == 0
    captured = capsys.readouterr()
    assert "small: 6 cells, 5 already complete" not in captured.out
    assert "1 run, 0 failed" in captured.out and "| experiment" not in captured.out  # -q
    assert "\r" not in captured.err and "it/s" not in captured.err  # no bars into a log
    records = read_results_dir(tmp_path / "out" / "small")
    assert [c.label for c in records.cells.values()] == ["digits-mia/secagg/seed=0"]
    assert main(["run", str(suite), "--results-dir", out_dir, "--only", "nothing*"]) == 2
    assert "--only nothing* matches no cell" in capsys.readouterr().err
    assert main(["show", str(tmp_path / "out" / "small"), "digits-mia/secagg/seed=0"]) == 0
    shown = capsys.readouterr().out
    assert "status: ok" in shown and "per round:" in shown and "update_mia" in shown
    assert main(["show", str(tmp_path / "out" / "small"), "zzz"]) == 2
