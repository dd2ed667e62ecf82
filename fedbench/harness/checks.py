"""Before any training: build every cell's pipeline and ask every stage whether it can run.

``fedbench run --dry-run`` prints the result; every run starts with it and refuses to start
when a cell cannot run, listing every problem at once (so the fifth cell's bad combination is
found before the first four have trained).
"""

from __future__ import annotations

from collections.abc import Sequence

from tqdm.auto import tqdm

from fedbench.harness.build import pipeline_problems
from fedbench.harness.suite import Cell
from fedbench.integrations.flower_sim import flower_problems


def cell_problems(cells: Sequence[Cell], *, progress: bool = False) -> dict[str, list[str]]:
    """Cell label -> what stops it from running (only cells with problems)."""
    found: dict[str, list[str]] = {}
    for cell in tqdm(cells, desc="checking cells", unit="cell", disable=not progress,
                     leave=False):
        problems = pipeline_problems(cell.config) + flower_problems(cell.config)
        if problems:
            found[cell.label] = problems
    return found


def describe(found: dict[str, list[str]], total: int) -> str:
    """The problems as the lines ``fedbench`` prints."""
    lines = [f"{len(found)} of {total} cells cannot run:"]
    for label, problems in found.items():
        lines += [f"  {label}:"] + [f"    - {line}" for p in problems for line in p.splitlines()]
    return "\n".join(lines)
