"""Regenerate the tables of RESULTS.md from the run store.

RESULTS.md holds hand-written text around generated tables. Each table sits between
``<!-- table:NAME -->`` and ``<!-- /table -->`` and is rebuilt from the run named in its renderer, so
every number there comes from a stored run:

    python -m workbench.store.report            # rewrite RESULTS.md in place
    python -m workbench.store.report --check    # exit 1 if RESULTS.md is stale
    python -m workbench.store.report --only toysteps toydrift   # just these tables
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from workbench.store.runs import load_run


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


def _mean_std(summary: pd.DataFrame, keys: list[str], metrics: list[str]) -> str:
    frame = summary[keys].copy()
    for metric in metrics:
        if f"{metric}_mean" in summary.columns:
            frame[metric] = [  # "–": a metric this row's variant does not have
                "–" if pd.isna(m) else f"{m:.3f} ± {s:.3f}"
                for m, s in zip(summary[f"{metric}_mean"], summary[f"{metric}_std"], strict=True)
            ]
    return _markdown(frame)


EXPERIMENT_COLUMNS: dict[str, tuple[list[str], list[str]]] = {
    "infogap": (
        ["gap", "variant"],
        [
            "concat_probe_acc",
            "linear_probe_acc",
            "text_probe_acc",
            "sep_image_probe_acc",
            "sep_concat_probe_acc",
        ],
    ),
    "temperature": (
        ["temperature"],
        ["centroid_gap", "relative_modality_gap", "modality_separability", "zero_shot_acc", "mean_R"],
    ),
    "ablation": (
        ["dataset", "variant"],
        [
            "zero_shot_acc",
            "linear_probe_acc",
            "fewshot_1_acc",
            "mean_R",
            "centroid_gap",
            "relative_modality_gap",
        ],
    ),
    "batchsize": (
        ["batch_size", "loss", "steps"],
        ["zero_shot_acc", "linear_probe_acc", "mean_R", "centroid_gap"],
    ),
}


def experiment_summary_table(kind: str, run_id: str | None = None, root=None) -> str:
    """mean ± std over seeds of the key metrics of one of the multimodal experiments."""
    keys, metrics = EXPERIMENT_COLUMNS[kind]
    summary = load_run(run_id or f"{kind}-summary", root=root).table("summary")
    extra = [c for c in ("information_gap",) if c in summary.columns and kind == "infogap"]
    return _mean_std(summary, keys + extra, metrics)


def _toy_threshold(fixed: pd.DataFrame, noise: float, batch_size: int) -> float:
    """Half the distance from theta* = 1 to InfoNCE's fixed point (``workbench.labs.toy.reach_threshold``)."""
    row = fixed[(fixed.noise == noise) & (fixed.batch_size == batch_size) & (fixed.loss == "clip")]
    return abs(float(row.fixed_point.iloc[0]) - 1.0) / 2 if len(row) else float("nan")


def toy_table(run_id: str = "toy-summary", root=None, curves_id: str = "toy-curves") -> str:
    """The one-parameter toy: fixed points (bias mode), step noise, where the runs ended, reached."""
    runs = load_run(run_id, root=root).table("runs")
    curves_run = load_run(curves_id, root=root)
    fixed, curves = curves_run.table("fixed_points"), curves_run.table("curves")
    rows = []
    for (noise, batch_size, loss), group in runs.groupby(["noise", "batch_size", "loss"], sort=False):
        threshold = _toy_threshold(fixed, noise, batch_size)
        point = fixed[(fixed.noise == noise) & (fixed.batch_size == batch_size) & (fixed.loss == loss)]
        at_one = curves[
            (curves.noise == noise)
            & (curves.batch_size == batch_size)
            & (curves.loss == loss)
            & (curves.theta == 1.0)
        ]
        fp = float(point.fixed_point.iloc[0]) if len(point) else float("nan")
        rows.append({
            "noise": f"{noise:g}",
            "B": int(batch_size),
            "loss": loss,
            "fixed point (E[g_B] = 0)": f"{fp:.3g}" if fp == fp else "unresolved",
            "E[g_B] at θ*": f"{float(at_one['mean'].iloc[0]):.3g} ± {2 * float(at_one['sem'].iloc[0]):.2g}"
            if len(at_one) else "",
            "step std at θ*": f"{float(at_one.step_std.iloc[0]):.3g}" if len(at_one) else "",
            "final θ (mean ± std)": f"{group.theta.mean():.3g} ± {group.theta.std():.3g}",
            "distance to θ* (median)": f"{group.distance.median():.3g}",
            "excess loss (median)": f"{group.excess.median():.3g}",
            "reached (distance < threshold)": f"{int((group.distance < threshold).sum())}/{len(group)}"
            f" (< {threshold:.3g})",
        })  # fmt: skip
    return _markdown(pd.DataFrame(rows))


