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
    format_targets,
    load_rows,
    markdown_table,
    scaling_series,
    write_bench_report,
)


def _bench(channel: str, phase: str, n: int | None, dim: int, best: float, *,
           role: str = "channel", dropout: float = 0.0, **extra: Any) -> dict:
    """One benchmark in the aggregation suite's schema (every key present, None if unused)."""
    values = n * dim if phase == "server_aggregate" and n else dim
    info = {
        "channel": channel, "role": role, "clients": n, "dim": dim, "dropout": dropout,
        "phase": phase, "values": values, "seconds": best, "seconds_per_value": best / values,
        "ratio_to_plaintext_sum": None, "bytes_per_value": None, "mask_rate_vs_raw_aes": None,
        "speedup_vs_phe_per_value": None, "ratio_to_tenseal_loop": None, "targets": {},
        "meets_target": None, "compare": {}, **extra,
    }
    return {
        "name": f"test_channel_phase[{channel}-n{n}-drop{dropout}-d{dim}-{phase}]",
        "param": f"{channel}-n{n}-drop{dropout}-d{dim}-{phase}",
        "params": {"channel": channel, "clients": n, "dropout": dropout, "dim": dim,
                   "phase": phase},
        "stats": {"min": best, "median": best * 1.5, "max": best * 3, "rounds": 4},
        "extra_info": info,
    }


SYNTHETIC = {
    "machine_info": {"node": "test"},
    "benchmarks": [  # in the order a suite runs them: channel by channel
        _bench("plaintext", "server_aggregate", 10, 1_000, 1e-5, ratio_to_plaintext_sum=2.5),
        _bench("secagg", "server_aggregate", 10, 1_000, 5e-6, ratio_to_plaintext_sum=1.2,
               targets={"ratio_to_plaintext_sum": {"max": 1.5}}, meets_target=True),
        _bench("secagg", "server_aggregate", 10, 1_000, 6e-6, dropout=0.1),
        _bench("secagg", "server_decode", 10, 1_000, 1e-3, mask_rate_vs_raw_aes=0.05),
        _bench("paillier-packed", "server_aggregate", 10, 10_000, 2e-3, bytes_per_value=5.2,
               speedup_vs_phe_per_value=240.0,
               targets={"speedup_vs_phe_per_value": {"min": 100}, "bytes_per_value": {"max": 8}},
               meets_target=True),
        _bench("paillier-packed", "server_aggregate", 10, 1_000, 2e-4, bytes_per_value=5.2),
        _bench("ckks", "server_aggregate", 10, 1_000, 6e-4, ratio_to_tenseal_loop=1.3,
               targets={"ratio_to_tenseal_loop": {"max": 1.2}}, meets_target=False),
        _bench("ckks", "client_decode", 100, 1_000, 3e-4),
        _bench("tenseal-loop", "server_aggregate", 10, 1_000, 5e-4, role="peer"),
        _bench("float32-sum", "server_aggregate", 100, 1_000, 4e-5, role="baseline"),
        _bench("aes-128-ctr", "client_encode", None, 1_000, 4e-7, role="baseline"),
        # Another suite's benchmark in the same file: no channel, phase or dim.
        {"name": "test_fedavg_round_overhead[100]", "params": {"num_clients": 100},
         "stats": {"min": 0.5, "rounds": 3},
         "extra_info": {"overhead_fraction": 0.04, "compare": {"overhead_fraction": "lower"}}},
        {"name": "test_dp_sgd_epoch[mlp]", "params": {}, "stats": {"min": 0.2, "rounds": 5},
         "extra_info": {"ratio_dp_to_plain": 3.5, "compare": {"ratio_dp_to_plain": "lower"}}},
    ],
}


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_rows_are_grouped_by_phase_size_and_dropout_with_channels_in_suite_order() -> None:
    rows = load_rows(SYNTHETIC)
    assert [(r.phase, r.clients, r.dim, r.dropout, r.channel) for r in rows] == [
        ("server_aggregate", 10, 1_000, 0.0, "plaintext"),
        ("server_aggregate", 10, 1_000, 0.0, "secagg"),
        ("server_aggregate", 10, 1_000, 0.0, "paillier-packed"),
        ("server_aggregate", 10, 1_000, 0.0, "ckks"),
        ("server_aggregate", 10, 1_000, 0.0, "tenseal-loop"),
        ("server_aggregate", 10, 1_000, 0.1, "secagg"),
        ("server_aggregate", 10, 10_000, 0.0, "paillier-packed"),
        ("server_aggregate", 100, 1_000, 0.0, "float32-sum"),
        ("server_decode", 10, 1_000, 0.0, "secagg"),
        ("client_decode", 100, 1_000, 0.0, "ckks"),
        ("client_encode", None, 1_000, 0.0, "aes-128-ctr"),
        ("", 100, None, None, "test_fedavg_round_overhead"),  # no dim: after, in file order
        ("", None, None, None, "test_dp_sgd_epoch"),
    ]
    packed = rows[6]
    assert packed.seconds == 2e-3 and packed.median == 3e-3 and packed.rounds == 4
    assert packed.role == "channel" and rows[4].role == "peer" and rows[7].role == "baseline"
    # Per value: over the values one call processes, n·dim for the server's sum.
    assert packed.seconds_per_value == pytest.approx(2e-3 / (10 * 10_000))
    assert rows[9].seconds_per_value == pytest.approx(3e-4 / 1_000)
    assert rows[-2].seconds_per_value is None


