"""Tests for fedbench.harness.report and figures: files exist, link each other, say how made."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from PIL import Image
from records_factory import CellRecords, make_cell

from fedbench.config import parse_experiment
from fedbench.defense import PrivacyReport
from fedbench.fl.views import ViewKind
from fedbench.harness.environment import versions
from fedbench.harness.records import Row, append_records, read_results_dir
from fedbench.harness.report import COMMAND_FILE, write_report
from fedbench.harness.suite import Cell
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


@pytest.fixture(scope="module")
def _small_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real run of a small suite (two cells with figures), shared by the tests below."""
    from fedbench.config import parse_suite
    from fedbench.harness.runner import run_suite

    suite = parse_suite({
        "name": "small",
        "experiments": [{
            "name": "d", "data": "digits", "model": "logreg", "mia_candidates": 60,
            "fl": {"num_clients": 3, "rounds": 2, "batch_size": 16},
            "attacks": ["loss_threshold"],
        }],
        "defenses": [{"label": "none"}, {"label": "prune", "stack": [{"name": "prune"}]}],
    })
    summary = run_suite(suite, results_root=tmp_path_factory.mktemp("run"), progress=False)
    return summary.folder


@pytest.fixture
def small(_small_run: Path, tmp_path: Path) -> Path:
    """A private copy of the small run's results folder."""
    import shutil

    return Path(shutil.copytree(_small_run, tmp_path / "out" / "small"))


def test_tables_show_only_the_current_suites_cells_and_list_the_stale(small: Path) -> None:
    folder = small
    # An edited suite: the prune stack renamed and a cell dropped; its old records stay stale.
    suite = yaml.safe_load((folder / "suite.yaml").read_text())
    suite["defenses"] = [{"label": "none", "stack": []}]
    (folder / "suite.yaml").write_text(yaml.safe_dump(suite))
    report = write_report(folder)
    assert [key[1] for key in report.table.text.index] == ["none"]
    assert report.stale == ["d/prune/seed=0"]
    text = (folder / "report.md").read_text()
    assert "1 complete, 0 failed, 1 stale records not shown" in text
    assert "- d/prune/seed=0" in text


def test_a_moved_copy_keeps_working_links(small: Path, tmp_path: Path) -> None:
    import shutil

    folder = small
    copy = tmp_path / "elsewhere" / "copy"
    shutil.copytree(folder, copy)
    shutil.rmtree(folder)
    report = write_report(copy)
    text = (copy / "report.md").read_text()
    links = re.findall(r"\]\(([^)]+)\)", text)
    assert links and all((copy / link).exists() for link in links), links
    assert not any(str(tmp_path) in link for link in links)  # relative, never absolute
    out = tmp_path / "report-out"
    moved = write_report(copy, out=out)
    links = re.findall(r"\]\(([^)]+)\)", (out / "report.md").read_text())
    assert all((out / link).exists() for link in links), links
    assert moved.html == out / "report.html" and report.html.exists()


def test_report_html_is_self_contained(small: Path) -> None:
    folder = small
    page = write_report(folder).html.read_text()
    assert 'id="T_main"' in page and "d/prune/seed=0" in page and "Per-round history" in page
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "loss_threshold (final_model)" in page  # the view each attack used
    assert 'href="http' not in page and 'src="http' not in page  # nothing outside the file


def test_a_corrupted_suite_yaml_is_a_message_not_a_traceback(small: Path, capsys) -> None:
    from fedbench.cli import main

    folder = small
    (folder / "suite.yaml").write_text("name: [unclosed\n")
    assert main(["report", str(folder)]) == 2
    assert "suite.yaml is not valid YAML" in capsys.readouterr().err


def _browser() -> str | None:
    import shutil

    return next((p for p in (shutil.which(n) for n in
                             ("chromium", "chromium-browser", "google-chrome")) if p), None)


def _headless(browser: str, profile: Path, *args: str) -> str:
    import subprocess

    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}"]
    done = subprocess.run([browser, *flags, *args], capture_output=True, text=True, timeout=120,
                          check=True)
    return done.stdout


def test_the_html_report_renders_in_a_real_browser(small: Path, tmp_path: Path) -> None:
    browser = _browser()
    if browser is None:
        pytest.skip("no Chromium on this machine (.ci/run installs Debian's chromium)")
    page = write_report(small).html.as_uri()
    dom = _headless(browser, tmp_path / "profile", "--dump-dom", page)
    images = re.findall(r"<img [^>]*>", dom)
    assert len(images) >= 3  # the suite figures and each cell's ROC curve
    assert all('data-loaded="yes"' in tag for tag in images), "an image failed to load"
    assert 'class="missing"' not in dom
    main_rows = re.search(r'<table[^>]*id="T_main".*?</table>', dom, re.DOTALL)
    assert main_rows is not None and main_rows.group(0).count("<tr") == 3  # header + 2 rows
    shot = tmp_path / "report.png"
    _headless(browser, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,2000",
              page)
    assert shot.exists() and shot.stat().st_size > 10_000


def test_a_noise_sweep_of_several_defenses_gets_one_attack_vs_noise_figure(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "noise"
    keys = ["defenses.ldp.noise.multiplier", "defenses.dp_sgd.noise.multiplier"]
    plain = CellRecords(make_cell("none"))
    plain.metric("psnr", 120.0, False, kind="privacy", source="attack:imprint",
                 attack="imprint", view=ViewKind.CLIENT_UPDATE)
    append_records(folder / "records.jsonl", plain.rows())
    for key, defense in zip(keys, ("ldp", "dp_sgd"), strict=True):
        for z, psnr in ((1e-4, 40.0), (1e-2, 10.0)):
            config = parse_experiment({"name": f"exp-{defense}", "defenses": [
                {"name": defense, "noise": {"multiplier": z}}]})
            records = CellRecords(Cell("s", "exp", defense, 0, config, {key: z}))
            records.metric("psnr", psnr, False, kind="privacy", source="attack:imprint",
                           attack="imprint", view=ViewKind.CLIENT_UPDATE)
            records.metric("exact_recovery", 0.0, False, kind="privacy",
                           source="attack:imprint", attack="imprint",
                           view=ViewKind.CLIENT_UPDATE)
            append_records(folder / "records.jsonl", records.rows())
    (folder / "suite.yaml").write_text(yaml.safe_dump(
        {"name": "noise", "description": "A noise sweep.", "grid": {k: [1e-4] for k in keys}}
    ))
    report = write_report(folder)
    figure = next(p for p in report.files if p.name == "attack_vs_noise.png")
    width, height = Image.open(figure).size
    assert width > 2 * height  # two panels side by side: exact recovery and PSNR
    assert "inversion_vs_clients.png" not in {p.name for p in report.files}
