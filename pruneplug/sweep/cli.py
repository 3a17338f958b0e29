"""``pruneplug sweep CONFIG``: validate and run a TOML sweep, then print its summary.

:func:`add_parser` adds the subcommand to the ``pruneplug`` parser; :func:`main` runs it
stand-alone (``python -m pruneplug.sweep.cli CONFIG``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from .results import format_table
from .runner import BACKENDS, TrialError, run
from .spec import Sweep, SweepConfigError, canonical_json, flatten

EXAMPLE = """\
example sweep.toml:

  [sweep]
  trial = "standard"          # or "my_module:my_trial"
  mode = "grid"               # or "random", with samples = N and seed = S
  store = "results.jsonl"     # relative to this file

  [fixed]
  epochs = 3

  [axes]
  scorer = ["magnitude", "taylor"]
  amount = [0.5, 0.9]
  seed = [0, 1, 2]
"""


def at_least(low: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least ``low`` (refused with argparse's usage)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is below {low}")
        return value

    return parse


def varying_keys(records: list[dict[str, Any]]) -> list[str]:
    """The config keys whose value differs between ``records``, but ``seed``: the default
    summary groups (an axis of tables varies the keys inside them, ``opt.lr``)."""
    seen: dict[str, set[str]] = {}
    for record in records:
        for key, value in flatten(record["config"]).items():
            seen.setdefault(key, set()).add(canonical_json(value))
    return sorted(key for key, values in seen.items() if len(values) > 1 and key != "seed")


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add ``sweep`` to a subparsers object; sets ``func`` to :func:`command`."""
    parser = sub.add_parser(
        "sweep",
        help="run a sweep of experiments from a TOML file (resumable)",
        description=(
            "Validate a sweep (every problem reported at once), run the trials not yet in its "
            "results file, append each as it finishes, and print a summary. Rerunning resumes."
        ),
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("config", help="the sweep's TOML file")
    parser.add_argument("--backend", choices=BACKENDS, default="pool", help="default: pool")
    parser.add_argument(
        "--workers",
        type=at_least(1),
        help="processes / Ray tasks in flight (default: this machine's cores; Ray: all CPUs)",
    )
    parser.add_argument("--store", help="results file (default: the config's store)")
    parser.add_argument(
        "--retry-failed", action="store_true", help="run trials recorded as failed again"
    )
    parser.add_argument(
        "--max-retries", type=at_least(0), default=2, help="retries of a trial whose worker died"
    )
    parser.add_argument(
        "--stop-on-error",
        action="store_true",
        help="stop at the first trial that raises (default: record it and go on)",
    )
    parser.add_argument("--dry-run", action="store_true", help="validate and list the trials")
    parser.add_argument(
        "--group-by",
        nargs="+",
        default=None,
        metavar="KEY",
        help="summary groups (default: the config keys that vary, but seed)",
    )
    parser.add_argument("--metric", default="accuracy", help="summarised metric")
    parser.add_argument("--json", action="store_true", help="print every record as JSON lines")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=command)
    return parser


def command(args: argparse.Namespace) -> int:
    """Run ``pruneplug sweep`` with parsed arguments; the exit status."""
    try:
        sweep = Sweep.from_toml(args.config)
        if args.dry_run:
            _, name, configs = sweep.plan(args.backend)
            print(f"{len(configs)} trial(s) of {name}, valid:")
            print(format_table(configs))
            return 0
        results = run(
            sweep,
            backend=args.backend,
            workers=args.workers,
            store=args.store,
            retry_failed=args.retry_failed,
            max_retries=args.max_retries,
            errors="raise" if args.stop_on_error else "record",
            progress=not args.no_progress,
        )
    except SweepConfigError as exc:
        print(f"pruneplug sweep: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the results file: a folder, no permission, a full disk
        print(f"pruneplug sweep: {exc}", file=sys.stderr)
        return 2
    except TrialError as exc:
        print(f"pruneplug sweep: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "pruneplug sweep: interrupted; finished trials are saved, rerun to resume",
            file=sys.stderr,
        )
        return 130
    if args.json:
        for record in results.records:
            print(json.dumps(record, sort_keys=True))
        return 0
    print(
        f"{len(results.records)} trial(s): {results.ran} ran, {results.cached} cached, "
        f"{len(results.failed)} failed"
    )
    for record in results.failed:
        error = record["error"]
        print(f"  failed {record['config']}: {error['type']}: {error['message']}")
    if results.ok:
        group_by = args.group_by or varying_keys(results.records)
        try:
            print(format_table(results.summary(group_by, args.metric)))
        except (KeyError, ValueError) as exc:  # an unknown key or metric, a mixed group
            print(f"pruneplug sweep: {exc.args[0]}", file=sys.stderr)
            return 2
    return 1 if results.failed else 0


def main(argv: list[str] | None = None) -> int:
    """``python -m pruneplug.sweep.cli CONFIG ...``: the subcommand on its own."""
    parser = argparse.ArgumentParser(prog="pruneplug")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["sweep", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
