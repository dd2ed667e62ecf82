"""What each ``fedbench`` command does (the parser is in :mod:`fedbench.cli`).

Every command returns its exit code; errors a user can fix raise a FedbenchError, which the
entry point prints as one line (exit 2).
"""

from __future__ import annotations

import argparse
import fnmatch
import sys
from pathlib import Path
from typing import Any

from fedbench.errors import ConfigError


def _progress(args: argparse.Namespace) -> bool:
    """Progress bars only on a terminal: in logs their escape codes are noise."""
    return not args.no_progress and sys.stderr.isatty() and args.verbosity >= 0


def select(cells: list[Any], patterns: list[str]) -> list[Any]:
    """The cells whose label matches any of ``patterns`` (all cells when there are none)."""
    if not patterns:
        return cells
    chosen = [c for c in cells if any(fnmatch.fnmatchcase(c.label, p) for p in patterns)]
    if not chosen:
        labels = ", ".join(c.label for c in cells[:5]) + (", ..." if len(cells) > 5 else "")
        raise ConfigError(f"--only {' '.join(patterns)} matches no cell; cells: {labels}")
    return chosen


def run(args: argparse.Namespace) -> int:
    """``fedbench run``: check, run the cells without current records, report."""
    from fedbench.harness.executors import make_executor
    from fedbench.harness.report import COMMAND_FILE, write_report
    from fedbench.harness.runner import run_suite
    from fedbench.harness.suite import expand, load_suite

    suite = load_suite(args.suite)
    cells = select(expand(suite), args.only)
    progress = _progress(args)
    if args.dry_run:
        return _dry_run(cells, progress)
    executor = make_executor(args.executor, jobs=args.jobs, address=args.address,
                             progress=progress)
    summary = run_suite(
        suite, results_root=Path(args.results_dir), executor=executor, progress=progress,
        cells=cells, resume_any=args.resume_any,
        on_cell=_print_cell if args.verbosity > 0 else None,
        save_transcripts=args.save_transcripts,
    )
    (summary.folder / COMMAND_FILE).write_text(args.command_line, encoding="utf-8")
    stale = f" ({summary.stale} from another code version rerun)" if summary.stale else ""
    print(
        f"{suite.name}: {summary.total} cells, {summary.skipped} already complete, "
        f"{len(summary.done)} run{stale}, {len(summary.failed)} failed -> {summary.folder}"
    )
    report = write_report(summary.folder)
    if args.verbosity >= 0:
        print(report.markdown)
        print(f"report: {report.html}")
    for label, error in summary.failed.items():
        print(f"FAILED {label}: {error}", file=sys.stderr)
    return 1 if summary.failed else 0


def attack(args: argparse.Namespace) -> int:
    """``fedbench attack``: the attacks on a transcript file's open views, records, report."""
    from fedbench.harness.replay import attack_transcript, parse_attacks
    from fedbench.harness.report import COMMAND_FILE, write_report

    summary = attack_transcript(
        Path(args.transcript), attacks=parse_attacks(args.attacks),
        results_root=Path(args.results_dir), data=args.data,
    )
    (summary.folder / COMMAND_FILE).write_text(args.command_line, encoding="utf-8")
    print(f"{summary.label}: {summary.status} -> {summary.folder}")
    report = write_report(summary.folder)
    if args.verbosity >= 0:
        print(report.markdown)
        print(f"report: {report.html}")
    if summary.error:
        print(f"FAILED {summary.label}: {summary.error}", file=sys.stderr)
    return 0 if summary.status == "ok" else 1


def _print_cell(label: str, status: str, seconds: float) -> None:
    print(f"{status:>6} {label} ({seconds:.1f} s)", flush=True)


def _dry_run(cells: list[Any], progress: bool) -> int:
    from fedbench.harness.checks import cell_problems, describe

    found = cell_problems(cells, progress=progress)
    if found:
        print(describe(found, len(cells)), file=sys.stderr)
        return 2
    print(f"{len(cells)} cells: every pipeline builds and every stage accepts its run")
    return 0


def report(args: argparse.Namespace) -> int:
    """``fedbench report``: tables, figures, report.md and report.html from records alone."""
    from fedbench.harness.report import write_report

    made = write_report(Path(args.results), out=Path(args.out) if args.out else None)
    for problem in made.problems:
        print(problem, file=sys.stderr)
    if args.verbosity >= 0:
        print(made.markdown)
    print(f"report: {made.html}")
    return 0


def show(args: argparse.Namespace) -> int:
    """``fedbench show``: one cell's summary in the terminal."""
    from fedbench.harness.records import read_results_dir
    from fedbench.harness.show import cell_summary, find_cell

    records = read_results_dir(Path(args.results))
    print(cell_summary(records, find_cell(records, args.cell)))
    return 0


def compare(args: argparse.Namespace) -> int:
    """``fedbench compare``: regressions of NEW against OLD (exit 1 on one)."""
    from fedbench.harness.compare import compare_paths

    comparison = compare_paths(Path(args.old), Path(args.new), rel_tolerance=args.rel_tolerance)
    if not comparison.changes and not comparison.missing_in_new:
        print(f"nothing to compare: no cell or benchmark of {args.old} is in {args.new}")
        return 1
    table = comparison.table(everything=args.all)
    print(table.to_string(index=False) if not table.empty else "no metric changed")
    for label in comparison.missing_in_new:
        print(f"MISSING in {args.new}: {label}")
    for label in comparison.only_in_new:
        print(f"new in {args.new}: {label}")
    print(f"{len(comparison.regressions)} regression(s), {len(comparison.missing_in_new)} "
          f"missing, {len(comparison.changes)} metrics compared")
    varying = comparison.irreproducible_regressions
    if varying:
        reasons = sorted({c.irreproducible for c in varying if c.irreproducible})
        print(f"{len(varying)} more beyond tolerance in cells that vary between identical runs "
              f"(not failing; judge them over several seeds): " + "; ".join(reasons))
    return 1 if comparison.failed else 0


def bench(args: argparse.Namespace) -> int:
    """``fedbench bench``: a Markdown table and a scaling figure from benchmark JSON."""
    from fedbench.harness.bench_report import write_bench_report

    table, files = write_bench_report(Path(args.json), Path(args.out))
    print(table)
    print("wrote " + ", ".join(str(p) for p in files))
    return 0


def listing(args: argparse.Namespace) -> int:
    """``fedbench list``: registered components with their parameters, packaged suites."""
    from fedbench.harness.suite import packaged_suites
    from fedbench.registry import (
        ADVERSARIES,
        ATTACKS,
        DATASETS,
        DEFENSES,
        MODELS,
        PARTITIONERS,
        Registry,
    )

    families: dict[str, Registry[Any]] = {
        "datasets": DATASETS, "partitioners": PARTITIONERS, "models": MODELS,
        "defenses": DEFENSES, "attacks": ATTACKS, "adversaries": ADVERSARIES,
    }
    for family in [args.family] if args.family else list(families):
        registry = families[family]
        print(f"{family}:")
        for name in registry.names():
            component = registry.get(name)
            print(f"  {name}: {component.summary}")
            for param, spec in component.parameters().items():
                print(f"      {param}: {spec}")
    if not args.family:
        print("suites:")
        for name in packaged_suites():
            print(f"  {name}")
    return 0
