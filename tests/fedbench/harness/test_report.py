"""Tests for fedbench.harness.report and figures: files exist, link each other, say how made."""

from __future__ import annotations

from pathlib import Path

import yaml
from PIL import Image

from fedbench.harness.records import append_records, read_results_dir
from fedbench.harness.report import COMMAND_FILE, write_report


def _rows(
    defense: str, clients: int, seed: int, acc: float, auc: float, psnr: float, eps: float | None
) -> list[dict]:
    cell = f"{defense}-{clients}-{seed}"
    base = {
        "cell": cell,
        "run": f"r{cell}",
        "experiment": "e",
        "defense": defense,
        "seed": seed,
        "grid": {"fl.clients_per_round": clients},
        "status": "ok",
        "timing": False,
        "unit": "",
        "note": "",
        "insecure": None,
    }
    rows = [
        {
            **base,
            "type": "metric",
            "source": "fl",
            "attack": None,
            "metric": "accuracy",
            "value": acc,
            "higher_is_better": True,
            "kind": "utility",
        },
        {
            **base,
            "type": "metric",
            "source": "attack:loss_threshold",
            "attack": "loss_threshold",
            "metric": "mia_auc",
            "value": auc,
            "higher_is_better": False,
            "kind": "privacy",
        },
        {
            **base,
            "type": "metric",
            "source": "attack:dlg",
            "attack": "dlg",
            "view": "aggregate",
            "metric": "psnr",
            "value": psnr,
            "higher_is_better": False,
            "kind": "privacy",
        },
    ]
    if eps is not None:
        rows.append(
            {
                **base,
                "type": "metric",
                "source": "defense:dp_fedavg",
                "attack": None,
                "metric": "epsilon",
                "value": eps,
                "higher_is_better": False,
                "kind": "privacy",
            }
        )
    rows.append(
        {
            **base,
            "type": "cell",
            "label": f"e/{defense}/seed={seed}",
            "git_commit": "abc123",
            "versions": {"torch": "2.14.1"},
        }
    )
    return rows


def test_report_writes_tables_figures_and_provenance(tmp_path: Path) -> None:
    folder = tmp_path / "sweep"
    for seed in (0, 1):
        for clients, psnr in ((1, 30.0), (4, 18.0), (16, 12.0)):
            append_records(
                folder / "records.jsonl", _rows("none", clients, seed, 0.95, 0.6, psnr + seed, None)
            )
            append_records(
                folder / "records.jsonl", _rows("dp", clients, seed, 0.85, 0.52, psnr - 5, 4.0)
            )
    (folder / "suite.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "sweep",
                "description": "A sweep.",
                "grid": {"fl.clients_per_round": [1, 4, 16]},
            }
        )
    )
    (folder / COMMAND_FILE).write_text("fedbench run sweep.yaml --jobs 2")
    report = write_report(folder)
    names = {p.name for p in report.files}
    assert {
        "main.md",
        "main.tex",
        "main.csv",
        "report.md",
        "privacy_utility.png",
        "inversion_vs_clients.png",
    } <= names
    for png in (p for p in report.files if p.suffix == ".png"):
        width, height = Image.open(png).size
        assert width > 300 and height > 200
    text = (folder / "report.md").read_text()
    assert "Produced by `fedbench run sweep.yaml --jobs 2`" in text
    assert "abc123" in text and "torch 2.14.1" in text
    assert "(figures/privacy_utility.png)" in text and "(tables/main.tex)" in text
    assert "clients_per_round=16" in text  # one table row per sweep point


def test_report_lists_skipped_lines_and_failed_cells(tmp_path: Path) -> None:
    folder = tmp_path / "r"
    append_records(folder / "records.jsonl", _rows("none", 1, 0, 0.9, 0.6, 20.0, None))
    append_records(
        folder / "records.jsonl",
        [
            {
                "type": "cell",
                "cell": "x",
                "run": "q",
                "status": "failed",
                "label": "e/bad/seed=0",
                "error": "DataError: client 3 has no data",
            }
        ],
    )
    with (folder / "records.jsonl").open("a") as handle:
        handle.write("{broken\n")
    text = (write_report(folder).folder / "report.md").read_text()
    assert "e/bad/seed=0: DataError: client 3 has no data" in text
    assert "records.jsonl:6: not valid JSON" in text


def test_privacy_table_states_delta_level_accountant_secure_mode(tmp_path: Path) -> None:
    from fedbench.harness.privacy_table import privacy_table

    folder = tmp_path / "dp"
    for seed, eps in ((0, 7.9), (1, 8.1)):
        rows = _rows("dp", 1, seed, 0.9, 0.55, 12.0, eps)
        for row in rows:
            if row.get("metric") == "epsilon":
                row["note"] = (
                    "δ=1e-05, user-level, accountant=rdp, secure_mode=True; "
                    "z=1.1, q=0.1, rounds=100"
                )
        append_records(folder / "records.jsonl", rows)
    write_report(folder)
    table = privacy_table(read_results_dir(folder))
    row = table.iloc[0].to_dict()
    assert row["ε"] == "8 ± 0.14" and row["δ"] == "1e-05" and row["level"] == "user"
    assert row["accountant"] == "rdp" and row["secure mode"] == "True"
    assert row["details"] == "z=1.1, q=0.1, rounds=100"
    assert "secure_mode" not in (folder / "tables" / "privacy.md").read_text()
    assert "| dp_fedavg |" in (folder / "report.md").read_text()


def test_report_on_a_suite_without_membership_attacks(tmp_path: Path) -> None:
    folder = tmp_path / "gi-only"
    rows = [r for r in _rows("none", 4, 0, 0.1, 0.6, 20.0, None) if r.get("metric") != "mia_auc"]
    append_records(folder / "records.jsonl", rows)
    names = {p.name for p in write_report(folder).files}
    assert "attack_success.png" in names and "report.md" in names
