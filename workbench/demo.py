"""The main job on bundled data (``make demo``): the two labs of the workbench, in small versions.

Each part writes a run into the run store (``data/runs`` or ``$WORKBENCH_HOME/runs``); the sizes are
chosen so the whole demo takes a few minutes on a 2-core CPU. Run the full-size experiments with
the commands in RESULTS.md.
"""

from __future__ import annotations

import argparse
import time

import pandas as pd

from workbench.convergence import run_convergence
from workbench.experiments import ablation_experiment
from workbench.gradbias import run_gradbias
from workbench.runs import runs_root
from workbench.train import TrainConfig, train


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workbench.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=None, help="run-store root")
    parser.add_argument("--quick", action="store_true", help="a smaller demo (for tests)")
    args = parser.parse_args(argv)
    quick = args.quick
    pd.set_option("display.width", 160)
    started = time.perf_counter()

    print("1/4  SimCLR (ntxent) on sklearn digits, two augmented views")
    config = TrainConfig(loss="ntxent", batch_size=128, steps=20 if quick else 300, model_size="small")
    run = train(config, run_id="demo-digits-ntxent" + ("-quick" if quick else ""), root=args.root)
    last = run.metrics.iloc[-1]
    print(f"     {run.run_id}: kNN accuracy {last.knn_acc:.3f}, global loss {last.global_loss:.3f}")

    print("2/4  gradient bias against batch size, every loss (synthetic pairs, N=256)")
    table = run_gradbias(
        losses=["clip", "ntxent", "sogclr", "bayes"] if quick else None,
        batch_sizes=(4, 256) if quick else (4, 16, 64, 256),
        repeats=5 if quick else 30,
        bias_repeats=50 if quick else 500,
        pretrain_steps=10 if quick else 100,
        run_id="demo-gradbias" + ("-quick" if quick else ""),
        root=args.root,
    )
    table["rel_floor"] = table.bias_floor / (table.bias / table.rel_bias)
    view = table.pivot_table(
        index=["loss", "state"], columns="batch_size", values=["rel_bias", "rel_floor"], sort=False
    )
    print("     relative bias ||E g_B - g*|| / ||g*|| (rel_floor: what sampling noise alone would show):")
    print(view.round(3).to_string())

    print("3/4  the article's small-batch experiment (reduced grid; RESULTS.md has the full one)")
    summary = run_convergence(
        noise_levels=(0.5,) if quick else (0.0, 0.5),
        batch_sizes=(8,),
        seeds=1 if quick else 3,
        steps=30 if quick else 500,
        reference_seeds=1 if quick else 2,
        reference_steps=30 if quick else 1000,
        tag="demo-convergence" + ("-quick" if quick else ""),
        root=args.root,
    )
    print(
        summary[["noise", "batch_size", "loss", "progress_mean", "progress_std", "reached", "runs"]].round(4)
    )

    print("4/4  modality structures on captioned digits: CLIP and the three regularizers (1 seed)")
    ablation = ablation_experiment(
        seeds=1,
        steps=10 if quick else 500,
        text_encoder="tokens" if quick else "auto",
        tag="demo-ablation" + ("-quick" if quick else ""),
        root=args.root,
    )
    columns = ["variant", "zero_shot_acc_mean", "linear_probe_acc_mean", "centroid_gap_mean"]
    print(ablation[columns].round(3).to_string(index=False))
    print(f"\nDone in {time.perf_counter() - started:.0f} s. Runs are in {runs_root(args.root)}.")
    print('Inspect them with: python -c "from workbench.runs import runs_table; print(runs_table())"')
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
