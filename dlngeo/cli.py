"""The ``dlngeo`` command line.

Every subcommand is a function ``run(args) -> int`` plus a function that adds
its arguments, registered in :data:`COMMANDS` with :func:`command`::

    def _compare_arguments(parser): parser.add_argument("config")

    @command("compare", "run methods side by side from a TOML config", _compare_arguments)
    def _compare(args) -> int: ...

Global options: ``-p/--plugin MODULE`` (repeatable) loads an extra plugin
module for this run, importable from ``sys.path`` or the current directory (:func:`dlngeo.plugins.load_plugin_module`). Bad input
(``ValueError``, argument errors) exits with code 2 and one line on stderr,
``dlngeo: error: ...``; plugin faults print one ``dlngeo: warning: ...`` line each.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["COMMANDS", "command", "build_parser", "main"]

Run = Callable[[argparse.Namespace], int]
Configure = Callable[[argparse.ArgumentParser], None]

#: name -> (help, add arguments, run)
COMMANDS: dict[str, tuple[str, Configure, Run]] = {}


def command(
    name: str, help: str, configure: Configure = lambda parser: None
) -> Callable[[Run], Run]:
    """Register ``run(args) -> int`` as the subcommand ``name``."""

    def decorate(run: Run) -> Run:
        COMMANDS[name] = (help, configure, run)
        return run

    return decorate


class _Parser(argparse.ArgumentParser):
    """Argument errors as one line and exit code 2 (no usage dump)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise _BadInput(f"{self.prog}: {message}" if " " in self.prog else message)


class _BadInput(Exception):
    pass


# ------------------------------------------------------------------ plugins
def _plugins_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kind", choices=("loss", "metric", "sampler", "solver", "problem"), help="only this kind"
    )
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")


@command(
    "plugins",
    "list every loss, metric, sampler, solver and problem with the plugin and version providing it",
    _plugins_arguments,
)
def _plugins(args: argparse.Namespace) -> int:
    from .plugins import plugin_rows

    rows = [r for r in plugin_rows() if args.kind in (None, r["kind"])]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    import textwrap

    from .options import Option, format_option

    columns = ("kind", "name", "plugin", "version", "description")
    cells = [{c: r[c] or "-" for c in columns} for r in rows]  # "-": unknown version
    widths = {c: max([len(c)] + [len(r[c]) for r in cells]) for c in columns[:-1]}
    print("  ".join(c.upper().ljust(widths.get(c, 0)) for c in columns).rstrip())
    for r, cell in zip(rows, cells):
        print("  ".join(cell[c].ljust(widths.get(c, 0)) for c in columns).rstrip())
        if r["kind"] == "problem":
            continue  # a problem function takes the config's tables, not options
        # The factory's options, read from its signature (dlngeo.options.factory_options).
        shown = [format_option(Option(**o)).replace(" ", "\0") for o in r["options"]] or ["none"]
        text = textwrap.fill(
            ", ".join(shown), 100, initial_indent="    options: ", subsequent_indent=" " * 13
        )
        print(text.replace("\0", " "))
    return 0


# ------------------------------------------------------------ compare / run
def _experiment_arguments(parser: argparse.ArgumentParser, *, configs_required: bool) -> None:
    parser.add_argument(
        "configs",
        nargs="+" if configs_required else "*",
        metavar="CONFIG.toml",
        help="TOML configs, merged in order (later files override earlier ones)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config key after the files, e.g. --set network.depth=4 (value read as TOML)",
    )
    parser.add_argument(
        "--out",
        default="dlngeo-out",
        metavar="DIR",
        help="output directory (default: ./dlngeo-out); refused if it holds a run's results",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the results.json and figures of an earlier run in --out",
    )
    parser.add_argument("--no-plots", action="store_true", help="write results.json only")
    parser.add_argument(
        "--db",
        metavar="FILE",
        help="also append the results to this SQLite store (dlngeo.results.ResultsStore)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _compare_arguments(parser: argparse.ArgumentParser) -> None:
    _experiment_arguments(parser, configs_required=False)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the default comparison shrunk to a few seconds (30x30, rank 2)",
    )


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    _experiment_arguments(parser, configs_required=True)


#: Exit code after Ctrl-C (128 + SIGINT, as a shell reports it).
INTERRUPTED = 130


def _experiment_config(args: argparse.Namespace, base: dict | None, quick: bool) -> dict:
    from .experiment import DEFAULT_CONFIG, QUICK_OVERRIDES, load_config, merge_config

    if quick:
        base = merge_config(DEFAULT_CONFIG, QUICK_OVERRIDES)
    return load_config(args.configs, args.overrides, base=base)


def _run_experiment(
    args: argparse.Namespace, base: dict | None, *, name: str, quick: bool = False
) -> int:
    """Check the outputs, run the methods saving each as it ends, print the table; 130 after Ctrl-C."""
    from .comparison import Interrupted
    from .experiment import compare
    from .output import OutputError, RunOutput

    output = None
    try:
        config = _experiment_config(args, base, quick)
        output = RunOutput(args.out, db=args.db, plots=not args.no_plots, overwrite=args.overwrite)
        with output:
            comparison = compare(
                config,
                progress=not args.no_progress,
                progress_name=name,
                on_start=output.start,
                on_method=output.update,
            )
            print(comparison.table())
            paths = output.finish(comparison)
    except OutputError as exc:
        raise ValueError(f"--{exc.option}: {exc.message}") from None
    except KeyboardInterrupt as exc:  # Interrupted: during a method; else before or after them
        during = f" during {exc.label}" if isinstance(exc, Interrupted) else ""
        saved = output.summary() if output is not None else "nothing written"
        print(f"dlngeo: interrupted{during}: {saved}", file=sys.stderr)
        return INTERRUPTED
    print(f"wrote {', '.join(p.name for p in paths)} to {output.out}/")
    if output.run_id is not None:
        print(f"stored as run {output.run_id} in {args.db}")
    return 0


