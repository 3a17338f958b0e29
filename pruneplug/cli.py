"""The ``pruneplug`` command: list plugins, open the course, run the benchmarks."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from .registry import KINDS, Entry, Registry, UnknownPluginError, get_registry
from .sweep.cli import add_parser as add_sweep_parser
from .sweep.cli import at_least

#: ``pruneplug bench NAME`` -> modules whose ``run(quick)`` print that benchmark's tables.
BENCHMARKS = {
    "pruning": ("pruning_unstructured", "pruning_structured", "pruning_widths"),
    "augment": ("augment",),
    "widgets": ("widgets",),
    "sweep": ("sweep",),
    "deploy": ("deploy_speed", "deploy_quantize", "deploy_sparse", "deploy_semi"),
    "attention": ("pruning_attention",),
}


#: the chapters a wheel installs (setup.py copies ``course/*.ipynb`` into the built package)
INSTALLED_COURSE = Path(__file__).resolve().parent / "course"
#: the chapters of a clone, which an editable install (``make lab``) reads in place
CHECKOUT_COURSE = Path(__file__).resolve().parent.parent / "course"
#: where ``pruneplug course`` copies installed chapters to open them (relative to the cwd)
WORKING_COPY = "pruneplug-course"


def course_dir() -> Path:
    """The folder holding the course chapters: the installed copy, or else the clone's course/.

    A wheel install has them inside the package (never opened in place: ``pruneplug course``
    opens a copy); a clone or editable install has them in the repository's ``course/``.
    """
    for folder in (INSTALLED_COURSE, CHECKOUT_COURSE):
        if any(folder.glob("*.ipynb")):
            return folder
    raise SystemExit(
        f"pruneplug: no course chapters in {INSTALLED_COURSE} or {CHECKOUT_COURSE}; reinstall "
        'with `pip install --force-reinstall "pruneplug[course]"`, or clone the repository and '
        "run `make lab` there"
    )


def copy_course(target: Path) -> tuple[list[str], list[str]]:
    """Copy the chapters to ``target``, keeping any already there (they may hold your work).

    Returns the names copied and the names kept, so that the caller can say what happened.
    """
    target.mkdir(parents=True, exist_ok=True)
    copied, kept = [], []
    for chapter in sorted(course_dir().glob("*.ipynb")):
        if (target / chapter.name).exists():
            kept.append(chapter.name)
        else:
            shutil.copy2(chapter, target)
            copied.append(chapter.name)
    return copied, kept


def _report_copy(target: Path, copied: list[str], kept: list[str]) -> None:
    line = f"copied {len(copied)} chapters to {target}"
    if kept:
        line += f"; kept {len(kept)} already there (delete one to get the shipped version back)"
    print(line)


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def _json(registry: Registry, entry: Entry) -> dict[str, object]:
    """An entry as ``--json`` prints it: :meth:`Entry.to_json` and the name to ask for."""
    return {**entry.to_json(), "request_name": registry.request_name(entry)}


def _describe(entry: Entry, request_name: str) -> str:
    cls = entry.cls
    lines = [
        f"{entry.kind} {request_name!r}: {cls.description}",
        f"provider: {entry.provider} {entry.version} (plugin {entry.plugin})",
        f"class: {cls.__module__}.{cls.__qualname__}",
    ]
    if cls.params:
        rows = [[p.name, p.allowed(), repr(p.default), p.help] for p in cls.params]
        lines += ["", _table(rows, ["parameter", "allowed", "default", "help"])]
    else:
        lines.append("parameters: none")
    return "\n".join(lines)


def cmd_plugins(args: argparse.Namespace) -> int:
    registry: Registry = get_registry()
    if args.name:
        kinds = [args.kind] if args.kind else list(KINDS)
        found, errors = [], []
        for kind in kinds:
            try:
                found.append(registry.entry(kind, args.name))
            except UnknownPluginError as exc:  # unknown, or shared by providers: show them all
                same = [e for e in registry.entries(kind) if e.name == args.name]
                if same:
                    found.extend(same)
                else:
                    errors.append(str(exc))
        if not found:
            print("pruneplug: " + "\n".join(errors), file=sys.stderr)
            return 1
        if args.json:
            print(json.dumps([_json(registry, e) for e in found], indent=2))
        else:
            print("\n\n".join(_describe(e, registry.request_name(e)) for e in found))
        return 0
    entries = registry.entries(args.kind)
    if args.json:
        print(json.dumps([_json(registry, e) for e in entries], indent=2))
        return 0
    rows = [
        [e.kind, registry.request_name(e), e.cls.description, f"{e.provider} {e.version}".strip()]
        for e in entries
    ]
    print(_table(rows, ["kind", "name", "description", "provider"]))
    for f in registry.failures:
        print(f"FAILED  plugin {f.plugin!r} from {f.provider} {f.version}: {f.reason}")
    return 0


def cmd_course(args: argparse.Namespace) -> int:
    if args.copy:
        target = Path(args.copy).resolve()
        _report_copy(target, *copy_course(target))
        return 0
    if importlib.util.find_spec("jupyterlab") is None:
        print(
            'pruneplug: JupyterLab is not installed; run `pip install "pruneplug[course]"`, or '
            "`pruneplug course --copy DIR` and open DIR in a Jupyter you have",
            file=sys.stderr,
        )
        return 1
    folder = course_dir()
    if folder != CHECKOUT_COURSE:  # installed chapters: open a copy, never the package itself
        folder = Path.cwd() / WORKING_COPY
        _report_copy(folder, *copy_course(folder))
    command = [sys.executable, "-m", "jupyterlab", f"--notebook-dir={folder}"]
    command += [f"--port={args.port}"] if args.port else []
    if os.name == "posix" and os.geteuid() == 0:  # containers often run as root: Jupyter refuses
        command.append("--allow-root")
    return subprocess.call(command)


#: ``pruneplug bench`` options beyond ``--quick``, passed to ``run`` of benchmarks that take them.
BENCH_OPTIONS = ("device", "dtype", "size", "batch")


def bench_runs(name: str) -> dict[str, Callable[..., None]]:
    """The ``run`` functions of benchmark ``name``'s modules, by module."""
    return {
        module: importlib.import_module(f"pruneplug.benchmarks.{module}").run
        for module in BENCHMARKS[name]
    }


