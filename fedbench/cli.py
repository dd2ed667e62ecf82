"""Command line: ``fedbench run | report | list``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from fedbench.errors import FedbenchError


def _cmd_run(args: argparse.Namespace) -> int:
    from fedbench.harness.records import read_results_dir
    from fedbench.harness.runner import run_suite
    from fedbench.harness.suite import load_suite
    from fedbench.harness.tables import summary_table, to_markdown

    suite = load_suite(args.suite)
    summary = run_suite(suite, results_root=Path(args.results_dir), progress=not args.no_progress)
    print(
        f"{suite.name}: {summary.total} cells, {summary.skipped} already complete, "
        f"{len(summary.done)} run, {len(summary.failed)} failed -> {summary.folder}"
    )
    records = read_results_dir(summary.folder)
    print(to_markdown(summary_table(records)))
    for label, error in summary.failed.items():
        print(f"FAILED {label}: {error}", file=sys.stderr)
    return 1 if summary.failed else 0


def _cmd_report(args: argparse.Namespace) -> int:
    from fedbench.harness.records import read_results_dir
    from fedbench.harness.tables import summary_table, to_markdown

    records = read_results_dir(Path(args.results))
    for problem in records.problems:
        print(problem, file=sys.stderr)
    print(to_markdown(summary_table(records)))
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from fedbench.harness.suite import packaged_suites
    from fedbench.registry import ATTACKS, DATASETS, DEFENSES, MODELS, PARTITIONERS

    families = {
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
    run.set_defaults(func=_cmd_run)

    report = sub.add_parser("report", help="rebuild tables from a results folder")
    report.add_argument("results", help="a folder written by `fedbench run`, e.g. results/quick")
    report.set_defaults(func=_cmd_report)

    listing = sub.add_parser("list", help="registered components and their parameters")
    listing.add_argument("family", nargs="?",
                         choices=["datasets", "partitioners", "models", "defenses", "attacks"])
    listing.set_defaults(func=_cmd_list)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fedbench`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except FedbenchError as err:
        print(f"fedbench: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