@command(
    "compare",
    "run methods side by side (default: deep matrix completion, Arora et al. 2019 setting)",
    _compare_arguments,
)
def _compare(args: argparse.Namespace) -> int:
    """Configs are layered over the default comparison (``dlngeo.experiment.DEFAULT_CONFIG``)."""
    return _run_experiment(args, None, name="dlngeo compare", quick=args.quick)


@command(
    "run",
    "run the methods of TOML configs (layered; --set overrides) and write results",
    _run_arguments,
)
def _run(args: argparse.Namespace) -> int:
    """Configs are layered over nothing: together they must name the whole experiment."""
    return _run_experiment(args, {}, name="dlngeo run")


# ------------------------------------------------------------ sweep / report
def _sweep_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sweep", metavar="SWEEP.toml", help="the sweep file (docs/sweeps.md)")
    parser.add_argument("--db", required=True, metavar="FILE", help="the ledger (a results store)")
    parser.add_argument("--workers", type=int, metavar="N", help="local processes (default: cores)")
    parser.add_argument("--scheduler", metavar="ADDR", help="a Dask scheduler (extra 'scale')")
    parser.add_argument("--retry-failed", action="store_true", help="run failed runs again")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


@command("sweep", "run every point of a sweep file, resumably, into a ledger", _sweep_arguments)
def _sweep(args: argparse.Namespace) -> int:
    from .sweep import SweepInterrupted, load_sweep, run_sweep

    sweep = load_sweep(args.sweep)
    try:
        summary = run_sweep(
            sweep,
            args.db,
            workers=args.workers,
            scheduler=args.scheduler,
            retry_failed=args.retry_failed,
            progress=not args.no_progress,
            plugins=args.plugin,
        )
    except SweepInterrupted as exc:
        print(f"dlngeo: interrupted: {exc}", file=sys.stderr)
        return 130
    for failure in summary.failures[:20]:
        print(f"failed: {failure}")
    print(summary.line())
    return 0


def _report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("db", metavar="DB", help="a ledger written by dlngeo sweep")
    parser.add_argument("--out", default="report", metavar="DIR", help="(default: ./report)")
    parser.add_argument("--format", choices=("files", "json"), default="files")
    parser.add_argument("--sweep", metavar="NAME", help="only this sweep of the ledger")
    parser.add_argument("--x", metavar="KEY", help="axis on the x axis of the figure")
    parser.add_argument("--y", metavar="METRIC", help="final metric on the y axis")
    parser.add_argument(
        "--by", metavar="KEY[,KEY]", help="one line per value of this axis (or of several)"
    )


@command("report", "tables (Markdown, CSV), figures or JSON of a sweep ledger", _report_arguments)
def _report(args: argparse.Namespace) -> int:
    from .sweep.report import report

    return report(
        args.db, out=args.out, fmt=args.format, sweep=args.sweep, x=args.x, y=args.y, by=args.by
    )


# --------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    """The parser with the global options and every registered subcommand."""
    from . import __version__

    parser = _Parser(prog="dlngeo", description="Deep linear networks as geometry.")
    parser.add_argument("--version", action="version", version=f"dlngeo {__version__}")
    plugin_help = "import MODULE as a dlngeo plugin for this run (repeatable)"
    parser.add_argument(
        "-p", "--plugin", action="append", default=[], metavar="MODULE", help=plugin_help
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (help, configure, _) in COMMANDS.items():
        subparser = sub.add_parser(name, help=help, description=help)
        configure(subparser)
        # -p also after the subcommand (`dlngeo compare -p mod`); a dest of its own,
        # since a subparser's defaults would overwrite the global option's list.
        subparser.add_argument(
            "-p",
            "--plugin",
            dest="command_plugins",
            action="append",
            default=[],
            metavar="MODULE",
            help=plugin_help,
        )
    return parser


def _show_warning(
    message: Any, category: type, filename: str, lineno: int, file: Any = None, line: Any = None
) -> None:
    text = " ".join(str(message).split())
    print(f"dlngeo: warning: {text}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 2 bad input, 130 after Ctrl-C)."""
    from .plugins import load_plugin_module

    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            args = build_parser().parse_args(argv)
            if not args.command:
                raise _BadInput(f"a command is required (one of: {', '.join(COMMANDS)})")
            modules = args.plugin + getattr(args, "command_plugins", [])
            if modules and os.getcwd() not in sys.path and "" not in sys.path:
                sys.path.insert(
                    0, os.getcwd()
                )  # as `python -m` does: `-p mymodule` finds ./mymodule.py
            for module in modules:
                load_plugin_module(module)
            return COMMANDS[args.command][2](args)
        except _BadInput as exc:
            print(f"dlngeo: error: {' '.join(str(exc).split())}", file=sys.stderr)
            return 2
        except ValueError as exc:
            print(f"dlngeo: error: {' '.join(str(exc).split())}", file=sys.stderr)
            return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