def test_markdown_table_has_one_line_per_benchmark_with_ratios_and_targets() -> None:
    table = markdown_table(load_rows(SYNTHETIC))
    lines = table.splitlines()
    assert len(lines) == 2 + len(SYNTHETIC["benchmarks"])
    header = _cells(lines[0])
    assert header[:8] == ["phase", "n", "dim", "dropout", "channel", "best", "per value",
                          "rounds"]
    # Known ratios under readable names; any other declared ratio under its own name.
    assert {"× plaintext sum", "bytes/value", "mask rate / raw AES", "speed-up vs phe",
            "× TenSEAL loop", "overhead", "ratio_dp_to_plain"} <= set(header)
    assert header[-2:] == ["target", "target met"]
    assert "upload / float32" not in header  # no row recorded a value for it
    packed = next(_cells(line) for line in lines if "| 10000 |" in line)
    assert packed[5] == "2.00 ms" and packed[6] == "20.00 ns"  # 2 ms / (10 clients × 10^4)
    assert packed[header.index("speed-up vs phe")] == "240"
    assert packed[header.index("target")] == "speed-up vs phe ≥ 100, bytes/value ≤ 8"
    assert packed[header.index("target met")] == "yes"
    ckks = next(_cells(line) for line in lines if "| ckks |" in line and "server_agg" in line)
    assert ckks[header.index("× TenSEAL loop")] == "1.3"
    assert ckks[header.index("target met")] == "**no**"  # a missed target stands out
    peer = next(_cells(line) for line in lines if "tenseal-loop" in line)
    assert peer[header.index("channel")] == "tenseal-loop (peer)"
    dp = _cells(lines[-1])
    assert dp[header.index("ratio_dp_to_plain")] == "3.5" and dp[header.index("dim")] == ""


def test_format_targets() -> None:
    assert format_targets({"ratio_to_plaintext_sum": {"max": 1.5}}) == "× plaintext sum ≤ 1.5"
    assert format_targets({"custom": {"min": 0.5}}) == "custom ≥ 0.5"
    assert format_targets(None) == "" and format_targets({}) == ""


def test_scaling_series_has_a_panel_per_n_and_phase() -> None:
    series = scaling_series(load_rows(SYNTHETIC))
    assert set(series) == {
        (10, "server_aggregate"), (100, "server_aggregate"), (10, "server_decode"),
        (100, "client_decode"), (10, "client_encode"), (100, "client_encode"),
    }
    aggregate = series[(10, "server_aggregate")]
    assert aggregate[("paillier-packed", 0.0, "channel")] == [(1_000, 2e-4), (10_000, 2e-3)]
    assert aggregate[("secagg", 0.1, "channel")] == [(1_000, 6e-6)]  # dropouts: own line
    assert aggregate[("tenseal-loop", 0.0, "peer")] == [(1_000, 5e-4)]
    # A baseline without n (one client's keystream) is drawn for every n.
    for n in (10, 100):
        assert series[(n, "client_encode")] == {("aes-128-ctr", 0.0, "baseline"): [(1_000, 4e-7)]}


def test_write_report_and_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "bench.json"
    source.write_text(json.dumps(SYNTHETIC), encoding="utf-8")
    table, files = write_bench_report(source, tmp_path / "out")
    assert files == [tmp_path / "out" / TABLE_FILE, tmp_path / "out" / FIGURE_FILE]
    markdown = files[0].read_text(encoding="utf-8")
    assert table in markdown and f"]({FIGURE_FILE})" in markdown  # the figure is linked
    with Image.open(files[1]) as image:
        # 2 rows (n = 10, 100) × 4 phase columns plus the legend: much wider than tall.
        assert image.format == "PNG" and image.width > 2 * image.height
    assert main(["bench", str(source), "--out", str(tmp_path / "cli")]) == 0
    out = capsys.readouterr().out
    assert "| server_aggregate | 10 | 10000 | 0 | paillier-packed |" in out
    assert (tmp_path / "cli" / FIGURE_FILE).is_file()


def test_no_dimension_means_no_figure(tmp_path: Path) -> None:
    source = tmp_path / "dp.json"
    source.write_text(json.dumps({"benchmarks": SYNTHETIC["benchmarks"][-2:]}), encoding="utf-8")
    table, files = write_bench_report(source, tmp_path)
    assert files == [tmp_path / TABLE_FILE] and "ratio_dp_to_plain" in table
    assert "target" not in table and "dropout" not in table  # no row has them


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
    "seconds, text",
    [(2.5, "2.50 s"), (0.0125, "12.50 ms"), (3e-6, "3.00 µs"), (4e-8, "40.00 ns"),
     (6.2e-13, "0.62 ps")],
)
def test_format_seconds(seconds: float, text: str) -> None:
    assert format_seconds(seconds) == text
