"""Tests for ``fedbench attack`` (fedbench.harness.replay): attacks on a transcript written by
``fedbench run --save-transcripts`` measure what the run measured, on no more views."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedbench.cli import main
from fedbench.config import ComponentConfig
from fedbench.errors import ConfigError
from fedbench.fl.transcript_io import TENSOR_FILE
from fedbench.harness.records import RecordSet, read_results_dir
from fedbench.harness.replay import parse_attacks

IDLG = "{name: idlg, iterations: 3, inner_iterations: 5}"
SUITE = f"""
name: tx
experiments:
  - name: one-image
    data: {{name: image_patches, per_image: 3}}
    model: lenet
    fl: {{algorithm: fedsgd, num_clients: 4, client_fraction: 1.0, sampling: poisson,
         weighting: uniform, rounds: 1, batch_size: 1, client_lr: 0.1}}
    attacks: [{IDLG}]
defenses:
  - label: none
  - label: secagg
    stack: [secagg]
"""


def _psnr(records: RecordSet, defense: str) -> dict[str, float | None]:
    return {str(m.view.value if m.view else None): m.value for m in records.metrics
            if m.metric == "psnr" and m.defense == defense}


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("replay")
    (root / "tx.yaml").write_text(SUITE)
    assert main(["run", str(root / "tx.yaml"), "--results-dir", str(root / "runs"),
                 "--save-transcripts", "--no-progress", "-q"]) == 0
    return root / "runs" / "tx"


def _transcript(run_folder: Path, defense: str) -> Path:
    (found,) = (run_folder / "transcripts").glob(f"one-image__{defense}__*")
    return found


def _attack(transcript: Path, out: Path) -> RecordSet:
    assert main(["attack", str(transcript), "--attacks", f"[{IDLG}]",
                 "--results-dir", str(out), "-q"]) == 0
    (folder,) = out.iterdir()
    assert (folder / "report.md").exists() and (folder / "suite.yaml").exists()
    return read_results_dir(folder)


def test_idlg_on_the_saved_transcript_measures_the_runs_psnr(
    run_folder: Path, tmp_path: Path
) -> None:
    in_run = _psnr(read_results_dir(run_folder), "none")
    replayed = _attack(_transcript(run_folder, "none"), tmp_path)
    assert set(in_run) == {"client_update", "aggregate"}
    assert replayed_psnr(replayed, "none") == in_run  # same seeds, same views: same numbers


def replayed_psnr(records: RecordSet, defense: str) -> dict[str, float | None]:
    assert not records.failed and len(records.cells) == 1
    return _psnr(records, defense)


def test_a_secagg_transcript_opens_only_the_aggregate(run_folder: Path, tmp_path: Path) -> None:
    in_run = _psnr(read_results_dir(run_folder), "secagg")
    replayed = _attack(_transcript(run_folder, "secagg"), tmp_path)
    assert set(in_run) == {"aggregate"}
    assert replayed_psnr(replayed, "secagg") == in_run
    views = {m.view for m in replayed.metrics if m.attack == "idlg"}
    assert {v.value for v in views if v} == {"aggregate"}


def test_a_corrupted_transcript_is_refused_naming_file_and_field(
    run_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = _transcript(run_folder, "none")
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in source.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    data = bytearray((copy / TENSOR_FILE).read_bytes())
    data[-100] ^= 0x01
    (copy / TENSOR_FILE).write_bytes(bytes(data))
    assert main(["attack", str(copy), "--attacks", "idlg", "--results-dir",
                 str(tmp_path / "out"), "-q"]) == 2
    error = capsys.readouterr().err
    assert f"{copy / TENSOR_FILE}" in error and "field 'tensors'.sha256" in error
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_attacks_are_named_or_listed_as_components() -> None:
    assert [a.name for a in parse_attacks("dlg, idlg")] == ["dlg", "idlg"]
    (idlg,) = parse_attacks("[{name: idlg, iterations: 7}]")
    assert isinstance(idlg, ComponentConfig) and idlg.params["iterations"] == 7
    with pytest.raises(ConfigError, match="no_such"):
        parse_attacks("idlg,no_such")
    with pytest.raises(ConfigError, match="at least one"):
        parse_attacks(" , ")


def test_a_complete_cell_without_its_transcript_reruns(
    run_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["run", str(run_folder.parent.parent / "tx.yaml"), "--results-dir",
            str(run_folder.parent), "--save-transcripts", "--no-progress", "-q"]
    capsys.readouterr()
    assert main(args) == 0
    assert "2 cells, 2 already complete, 0 run" in capsys.readouterr().out
    transcript = _transcript(run_folder, "secagg")
    for path in transcript.iterdir():
        path.unlink()
    assert main(args) == 0
    assert "2 cells, 1 already complete, 1 run" in capsys.readouterr().out
    assert (transcript / TENSOR_FILE).exists()


MIA = """
name: digits-mia
data: digits
model: logreg
fl: {num_clients: 4, rounds: 2, local_epochs: 1, batch_size: 32}
mia_candidates: 60
attacks: [loss_threshold, {name: lira, num_models: 2}]
"""


def test_membership_attacks_on_the_transcript_measure_the_runs_auc(tmp_path: Path) -> None:
    """The population, the candidates and their membership come from the dataset the
    transcript names, rebuilt with the run's split and seed: the AUCs are the run's."""
    (tmp_path / "mia.yaml").write_text(MIA)
    assert main(["run", str(tmp_path / "mia.yaml"), "--results-dir", str(tmp_path / "runs"),
                 "--save-transcripts", "--no-progress", "-q"]) == 0
    run = read_results_dir(tmp_path / "runs" / "digits-mia")
    (transcript,) = (tmp_path / "runs" / "digits-mia" / "transcripts").iterdir()
    assert main(["attack", str(transcript), "--attacks", "[loss_threshold, {name: lira, "
                 "num_models: 2}]", "--results-dir", str(tmp_path / "att"), "-q"]) == 0
    (folder,) = (tmp_path / "att").iterdir()

    def aucs(records: RecordSet) -> dict[tuple[str | None, str | None], float | None]:
        return {(m.attack, m.view.value if m.view else None): m.value for m in records.metrics
                if m.metric == "mia_auc"}

    in_run = aucs(run)
    assert {a for a, _ in in_run} == {"loss_threshold", "lira"}
    assert aucs(read_results_dir(folder)) == in_run
