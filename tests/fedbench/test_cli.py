"""Tests for fedbench.cli: the quick suite end to end, list, report, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedbench.cli import main


def test_quick_suite_end_to_end(tmp_path: Path, capsys) -> None:
    assert main(["run", "--results-dir", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "quick: 1 cells, 0 already complete, 1 run, 0 failed" in out
    header = next(line for line in out.splitlines() if line.startswith("| experiment"))
    assert "accuracy" in header and "MIA AUC" in header
    row = next(line for line in out.splitlines() if line.startswith("| digits-mlp"))
    accuracy = float(row.split("|")[3].strip(" *"))
    assert accuracy > 0.9
    folder = tmp_path / "quick"
    report = (folder / "report.md").read_text()
    assert f"fedbench run --results-dir {tmp_path} --no-progress" in report
    assert (folder / "tables" / "main.tex").exists() and (folder / "tables" / "main.csv").exists()
    # A second run skips the finished cell; report rebuilds the same table from records only.
    assert main(["run", "--results-dir", str(tmp_path), "--no-progress"]) == 0
    assert "1 already complete, 0 run" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "quick")]) == 0
    assert row in capsys.readouterr().out


def test_list_shows_components_and_parameters(capsys) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "  dirichlet:" in out and "alpha: float = 0.5" in out
    assert "  lenet:" in out and "quick" in out


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
    assert "run" in capsys.readouterr().out
