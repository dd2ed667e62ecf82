"""Tests for fedbench.harness.executors: every executor gives the sequential records."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedbench.config import parse_suite
from fedbench.errors import ConfigError
from fedbench.harness.executors import (
    LocalPoolExecutor,
    SequentialExecutor,
    make_executor,
)
from fedbench.harness.schema import MetricRecord
from fedbench.harness.suite import expand

SUITE = parse_suite(
    {
        "name": "ex",
        "experiments": [
            {
                "data": "digits",
                "model": "logreg",
                "fl": {"num_clients": 2, "rounds": 1},
                "attacks": ["loss_threshold"],
                "mia_candidates": 40,
            }
        ],
        "seeds": [0, 1],
    }
)
VOLATILE = {"run", "started", "duration_s", "host", "git_commit", "versions", "executor"}
EXCLUDED = {**dict.fromkeys(VOLATILE, True), "history": {"__all__": {"aggregate_seconds"}}}


def _stable(results) -> dict[str, list[dict]]:
    # Bit-identical: every cell fixes its torch thread count, whichever process runs it.
    return {
        cell.id: [
            r.model_dump(exclude=EXCLUDED) for r in output.rows
            if not (isinstance(r, MetricRecord) and r.timing)
        ]
        for cell, output in results
    }


def test_process_pool_matches_sequential() -> None:
    cells = expand(SUITE)
    sequential = list(SequentialExecutor().run(cells))
    pooled = list(LocalPoolExecutor(jobs=2).run(cells))
    assert _stable(pooled) == _stable(sequential) and len(pooled) == 2
    assert {o.rows[-1].executor for _, o in pooled} == {"local-pool"}
    assert {o.rows[-1].executor for _, o in sequential} == {"local"}
    # Figures travel back with the records, named in the results folder.
    for _, output in pooled:
        paths = [r.path for r in output.rows if isinstance(r, MetricRecord) and r.path]
        assert paths and set(paths) == set(output.files)
        assert all(p.startswith("figures/") and output.files[p][:4] == b"\x89PNG" for p in paths)


@pytest.mark.slow
def test_ray_on_a_loopback_head_matches_sequential_and_ships_figures_back(
    tmp_path: Path,
) -> None:
    pytest.importorskip("ray")
    import pickle
    import shutil

    if not (Path(sys.executable).with_name("ray").exists() and shutil.which("unshare")
            and shutil.which("ip")):
        pytest.skip("needs the ray CLI (the `ray` extra), unshare and ip (iproute2)")
    out = tmp_path / "ray.pickle"
    script = Path(__file__).with_name("ray_in_loopback.py")
    # Ray binds every interface: in a namespace of its own the only one is loopback.
    command = f"ip link set lo up && {sys.executable} {script} {out}"
    env = {**os.environ, "PYTHONPATH": str(script.parent)}
    done = subprocess.run(["unshare", "--net", "--fork", "sh", "-c", command],
                          capture_output=True, text=True, env=env, timeout=600)
    if done.returncode != 0 and "unshare failed" in done.stderr:
        pytest.skip(f"cannot make a network namespace here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr[-3000:]
    cells = {c.id: c for c in expand(SUITE)}
    on_ray = [(cells[cid], output) for cid, output in pickle.loads(out.read_bytes())]
    sequential = list(SequentialExecutor().run(list(cells.values())))
    assert _stable(on_ray) == _stable(sequential)
    assert {o.rows[-1].executor for _, o in on_ray} == {"ray"}
    assert all(o.files for _, o in on_ray)  # the worker's figures reached the driver
    ratios = [r.value for _, o in on_ray for r in o.rows
              if isinstance(r, MetricRecord) and r.metric == "aggregation_time_ratio"]
    assert all(v is not None and v < 50 for v in ratios)  # no cold start in the timed part


@pytest.mark.slow
def test_pool_workers_die_with_a_killed_parent(tmp_path: Path) -> None:
    suite = tmp_path / "long.yaml"
    suite.write_text(
        "name: long\nexperiments:\n  - {data: digits, model: mlp, fl: {num_clients: 4, "
        "rounds: 200}}\nseeds: [0, 1, 2, 3]\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-m", "fedbench.cli", "run", str(suite), "--jobs", "2",
         "--results-dir", str(tmp_path / "out"), "--no-progress"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    workers: list[int] = []
    for _ in range(120):  # wait for the pool to start its workers
        time.sleep(0.5)
        found = subprocess.run(["pgrep", "-P", str(parent.pid)], capture_output=True, text=True)
        workers = [int(p) for p in found.stdout.split()]
        if len(workers) >= 2:
            break
    assert workers, "the pool never started"
    parent.send_signal(signal.SIGKILL)  # no clean-up runs in the parent
    parent.wait()
    deadline = time.time() + 15
    while time.time() < deadline and any(Path(f"/proc/{w}").exists() for w in workers):
        time.sleep(0.5)
    alive = [w for w in workers if Path(f"/proc/{w}").exists()
             and "zombie" not in Path(f"/proc/{w}/status").read_text().lower()]
    for w in alive:
        os.kill(w, signal.SIGKILL)
    assert not alive, f"workers {alive} outlived their killed parent"


def test_make_executor_validates() -> None:
    assert isinstance(make_executor("local", jobs=1), SequentialExecutor)
    assert isinstance(make_executor("local", jobs=3), LocalPoolExecutor)
    with pytest.raises(ConfigError, match="--jobs must be at least 1"):
        make_executor("local", jobs=0)
    with pytest.raises(ConfigError, match="--address is only used with --executor ray"):
        make_executor("local", address="ray://x:10001")
