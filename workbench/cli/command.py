"""The ``workbench`` command: train, run the labs, inspect runs, regenerate the report, run notebooks and
sweeps, open the dashboard.

    workbench train --dataset digits_views --loss ntxent --steps 300   # the flags of TrainConfig
    workbench lab gradbias --losses clip bayes --batch-sizes 4 64
    workbench lab convergence --noise 0 0.5 --workers 2               # the flags of ConvergenceGrid
    workbench lab modality temperature --temperatures 0.1 1   # or infogap, ablation, structure, batchsize
    workbench lab embeddings pairs.npz                                # the geometry report of a file
    workbench runs list | runs show RUN_ID
    workbench report [--check]                                        # RESULTS.md's tables
    workbench notebook list | params NAME | run NAME -p KEY VALUE
    workbench sweep NAME --grid KEY=V1,V2
    workbench app

A lab grid's flags are built from its dataclass fields (``workbench.labs.grid.add_grid_arguments``), as
the trainer's are from ``TrainConfig``; ``--plan`` lists a grid's runs without training them. Every
subcommand has ``--help``. ``workbench gradbias``, ``workbench convergence`` and ``workbench experiments``
are the older spellings of ``workbench lab gradbias``, ``lab convergence`` and ``lab modality``. Bad
input exits with status 2 and one line, ``workbench: error: ...``, on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

# Commands that hand their arguments to a module's own command line: (words, module, help).
MODULE_COMMANDS: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (("train",), "workbench.training.trainer", "train one model and write it to the run store (resumable)"),
    (("report",), "workbench.store.report", "regenerate RESULTS.md's tables from the run store"),
    (("lab", "gradbias"), "workbench.labs.gradbias", "gradient bias, variance and MSE against batch size"),
)
ALIASES: dict[str, tuple[str, ...]] = {
    "gradbias": ("lab", "gradbias"),
    "convergence": ("lab", "convergence"),
    "experiments": ("lab", "modality"),
}
APP_FILE = Path(__file__).resolve().parents[2] / "app" / "streamlit_app.py"


class UsageError(ValueError):
    """Bad command-line input; reported as one line."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors end the command with one line (see :func:`main`)."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(message)


def _fail(message: str) -> int:
    print(f"workbench: error: {message}", file=sys.stderr)
    return 2


@contextlib.contextmanager
def _one_line_errors() -> Iterator[None]:
    """Usage errors of a module's own command line (its argparse errors and its ``SystemExit("error:
    ...")``) become :class:`UsageError`, so they too end in one line."""
    saved = argparse.ArgumentParser.error

    def error(parser: argparse.ArgumentParser, message: str):
        raise UsageError(message)

    argparse.ArgumentParser.error = error  # type: ignore[method-assign]
    try:
        yield
    except SystemExit as exit_:
        if isinstance(exit_.code, str):
            raise UsageError(exit_.code.removeprefix("error: ")) from None
        raise
    finally:
        argparse.ArgumentParser.error = saved  # type: ignore[method-assign]


def _module_main(module: str, argv: list[str]) -> int:
    main = __import__(module, fromlist=["main"]).main
    with _one_line_errors():
        return main(argv)


# -- labs -----------------------------------------------------------------------------------------------


def _lab_grid(args: argparse.Namespace) -> int:
    from workbench.labs.grid import run_grid_command

    return run_grid_command(args)


def _lab_embeddings(args: argparse.Namespace) -> int:
    from workbench.labs.embedding_report import embedding_report

    run = embedding_report(
        args.path, run_id=args.run_id, root=args.root, seed=args.seed, max_pairs=args.max_pairs
    )
    with pd.option_context("display.width", 200, "display.max_rows", None):
        print(run.table("geometry").to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"run {run.run_id}: {run.status} -> {run.path}")
    return 0


def _add_labs(labs: argparse._SubParsersAction) -> None:
    """The grid labs and the embedding report (their modules import torch, so only for ``workbench lab``)."""
    from workbench.labs import convergence, fusion, modality
    from workbench.labs.grid import add_grid_parser

    grids = {
        ("convergence",): (
            convergence.ConvergenceGrid,
            (convergence.ConvergenceGrid.__doc__ or "").split("\n\n")[0],
        ),
        ("modality", "experiments"): (
            modality.COMMANDS,
            "the multimodal lab's grids: " + ", ".join(modality.COMMANDS),
        ),
        ("fusion",): (
            fusion.FusionStructureGrid,
            (fusion.FusionStructureGrid.__doc__ or "").split("\n\n")[0],
        ),
    }
    for (name, *aliases), (lab, text) in grids.items():
        parser = labs.add_parser(name, aliases=aliases, help=text, description=text)
        add_grid_parser(parser, lab)
        parser.set_defaults(handler=_lab_grid)
    text = "the geometry report of a file of paired embeddings, stored as a run"
    embeddings = labs.add_parser("embeddings", help=text, description=text)
    embeddings.add_argument("path", help=".npz or .parquet file with image_emb and text_emb")
    embeddings.add_argument("--seed", type=int, default=0, help="seed of the subsample of the pair measures")
    embeddings.add_argument("--max-pairs", type=int, default=2000, help="pairs used by the O(n^2) measures")
    embeddings.add_argument("--run-id", default=None, help="default: derived from the file's content")
    embeddings.add_argument("--root", default=None, help="run-store root")
    embeddings.set_defaults(handler=_lab_embeddings)