def toy_sweep_table(prefix: str = "toy-sweep", root=None, curves_id: str = "toy-curves") -> str:
    """Budget x learning rate on the toy: runs reaching theta* per loss (every ``<prefix>-*-summary``)."""
    from workbench.store.runs import runs_root

    fixed = load_run(curves_id, root=root).table("fixed_points")
    rows = []
    for path in sorted(runs_root(root).glob(f"{prefix}-*-summary")):
        run = load_run(path.name, root=root)
        if run.status != "complete":
            continue
        runs = run.table("runs")
        for (noise, batch_size, loss), group in runs.groupby(["noise", "batch_size", "loss"], sort=False):
            threshold = _toy_threshold(fixed, noise, batch_size)
            rows.append(
                {
                    "lr": f"{run.config['lr']:g}",
                    "steps": run.config["steps"],
                    "noise": f"{noise:g}",
                    "B": int(batch_size),
                    "loss": loss,
                    "reached": f"{int((group.distance < threshold).sum())}/{len(group)}",
                    "distance to θ* (median)": f"{group.distance.median():.3g}",
                    "diverged": int(group.theta.isna().sum()),
                }
            )
    frame = pd.DataFrame(rows)
    frame = frame.assign(_lr=frame.lr.astype(float)).sort_values(["loss", "_lr", "steps"], kind="stable")
    frame = frame.drop(columns="_lr")
    return _markdown(frame)


def toy_steps_table(run_id: str = "toy-steps", root=None) -> str:
    """The shape of one step at fixed theta (``workbench.labs.toy.store_step_distribution``)."""
    summary = load_run(run_id, root=root).table("summary")
    rows = [
        {
            "noise": f"{r['noise']:g}",
            "θ": f"{r['theta']:g}",
            "loss": r["loss"],
            "full-data gradient": f"{r['global']:.3g}",
            "mean step ± 2 s.e.": f"{r['mean']:.3g} ± {2 * r['sem']:.2g}",
            "median step": f"{r['median']:.3g}",
            "steps raising θ (g < 0)": f"{100 * r['up']:.1f}%",
            "1% / 99% quantile": f"{r['q01']:.3g} / {r['q99']:.3g}",
            "downward pull from the top 1% of steps": f"{100 * r['top1_share']:.0f}%",
            "batches": int(r["batches"]),
        }
        for r in summary.to_dict("records")
    ]
    return _markdown(pd.DataFrame(rows))


def toy_drift_table(run_id: str = "toy-drift-summary", root=None) -> str:
    """Where stochastic toy runs end, per loss: which part of the E-step makes them drift above theta*."""
    runs = load_run(run_id, root=root).table("runs")
    rows = []
    for (noise, batch_size, loss), group in runs.groupby(["noise", "batch_size", "loss"], sort=False):
        theta = group.theta.dropna()
        q1, q3 = theta.quantile([0.25, 0.75])
        rows.append(
            {
                "noise": f"{noise:g}",
                "B": int(batch_size),
                "loss": loss,
                "final θ median [IQR]": f"{theta.median():.3g} [{q1:.3g}, {q3:.3g}]",
                "ended above θ*": f"{int((theta > 1).sum())}/{len(group)}",
                "distance to θ* (median)": f"{group.distance.median():.3g}",
                "diverged": int(group.theta.isna().sum()),
            }
        )
    return _markdown(pd.DataFrame(rows))


