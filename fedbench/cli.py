"""Command line: ``fedbench run | attack | report | show | compare | bench | list``.

Exit codes: 0 everything ran and nothing regressed; 1 a cell failed or ``compare`` found a
regression (or nothing to compare); 2 a usage or configuration error (nothing ran). The
commands themselves are in :mod:`fedbench.commands`.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence

from fedbench import __version__, commands
from fedbench.errors import FedbenchError

DEFAULT_RESULTS = "runs"  # committed reference results live in results/, never written by default
Subparsers = argparse._SubParsersAction  # the type argparse gives add_subparsers' result


def _loudness() -> argparse.ArgumentParser:
    """-q / -v, accepted by every command."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_mutually_exclusive_group()
    group.add_argument("-q", "--quiet", action="store_const", const=-1, dest="verbosity",
                       default=0, help="print only the summary line and errors")
    group.add_argument("-v", "--verbose", action="store_const", const=1, dest="verbosity",
                       help="also print every cell as it finishes")
    return parent


def _run_parser(sub: Subparsers[argparse.ArgumentParser]) -> None:
    run = sub.add_parser(
        "run", parents=[_loudness()], help="run a suite (default: the offline 'quick' suite)")
    run.add_argument("suite", nargs="?", default="quick",
                     help="packaged suite name or YAML file (suite or single experiment)")
    run.add_argument("--results-dir", default=DEFAULT_RESULTS,
                     help=f"records go to RESULTS_DIR/<suite>/ (default: {DEFAULT_RESULTS}; the "
                          "committed reference results are in results/)")
    run.add_argument("--only", action="append", metavar="PATTERN", default=[],
                     help="run only the cells whose label matches this shell pattern, e.g. "
                          "'digits-mia/secagg*' (repeatable)")
    run.add_argument("--jobs", type=int, default=1,
                     help="cells run in parallel on a local process pool (default 1)")
    run.add_argument("--executor", choices=["local", "ray"], default="local",
                     help="local (in-process or --jobs pool) or ray (the 'ray' extra)")
    run.add_argument("--address", default=None,
                     help="Ray cluster address for --executor ray (default: start Ray locally)")
    run.add_argument("--dry-run", action="store_true",
                     help="build every cell's pipeline and run every compatibility check, "
                          "train nothing (exit 2 listing every problem)")
    run.add_argument("--resume-any", action="store_true",
                     help="reuse complete cells recorded by any code version (default: only "
                          "those of this code version; the others rerun)")
    run.add_argument("--no-progress", action="store_true",
                     help="hide progress bars (they show only on a terminal anyway)")
    run.add_argument("--save-transcripts", action="store_true",
                     help="write each cell's transcript (what the server saw) under "
                          "RESULTS_DIR/<suite>/transcripts/, for `fedbench attack`")
    run.set_defaults(func=commands.run)


def _attack_parser(sub: Subparsers[argparse.ArgumentParser]) -> None:
    attack = sub.add_parser(
        "attack", parents=[_loudness()],
        help="run attacks on a transcript file (what a server saw in a recorded run)")
    attack.add_argument("transcript", help="a transcript folder (or its transcript.json)")
    attack.add_argument("--attacks", required=True,
                        help="comma-separated attack names (dlg,idlg,lira), or a YAML list of "
                             "components: '[{name: idlg, iterations: 150}, lira]'")
    attack.add_argument("--data", default=None,
                        help="registered dataset for the attacker's population, membership "
                             "candidates and scoring (default: the one the transcript names)")
    attack.add_argument("--results-dir", default=DEFAULT_RESULTS,
                        help="records go to RESULTS_DIR/attack-<transcript folder>/ "
                             f"(default: {DEFAULT_RESULTS})")
    attack.set_defaults(func=commands.attack)


def _results_parsers(sub: Subparsers[argparse.ArgumentParser]) -> None:
    report = sub.add_parser(
        "report", parents=[_loudness()], help="rebuild tables, figures and report.html")
    report.add_argument("results", help="a folder written by `fedbench run`, e.g. runs/quick")
    report.add_argument("--out", default=None,
                        help="write the report there instead of into the results folder")
    report.set_defaults(func=commands.report)

    show = sub.add_parser(
        "show", parents=[_loudness()], help="one cell's summary in the terminal")
    show.add_argument("results", help="a results folder")
    show.add_argument("cell", help="the cell's id (or its prefix) or its label")
    show.set_defaults(func=commands.show)

    compare = sub.add_parser(
        "compare", parents=[_loudness()],
        help="fail (exit 1) when NEW is worse than OLD beyond OLD's tolerances",
    )
    compare.add_argument("old", help="results folder or pytest-benchmark JSON (baseline)")
    compare.add_argument("new", help="results folder or pytest-benchmark JSON (candidate)")
    compare.add_argument("--all", action="store_true", help="list unchanged metrics too")
    compare.add_argument("--rel-tolerance", type=float, default=0.25,
                         help="benchmark JSON: allowed relative change of a declared ratio")
    compare.set_defaults(func=commands.compare)

    bench = sub.add_parser(
        "bench", parents=[_loudness()],
        help="Markdown table and log-log scaling figure from pytest-benchmark JSON",
    )
    bench.add_argument("json", help="a --benchmark-json file")
    bench.add_argument("--out", default="results/benchmarks",
                       help="folder for benchmarks.md and scaling.png "
                            "(default: results/benchmarks)")
    bench.set_defaults(func=commands.bench)

    listing = sub.add_parser(
        "list", parents=[_loudness()], help="registered components and their parameters")
    listing.add_argument("family", nargs="?",
                         choices=["datasets", "partitioners", "models", "defenses", "attacks",
                                  "adversaries"])
    listing.set_defaults(func=commands.listing)


def build_parser() -> argparse.ArgumentParser:
    """The ``fedbench`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="fedbench",
        description="Benchmark privacy defenses for federated learning against attacks.",
        epilog="exit codes: 0 ok; 1 failed cells, regressions or nothing to compare; "
               "2 usage or configuration error",
    )
    parser.add_argument("--version", action="version", version=f"fedbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _run_parser(sub)
    _attack_parser(sub)
    _results_parsers(sub)
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
    except BrokenPipeError:  # `fedbench show ... | head`: the reader left, nothing is wrong
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