def takes(run: Callable[..., None]) -> set[str]:
    """The options of :data:`BENCH_OPTIONS` that a benchmark module's ``run`` takes."""
    return set(BENCH_OPTIONS) & set(inspect.signature(run).parameters)


def cmd_bench(args: argparse.Namespace) -> int:
    """Run each module of the benchmark that takes the options given; say which it skips.

    An option no module of the benchmark takes is refused before anything runs, naming the
    benchmarks that take it (``--size`` for ``widgets``); a module that does not take one the
    others do (the CPU-only int8 table under ``--device cuda``) is skipped with a line saying so.
    """
    options = {
        name: getattr(args, name) for name in BENCH_OPTIONS if getattr(args, name) is not None
    }
    runs = bench_runs(args.name)
    unknown = set(options) - set().union(*(takes(run) for run in runs.values()))
    if unknown:
        flags = ", ".join(f"--{option}" for option in sorted(unknown))
        takers = [
            name
            for name in BENCHMARKS
            if unknown <= set().union(*(takes(run) for run in bench_runs(name).values()))
        ]
        print(
            f"pruneplug bench {args.name} does not take {flags}; "
            f"{', '.join(takers) or 'no benchmark'} does",
            file=sys.stderr,
        )
        return 2
    for module, run in runs.items():
        missing = set(options) - takes(run)
        if missing:
            flags = ", ".join(f"--{option}" for option in sorted(missing))
            print(f"({module} skipped: it does not take {flags})\n")
            continue
        run(quick=args.quick, **options)
    return 0


def port(text: str) -> int:
    """An argparse type: a TCP port number."""
    value = at_least(1)(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{value} is above 65535, the highest port")
    return value


def device(text: str) -> str:
    """An argparse type: a device torch knows (``cpu``, ``cuda``, ``cuda:1``), checked here
    so that a typo is refused before a benchmark starts; whether it is present, the benchmark
    says."""
    import torch

    try:
        torch.device(text)
    except RuntimeError as error:
        raise argparse.ArgumentTypeError(str(error).splitlines()[0]) from None
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pruneplug",
        description="Neural-network pruning and data augmentation in PyTorch, with plugins.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    plugins = sub.add_parser("plugins", help="list plugins, or describe one")
    plugins.add_argument("name", nargs="?", help="show one plugin's parameters and provider")
    plugins.add_argument("--kind", choices=list(KINDS), help="only plugins of this kind")
    plugins.add_argument("--json", action="store_true", help="print JSON instead of a table")
    plugins.set_defaults(func=cmd_plugins)

    course = sub.add_parser(
        "course",
        help="open the course in JupyterLab",
        description=(
            "Open the course chapters in JupyterLab. In a clone (editable install) that is the "
            f"repository's course/ folder; after `pip install` it is ./{WORKING_COPY}, a copy "
            "made on first use in the current folder (chapters already there are kept, so your "
            'edits survive). JupyterLab comes with `pip install "pruneplug[course]"`.'
        ),
    )
    course.add_argument(
        "--copy",
        metavar="DIR",
        help="only copy the chapters to DIR (keeping any already there) and exit",
    )
    course.add_argument("--port", type=port, help="port for JupyterLab")
    course.set_defaults(func=cmd_course)

    bench = sub.add_parser("bench", help="run a benchmark and print its table")
    bench.add_argument("name", choices=list(BENCHMARKS))
    bench.add_argument("--quick", action="store_true", help="a tiny run (for tests)")
    bench.add_argument(
        "--device", type=device, help="where to run, e.g. cuda (augment, deploy; default cpu)"
    )
    bench.add_argument(
        "--dtype",
        choices=("float32", "bfloat16", "float16"),
        help="float32, bfloat16 or float16 (deploy's D1, default float32; D4 takes the two "
        "16-bit ones, default both)",
    )
    bench.add_argument(
        "--size", type=at_least(1), help="image height and width (augment; default 32)"
    )
    bench.add_argument("--batch", type=at_least(1), help="images per batch (augment; default 256)")
    bench.set_defaults(func=cmd_bench)

    add_sweep_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``pruneplug`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError) as error:  # pruneplug's refusals name the problem and the fix
        print(f"pruneplug: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
