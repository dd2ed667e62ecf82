"""Tests for fedbench.harness.bench_report: pytest-benchmark JSON -> table and scaling figure."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from fedbench.cli import main
from fedbench.errors import ResultsError
from fedbench.harness.bench_report import (
    FIGURE_FILE,
    TABLE_FILE,
    format_seconds,
    load_rows,
    markdown_table,
    scaling_series,
    write_bench_report,
)


def _bench(channel: str, phase: str, n: int, dim: int, best: float, **extra: Any) -> dict:
    return {
        "name": f"test_he_channel_phase[{channel}-n{n}-d{dim}-{phase}]",
        "param": f"{channel}-n{n}-d{dim}-{phase}",
        "params": {"channel": channel, "clients": n, "dim": dim, "phase": phase},
        "stats": {"min": best, "median": best * 1.5, "max": best * 3, "rounds": 4},
        "extra_info": {"channel": channel, "clients": n, "dim": dim, "phase": phase, **extra},
    }


SYNTHETIC = {
    "machine_info": {"node": "test"},
    "benchmarks": [
        _bench("paillier-packed", "server_aggregate", 10, 10_000, 2e-3, bytes_per_value=5.2,
               speedup_vs_phe_per_value=240.0, meets_target=True),
        _bench("paillier-packed", "server_aggregate", 10, 1_000, 2e-4, bytes_per_value=5.2),
        _bench("ckks", "server_aggregate", 10, 1_000, 6e-4, ratio_to_tenseal_loop=1.3,
               meets_target=False),
        _bench("tenseal-loop", "server_aggregate", 10, 1_000, 5e-4, peer=True),
        _bench("ckks", "client_encode", 10, 1_000, 2e-3),
        {"name": "test_fedavg_round_overhead[100]", "params": {"num_clients": 100},
         "stats": {"min": 0.5, "rounds": 3}, "extra_info": {"overhead_fraction": 0.04}},
    ],
}


def test_rows_come_sorted_with_their_extra_info() -> None:
    rows = load_rows(SYNTHETIC)
    assert [(r.channel, r.phase, r.dim) for r in rows] == [
        ("ckks", "client_encode", 1_000),
        ("ckks", "server_aggregate", 1_000),
        ("paillier-packed", "server_aggregate", 1_000),
        ("paillier-packed", "server_aggregate", 10_000),
        ("tenseal-loop", "server_aggregate", 1_000),
        ("test_fedavg_round_overhead", "", None),
    ]
    overhead = rows[-1]
    assert overhead.clients == 100 and overhead.seconds_per_value is None
    packed = rows[3]
    assert packed.seconds == 2e-3 and packed.median == 3e-3 and packed.rounds == 4
    assert packed.seconds_per_value == pytest.approx(2e-3 / (10 * 10_000))  # server: per n·dim
    assert rows[0].seconds_per_value == pytest.approx(2e-3 / 1_000)  # client: per dim


def test_markdown_table_has_one_line_per_benchmark_and_the_recorded_ratios() -> None:
    table = markdown_table(load_rows(SYNTHETIC))
    lines = table.splitlines()
    assert len(lines) == 2 + len(SYNTHETIC["benchmarks"])
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header[:7] == ["channel", "phase", "n", "dim", "best", "per value", "rounds"]
    assert {"bytes/value", "speed-up vs phe", "× TenSEAL loop", "overhead", "target met"} <= set(
        header
    )
    assert "mask rate / raw AES" not in header  # no row recorded it
    packed = next(line for line in lines if "| 10000 |" in line)
    cells = [c.strip() for c in packed.strip("|").split("|")]
    assert cells[4] == "2.00 ms" and cells[5] == "20.00 ns"  # 2 ms / (10 clients × 10^4)
    assert cells[header.index("speed-up vs phe")] == "240"
    assert cells[header.index("target met")] == "yes"
    ckks = next(line for line in lines if line.startswith("| ckks | server_aggregate"))
    assert "**no**" in ckks  # a missed target stands out


def test_scaling_series_groups_by_phase_and_channel() -> None:
    series = scaling_series(load_rows(SYNTHETIC))
    assert set(series) == {"client_encode", "server_aggregate"}
    assert series["server_aggregate"][("paillier-packed", 10)] == [(1_000, 2e-4), (10_000, 2e-3)]


def test_write_report_and_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "bench.json"
    source.write_text(json.dumps(SYNTHETIC), encoding="utf-8")
    table, files = write_bench_report(source, tmp_path / "out")
    assert files == [tmp_path / "out" / TABLE_FILE, tmp_path / "out" / FIGURE_FILE]
    assert table in files[0].read_text(encoding="utf-8")
    with Image.open(files[1]) as image:
        assert image.format == "PNG" and image.width > 2 * image.height  # two panels side by side
    assert main(["bench", str(source), "--out", str(tmp_path / "cli")]) == 0
    out = capsys.readouterr().out
    assert "| paillier-packed | server_aggregate | 10 | 10000 |" in out
    assert (tmp_path / "cli" / FIGURE_FILE).is_file()


def test_bad_input_is_refused_with_the_file_named(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json", encoding="utf-8")
    with pytest.raises(ResultsError, match=f"{broken}: not JSON"):
        write_bench_report(broken, tmp_path)
    wrong = tmp_path / "records.json"
    wrong.write_text(json.dumps({"rows": []}), encoding="utf-8")
    with pytest.raises(ResultsError, match="no 'benchmarks' list"):
        write_bench_report(wrong, tmp_path)
    disabled = {"benchmarks": [{"name": "x", "stats": None}]}
    with pytest.raises(ResultsError, match="benchmark 0 has no stats"):
        load_rows(disabled)
    assert main(["bench", str(tmp_path / "missing.json")]) == 2


@pytest.mark.parametrize(
    "seconds, text", [(2.5, "2.50 s"), (0.0125, "12.50 ms"), (3e-6, "3.00 µs"), (4e-8, "40.00 ns")]
)
def test_format_seconds(seconds: float, text: str) -> None:
    assert format_seconds(seconds) == text
