"""Regenerate the tables of RESULTS.md from the run store.

RESULTS.md holds hand-written text around generated tables. Each table sits between
``<!-- table:NAME -->`` and ``<!-- /table -->`` and is rebuilt from the run named in its renderer, so
every number there comes from a stored run:

    python -m workbench.report            # rewrite RESULTS.md in place
    python -m workbench.report --check    # exit 1 if RESULTS.md is stale
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from workbench.runs import load_run


def _markdown(frame: pd.DataFrame, digits: int = 3) -> str:
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = []
    for row in frame.itertuples(index=False):
        cells = [f"{v:.{digits}f}" if isinstance(v, float) else str(v) for v in row]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join([header, rule, *rows])


def gradbias_table(run_id: str = "gradbias-results", root=None) -> str:
    """Relative bias (and its noise floor) per loss, state and batch size."""
    table = load_run(run_id, root=root).table("gradbias")
    table = table.assign(norm=table.bias / table.rel_bias)
    table["cell"] = [
        f"{r.rel_bias:.3f} ± {r.bias_floor / r.norm:.3f}" if r.norm > 0 else f"{r.rel_bias:.3f}"
        for r in table.itertuples()
    ]
    wide = table.pivot_table(
        index=["loss", "state"], columns="batch_size", values="cell", aggfunc="first", sort=False
    )
    wide.columns = [f"B={b}" for b in wide.columns]
    return _markdown(wide.reset_index())


def convergence_table(run_id: str = "convergence-summary", root=None) -> str:
    """Final progress and excess global loss per noise level, batch size and loss."""
    summary = load_run(run_id, root=root).table("summary")
    frame = pd.DataFrame(
        {
            "noise": summary.noise,
            "B": summary.batch_size,
            "loss": summary.loss,
            "progress (mean ± std)": [
                f"{m:.4f} ± {s:.4f}" for m, s in zip(summary.progress_mean, summary.progress_std, strict=True)
            ],
            "min progress": summary.progress_min,
            "excess L - L* (mean ± std)": [
                f"{m:.4f} ± {s:.4f}" for m, s in zip(summary.excess_mean, summary.excess_std, strict=True)
            ],
            "runs >= 0.99": [
                f"{int(r)}/{int(n)}" for r, n in zip(summary.reached, summary.runs, strict=True)
            ],
            "L*": summary.optimum,
        }
    )
    return _markdown(frame, digits=4)


def experiment_table(run_id: str, columns: list[str] | None = None, root=None) -> str:
    """The ``summary`` table of an experiment run (mean/std columns), as markdown."""
    summary = load_run(run_id, root=root).table("summary")
    if columns is not None:
        summary = summary[[c for c in columns if c in summary.columns]]
    return _markdown(summary)


RENDERERS: dict[str, Callable[..., str]] = {
    "gradbias": gradbias_table,
    "convergence": convergence_table,
}


def render(text: str, root=None) -> str:
    """Replace every ``<!-- table:NAME[ run_id] -->...<!-- /table -->`` block with a fresh table."""
    pattern = re.compile(r"(<!-- table:(\w+)(?: ([\w.-]+))? -->\n)(.*?)(<!-- /table -->)", re.S)

    def replace(match: re.Match) -> str:
        name, run_id = match.group(2), match.group(3)
        if name in RENDERERS:
            body = RENDERERS[name](run_id, root=root) if run_id else RENDERERS[name](root=root)
        elif name == "experiment" and run_id:
            body = experiment_table(run_id, root=root)
        else:
            raise ValueError(f"unknown table {name!r} in RESULTS.md; known: {[*RENDERERS, 'experiment']}")
        return f"{match.group(1)}{body}\n{match.group(5)}"

    return pattern.sub(replace, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workbench.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--file", default=str(Path(__file__).resolve().parents[1] / "RESULTS.md"))
    parser.add_argument("--root", default=None, help="run-store root")
    parser.add_argument("--check", action="store_true", help="only check that the file is up to date")
    args = parser.parse_args(argv)
    path = Path(args.file)
    text = path.read_text()
    try:
        fresh = render(text, root=args.root)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None
    if args.check:
        return 0 if fresh == text else 1
    path.write_text(fresh)
    print(f"rewrote the tables of {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
