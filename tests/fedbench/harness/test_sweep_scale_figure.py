"""results/sweep-scale/scale_figure.py on the committed records: one table row per partition
and N, one figure panel per partition."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

SCRIPT = Path(__file__).resolve().parents[3] / "results" / "sweep-scale" / "scale_figure.py"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("scale_figure", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_table_has_a_row_per_partition_and_n_and_the_figure_is_drawn(tmp_path: Path) -> None:
    script = _script()
    table = script.cells()
    rows = script.markdown(table).splitlines()[2:]
    assert len(rows) == 12  # 4 IID sizes + 8 label-skew experiments
    iid = [r for r in rows if r.startswith("| iid |")]
    assert [r.split(" | ")[1] for r in iid] == ["10", "100", "1000", "4000"]
    # z is the same at every N (fixed ε, q, T): the noise on the mean falls as 1/N.
    assert len({r.split(" | ")[5] for r in rows}) == 1
    script.draw(table, tmp_path / "figure.png")
    assert (tmp_path / "figure.png").stat().st_size > 0