# -- runs -----------------------------------------------------------------------------------------------


def _runs_list(args: argparse.Namespace) -> int:
    from workbench.store.runs import runs_table

    table = runs_table(args.root)
    if table.empty:
        print("no runs yet")
        return 0
    if args.status:
        table = table[table["status"] == args.status]
    if args.match:
        table = table[table["run_id"].str.contains(args.match, regex=False)]
    columns = [
        c
        for c in ("run_id", "status", "writer", "kind", "dataset", "loss", "batch_size", "step", "created")
        if c in table.columns
    ]
    with pd.option_context("display.width", 200, "display.max_rows", None, "display.max_colwidth", 60):
        print(table[columns].tail(args.limit).to_string(index=False))
    return 0


def _runs_show(args: argparse.Namespace) -> int:
    from workbench.store.runs import RUN_ID_PATTERN, load_run

    if not re.fullmatch(RUN_ID_PATTERN, args.run_id):
        raise UsageError(f"run_id {args.run_id!r} is not a run id; it must match {RUN_ID_PATTERN}")
    run = load_run(args.run_id, root=args.root)
    print(f"run {run.run_id}  [{run.status_text}]  step {run.step}  created {run.created}\n  {run.path}")
    if run.error:
        print(f"error: {run.error}")
    for problem in run.problems():
        print(f"warning: {problem}")
    print("config:", json.dumps(run.config, indent=2, default=str))
    if run.summary:
        print("summary:", json.dumps(run.summary, indent=2, default=str))
    metrics = run.metrics
    if not metrics.empty:
        with pd.option_context("display.width", 200, "display.max_columns", 12):
            print(f"metrics ({len(metrics)} rows, last 5):\n{metrics.tail(5).to_string(index=False)}")
    if run.tables:
        print("tables:", ", ".join(run.tables))
    if run.snapshot_steps:
        print(
            f"snapshots: {len(run.snapshot_steps)} (steps {run.snapshot_steps[0]}..{run.snapshot_steps[-1]})"
        )
    for notebook in run.notebooks:
        print(f"written by notebook: {notebook['path']}")
    return 0


# -- notebooks ------------------------------------------------------------------------------------------


def _parameters(pairs: list[list[str]] | None) -> dict[str, str]:
    values: dict[str, str] = {}
    for key, value in pairs or []:
        if key in values:
            raise UsageError(f"parameter {key!r} is given twice")
        values[key] = value
    return values


def _notebook_list(args: argparse.Namespace) -> int:
    from workbench.cli.notebooks import notebook_names, notebook_parameters

    for name in notebook_names():
        print(name)
        if args.verbose:
            for p in notebook_parameters(name).values():
                print(f"    {p.name}: {p.type} = {p.default!r}  # {p.help}")
    return 0


def _notebook_params(args: argparse.Namespace) -> int:
    from workbench.cli.notebooks import notebook_parameters, resolve_notebook

    print(f"{resolve_notebook(args.name).stem}:")
    for p in notebook_parameters(args.name).values():
        print(f"  {p.name}: {p.type} = {p.default!r}  # {p.help}")
    return 0


def _notebook_run(args: argparse.Namespace) -> int:
    from workbench.cli.notebooks import run_notebook

    output = run_notebook(
        args.name, _parameters(args.parameter), args.home, progress=not args.quiet, log_output=args.log_output
    )
    print(f"executed notebook: {output}")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from workbench.cli.notebooks import parse_grid, run_sweep

    grid = parse_grid(args.name, args.grid or [])
    table = run_sweep(
        args.name,
        grid,
        _parameters(args.parameter),
        args.home,
        executor=args.executor,
        workers=args.workers,
        ray_address=args.ray_address,
    )
    shown = [c for c in table.columns if c.startswith("param.")] + ["status", "seconds", "notebook"]
    with pd.option_context("display.width", 200, "display.max_colwidth", 80):
        print(table[shown].to_string(index=False))
    failed = table[table.status != "complete"]
    for error in failed.error:
        print(f"failed: {error}", file=sys.stderr)
    return 1 if len(failed) else 0


# -- app ------------------------------------------------------------------------------------------------


def _app(args: argparse.Namespace) -> int:
    if not APP_FILE.is_file():
        raise UsageError(f"no dashboard at {APP_FILE}; `workbench app` needs the source checkout")
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP_FILE),
        "--server.address",
        args.address,
        "--server.port",
        str(args.port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
    ]
    env = dict(os.environ)
    if args.home:
        env["WORKBENCH_HOME"] = str(Path(args.home).resolve())
    print(f"dashboard on http://{args.address}:{args.port}  (Ctrl+C stops it)", flush=True)
    try:
        return subprocess.call(command, env=env)
    except KeyboardInterrupt:
        return 0


# -- parser ---------------------------------------------------------------------------------------------