def smallbatch_table(run_id: str = "smallbatch-summary", root=None) -> str:
    """Real-data small-batch grid: accuracy (mean ± std over seeds) per task, batch size and loss."""
    summary = load_run(run_id, root=root).table("summary")
    metrics = {"views": ["knn_acc"], "captions": ["zero_shot_acc", "linear_probe_acc", "mean_R"]}
    rows = []
    for row in summary.itertuples():
        cells = {"task": row.task, "B": row.batch_size, "loss": row.loss}
        for metric in ("knn_acc", "zero_shot_acc", "linear_probe_acc", "mean_R"):
            shown = metric in metrics[row.task]
            mean, std = getattr(row, f"{metric}_mean"), getattr(row, f"{metric}_std")
            cells[metric] = f"{mean:.3f} ± {std:.3f}" if shown else ""
        rows.append(cells)
    return _markdown(pd.DataFrame(rows))


RENDERERS: dict[str, Callable[..., str]] = {
    "gradbias": gradbias_table,
    "convergence": convergence_table,
    "toy": toy_table,
    "toysweep": lambda run_id=None, root=None: toy_sweep_table(run_id or "toy-sweep", root=root),
    "smallbatch": smallbatch_table,
    "toysteps": toy_steps_table,
    "toydrift": toy_drift_table,
    **{
        kind: (lambda run_id=None, root=None, kind=kind: experiment_summary_table(kind, run_id, root))
        for kind in EXPERIMENT_COLUMNS
    },
}


def render(text: str, root=None, only: set[str] | None = None) -> str:
    """Replace every ``<!-- table:NAME[ run_id] -->...<!-- /table -->`` block with a fresh table.

    ``only``: rebuild just the tables of these names and keep the others as they are (a run store
    that holds only some of the experiments).
    """
    pattern = re.compile(r"(<!-- table:(\w+)(?: ([\w.-]+))? -->\n)(.*?)(<!-- /table -->)", re.S)

    def replace(match: re.Match) -> str:
        name, run_id = match.group(2), match.group(3)
        if only is not None and name not in only:
            return match.group(0)
        if name in RENDERERS:
            body = RENDERERS[name](run_id, root=root) if run_id else RENDERERS[name](root=root)
        elif name == "experiment" and run_id:
            body = experiment_table(run_id, root=root)
        else:
            raise ValueError(f"unknown table {name!r} in RESULTS.md; known: {[*RENDERERS, 'experiment']}")
        return f"{match.group(1)}{body}\n{match.group(5)}"

    return pattern.sub(replace, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m workbench.store.report", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--file", default=str(Path(__file__).resolve().parents[2] / "RESULTS.md"))
    parser.add_argument("--root", default=None, help="run-store root")
    parser.add_argument("--check", action="store_true", help="only check that the file is up to date")
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        default=None,
        help=f"rebuild (or check) only these tables; names: {', '.join([*RENDERERS, 'experiment'])}",
    )
    args = parser.parse_args(argv)
    known = {*RENDERERS, "experiment"}
    if args.only and not set(args.only) <= known:
        raise SystemExit(f"error: --only takes table names among {sorted(known)}, got {args.only}")
    path = Path(args.file)
    text = path.read_text()
    try:
        fresh = render(text, root=args.root, only=set(args.only) if args.only else None)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None
    if args.check:
        return 0 if fresh == text else 1
    path.write_text(fresh)
    print(f"rewrote the tables of {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
