"""Run the executor tests' suite on a Ray head, inside a network namespace that has only the
loopback interface (Ray's servers bind every interface; here the only one is 127.0.0.1).

Usage (by test_executors.py): unshare --net --fork sh -c "ip link set lo up && python THIS OUT"
Writes the pickled ``[(cell id, CellOutput)]`` to OUT.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path

from test_executors import SUITE

from fedbench.harness.executors import RayExecutor
from fedbench.harness.suite import expand


def main(out: Path) -> None:
    ray = str(Path(sys.executable).with_name("ray"))
    # A private cluster in a namespace nothing else can reach: no token to hand around.
    os.environ["RAY_AUTH_MODE"] = "disabled"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # socket paths must stay short
    subprocess.run([ray, "start", "--head", "--node-ip-address=127.0.0.1", "--port=6389",
                    "--num-cpus=2", "--include-dashboard=false", f"--temp-dir={temp}"],
                   check=True, capture_output=True, env=env, timeout=180)
    try:
        results = [(cell.id, output) for cell, output in
                   RayExecutor(address="127.0.0.1:6389").run(expand(SUITE))]
    finally:
        subprocess.run([ray, "stop", "--force"], capture_output=True, env=env, timeout=120)
    out.write_bytes(pickle.dumps(results))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