def _add_parameter_option(parser: argparse.ArgumentParser, text: str) -> None:
    parser.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("KEY", "VALUE"), help=text)


def build_parser(labs: bool = True) -> argparse.ArgumentParser:
    """The command's parser; ``labs=False`` leaves out the lab grids' flags (they import torch)."""
    parser = _Parser(prog="workbench", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    texts = {words: (module, text) for words, module, text in MODULE_COMMANDS}
    module, text = texts[("train",)]
    commands.add_parser("train", help=f"{text} (`workbench train --help`; same as python -m workbench.train)")
    lab = commands.add_parser(
        "lab", help="run a lab: gradbias, convergence, modality (its grids), fusion, embeddings"
    )
    lab_commands = lab.add_subparsers(dest="lab", metavar="LAB", required=True)
    module, text = texts[("lab", "gradbias")]
    lab_commands.add_parser("gradbias", help=f"{text} (same as python -m {module})")
    if labs:
        _add_labs(lab_commands)
    module, text = texts[("report",)]
    commands.add_parser("report", help=f"{text} (same as python -m {module})")

    runs = commands.add_parser("runs", help="list and inspect the run store").add_subparsers(
        dest="runs_command", metavar="ACTION", required=True
    )
    listing = runs.add_parser("list", help="a table of runs")
    listing.add_argument(
        "--root", default=None, help="run-store root (default: $WORKBENCH_HOME/runs or data/runs)"
    )
    listing.add_argument(
        "--status", choices=("running", "stopped", "complete", "failed", "invalid"), default=None
    )
    listing.add_argument("--match", default=None, help="only run ids containing this text")
    listing.add_argument("--limit", type=int, default=50, help="show the newest N rows (default 50)")
    listing.set_defaults(handler=_runs_list)
    show = runs.add_parser("show", help="config, status, summary, metrics and provenance of one run")
    show.add_argument("run_id")
    show.add_argument("--root", default=None, help="run-store root")
    show.set_defaults(handler=_runs_show)

    home_help = "data home: runs go to HOME/runs, executed notebooks to HOME/notebook-runs (default: data/)"
    notebook = commands.add_parser("notebook", help="list and run the parameterised notebooks headless")
    nb = notebook.add_subparsers(dest="notebook_command", metavar="ACTION", required=True)
    nb_list = nb.add_parser("list", help="the notebooks")
    nb_list.add_argument("-v", "--verbose", action="store_true", help="with their parameters")
    nb_list.set_defaults(handler=_notebook_list)
    nb_params = nb.add_parser("params", help="a notebook's parameters, types, defaults and help")
    nb_params.add_argument(
        "name", help="notebook stem, slug or number, e.g. 01_gradient_bias, gradient_bias, 1"
    )
    nb_params.set_defaults(handler=_notebook_params)
    nb_run = nb.add_parser("run", help="execute a notebook with papermill")
    nb_run.add_argument("name", help="notebook stem, slug or number")
    _add_parameter_option(nb_run, "set a parameter (lists comma-separated); repeatable")
    nb_run.add_argument("--home", default=None, help=home_help)
    nb_run.add_argument("--quiet", action="store_true", help="no progress bar")
    nb_run.add_argument("--log-output", action="store_true", help="echo the notebook's output")
    nb_run.set_defaults(handler=_notebook_run)

    sweep = commands.add_parser("sweep", help="one notebook execution per grid point, in parallel")
    sweep.add_argument("name", help="notebook stem, slug or number")
    sweep.add_argument(
        "--grid",
        action="append",
        metavar="KEY=V1,V2",
        help="a swept parameter (repeatable; the grid is their product; ';' separates list values)",
    )
    _add_parameter_option(sweep, "a parameter shared by every point; repeatable")
    sweep.add_argument(
        "--executor",
        choices=("local", "ray"),
        default="local",
        help="local processes, or Ray tasks (fan out over a cluster)",
    )
    sweep.add_argument("--workers", type=int, default=None, help="concurrent executions (default: CPUs)")
    sweep.add_argument(
        "--ray-address", default=None, help="a running Ray cluster (default: start a local one)"
    )
    sweep.add_argument("--home", default=None, help=home_help)
    sweep.set_defaults(handler=_sweep)

    app = commands.add_parser("app", help="open the Streamlit dashboard on the run store")
    app.add_argument("--address", default="127.0.0.1", help="bind address (default: this machine only)")
    app.add_argument("--port", type=int, default=8501)
    app.add_argument("--home", default=None, help="data home whose runs/ the dashboard reads")
    app.set_defaults(handler=_app)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ALIASES:
        argv = [*ALIASES[argv[0]], *argv[1:]]
    from workbench.cli.notebooks import NotebookError

    try:
        for words, module, _ in MODULE_COMMANDS:
            if tuple(argv[: len(words)]) == words:
                return _module_main(module, argv[len(words) :])
        args = build_parser(labs=argv[:1] == ["lab"]).parse_args(argv)
        return args.handler(args)
    except (UsageError, NotebookError, ValueError, FileNotFoundError) as error:
        return _fail(str(error).splitlines()[0] if str(error) else type(error).__name__)


if __name__ == "__main__":
    raise SystemExit(main())
