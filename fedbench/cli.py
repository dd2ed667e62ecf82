"""Command line: ``fedbench run | report | compare | bench | list``."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedbench.errors import FedbenchError


def _cmd_run(args: argparse.Namespace) -> int:
    from fedbench.harness.executors import make_executor
    from fedbench.harness.report import COMMAND_FILE, write_report
    from fedbench.harness.runner import run_suite
    from fedbench.harness.suite import expand, load_suite

    suite = load_suite(args.suite)
    progress = not args.no_progress
    if args.dry_run:
        return _dry_run(expand(suite), progress)
    executor = make_executor(
        args.executor, jobs=args.jobs, address=args.address, progress=progress
    )
    summary = run_suite(
        suite, results_root=Path(args.results_dir), executor=executor, progress=progress
    )
    (summary.folder / COMMAND_FILE).write_text(args.command_line, encoding="utf-8")
    print(
        f"{suite.name}: {summary.total} cells, {summary.skipped} already complete, "
        f"{len(summary.done)} run, {len(summary.failed)} failed -> {summary.folder}"
    )
    print(write_report(summary.folder).markdown)
    for label, error in summary.failed.items():
        print(f"FAILED {label}: {error}", file=sys.stderr)
    return 1 if summary.failed else 0


def _dry_run(cells: list[Any], progress: bool) -> int:
    from fedbench.harness.checks import cell_problems, describe

    found = cell_problems(cells, progress=progress)
    if found:
        print(describe(found, len(cells)), file=sys.stderr)
        return 2
    print(f"{len(cells)} cells: every pipeline builds and every stage accepts its run")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from fedbench.harness.report import write_report

    report = write_report(Path(args.results))
    for problem in report.problems:
        print(problem, file=sys.stderr)
    print(report.markdown)
    print("wrote " + ", ".join(str(p) for p in report.files))
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from fedbench.harness.compare import compare_paths

    comparison = compare_paths(Path(args.old), Path(args.new), rel_tolerance=args.rel_tolerance)
    table = comparison.table(everything=args.all)
    print(table.to_string(index=False) if not table.empty else "no metric changed")
    for label in comparison.missing_in_new:
        print(f"MISSING in {args.new}: {label}")
    for label in comparison.only_in_new:
        print(f"new in {args.new}: {label}")
    regressions = comparison.regressions
    print(f"{len(regressions)} regression(s), {len(comparison.missing_in_new)} missing, "
          f"{len(comparison.changes)} metrics compared")
    varying = comparison.irreproducible_regressions
    if varying:
        reasons = sorted({c.irreproducible for c in varying if c.irreproducible})
        print(f"{len(varying)} more beyond tolerance in cells that vary between identical runs "
              f"(not failing; judge them over several seeds): " + "; ".join(reasons))
    return 1 if comparison.failed else 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from fedbench.harness.bench_report import write_bench_report

    table, files = write_bench_report(Path(args.json), Path(args.out))
    print(table)
    print("wrote " + ", ".join(str(p) for p in files))
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from fedbench.harness.suite import packaged_suites
    from fedbench.registry import ATTACKS, DATASETS, DEFENSES, MODELS, PARTITIONERS, Registry

    families: dict[str, Registry[Any]] = {
        "datasets": DATASETS, "partitioners": PARTITIONERS, "models": MODELS,
        "defenses": DEFENSES, "attacks": ATTACKS,
    }
    chosen = [args.family] if args.family else list(families)
    for family in chosen:
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


def build_parser() -> argparse.ArgumentParser:
    """The ``fedbench`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="fedbench",
        description="Benchmark privacy defenses for federated learning against attacks.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a suite (default: the offline 'quick' suite)")
    run.add_argument("suite", nargs="?", default="quick",
                     help="packaged suite name or YAML file (suite or single experiment)")
    run.add_argument("--results-dir", default="results",
                     help="records go to RESULTS_DIR/<suite>/ (default: results)")
    run.add_argument("--no-progress", action="store_true", help="hide progress bars")
    run.add_argument("--jobs", type=int, default=1,
                     help="cells run in parallel on a local process pool (default 1)")
    run.add_argument("--executor", choices=["local", "ray"], default="local",
                     help="local (in-process or --jobs pool) or ray (the 'ray' extra)")
    run.add_argument("--address", default=None,
                     help="Ray cluster address for --executor ray (default: start Ray locally)")
    run.add_argument("--dry-run", action="store_true",
                     help="build every cell's pipeline and run every compatibility check, "
                          "train nothing (exit 2 listing every problem)")
    run.set_defaults(func=_cmd_run)

    report = sub.add_parser("report", help="rebuild tables from a results folder")
    report.add_argument("results", help="a folder written by `fedbench run`, e.g. results/quick")
    report.set_defaults(func=_cmd_report)

    compare = sub.add_parser(
        "compare", help="fail (exit 1) when NEW is worse than OLD beyond the suite's tolerances"
    )
    compare.add_argument("old", help="results folder or pytest-benchmark JSON (baseline)")
    compare.add_argument("new", help="results folder or pytest-benchmark JSON (candidate)")
    compare.add_argument("--all", action="store_true", help="list unchanged metrics too")
    compare.add_argument("--rel-tolerance", type=float, default=0.25,
                         help="benchmark JSON: allowed relative change of a declared ratio")
    compare.set_defaults(func=_cmd_compare)

    bench = sub.add_parser(
        "bench", help="Markdown table and log-log scaling figure from pytest-benchmark JSON"
    )
    bench.add_argument("json", help="a --benchmark-json file")
    bench.add_argument("--out", default="results/benchmarks",
                       help="folder for benchmarks.md and scaling.png "
                            "(default: results/benchmarks)")
    bench.set_defaults(func=_cmd_bench)

    listing = sub.add_parser("list", help="registered components and their parameters")
    listing.add_argument("family", nargs="?",
                         choices=["datasets", "partitioners", "models", "defenses", "attacks"])
    listing.set_defaults(func=_cmd_list)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fedbench`` console script."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(arguments)
    args.command_line = shlex.join(["fedbench", *arguments])
    try:
        return int(args.func(args))
    except FedbenchError as err:
        print(f"fedbench: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
