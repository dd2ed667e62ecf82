"""Tests for fedbench.harness.report and figures: files exist, link each other, say how made."""

from __future__ import annotations

from pathlib import Path

import yaml
from PIL import Image
from records_factory import CellRecords, make_cell

from fedbench.defense import PrivacyReport
from fedbench.fl.views import ViewKind
from fedbench.harness.environment import versions
from fedbench.harness.records import Row, append_records, read_results_dir
from fedbench.harness.report import COMMAND_FILE, write_report
from fedbench.harness.writer import RecordWriter


def _rows(
    defense: str, clients: int, seed: int, acc: float, auc: float | None, psnr: float,
    eps: float | None, *, secure_mode: bool = False,
) -> list[Row]:
    cell = make_cell(defense, seed, grid={"fl.clients_per_round": clients},
                     settings={"fl": {"num_clients": 16}})
    records = CellRecords(cell).metric("accuracy", acc, True)
    if auc is not None:
        records.metric("mia_auc", auc, False, kind="privacy", source="attack:loss_threshold",
                       attack="loss_threshold")
    records.metric("psnr", psnr, False, kind="privacy", source="attack:dlg", attack="dlg",
                   view=ViewKind.AGGREGATE)
    if eps is not None:
        report = PrivacyReport(epsilon=eps, delta=1e-5, accountant="rdp",
                               secure_mode=secure_mode, note="z=1.1, q=0.1, rounds=100")
        records.metric("epsilon", eps, False, kind="privacy", source="defense:dp_fedavg",
                       privacy=report, note=report.note)
    return records.rows()


def test_report_writes_tables_figures_and_provenance(tmp_path: Path) -> None:
    folder = tmp_path / "sweep"
    for seed in (0, 1):
        for clients, psnr in ((1, 30.0), (4, 18.0), (16, 12.0)):
            append_records(
                folder / "records.jsonl", _rows("none", clients, seed, 0.95, 0.6, psnr + seed, None)
            )
            append_records(
                folder / "records.jsonl",
                _rows("dp_fedavg", clients, seed, 0.85, 0.52, psnr - 5, 4.0),
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
    assert versions()["torch"] in text and f"torch {versions()['torch']}" in text
    assert "(figures/privacy_utility.png)" in text and "(tables/main.tex)" in text
    assert "clients_per_round=16" in text  # one table row per sweep point


def test_report_lists_skipped_lines_and_failed_cells(tmp_path: Path) -> None:
    folder = tmp_path / "r"
    append_records(folder / "records.jsonl", _rows("none", 1, 0, 0.9, 0.6, 20.0, None))
    failed = RecordWriter(make_cell("secagg")).finish(
        status="failed", started=0.0, duration_s=0.1, error="DataError: client 3 has no data"
    )
    append_records(folder / "records.jsonl", failed)
    with (folder / "records.jsonl").open("a") as handle:
        handle.write("{broken\n")
    text = (write_report(folder).folder / "report.md").read_text()
    assert "exp/secagg/seed=0: DataError: client 3 has no data" in text
    assert "records.jsonl:6: not valid JSON" in text


def test_privacy_table_states_delta_level_accountant_secure_mode(tmp_path: Path) -> None:
    from fedbench.harness.privacy_table import privacy_table

    folder = tmp_path / "dp"
    for seed, eps in ((0, 7.9), (1, 8.1)):
        rows = _rows("dp_fedavg", 1, seed, 0.9, 0.55, 12.0, eps, secure_mode=True)
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
    rows = _rows("none", 4, 0, 0.1, None, 20.0, None)
    append_records(folder / "records.jsonl", rows)
    names = {p.name for p in write_report(folder).files}
    assert "attack_success.png" in names and "report.md" in names
