"""The main job (``make demo``): run every notebook headless on the bundled data, then point to the dashboard.

Each notebook runs with its default parameters, sized for a 2-core CPU, through the same papermill runner
as ``workbench notebook run``. Runs land in the run store (``data/runs`` or ``$WORKBENCH_HOME/runs``) and
the executed notebooks, outputs and figures included, in ``data/notebook-runs``. A notebook that fails
does not stop the others; the demo exits 1 at the end if any failed. ``--quick`` uses each notebook's
tiny parameters (``TINY_PARAMETERS``), the ones the tests use.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from workbench.cli.notebooks import NotebookError, notebook_names, run_notebook
from workbench.store.runs import data_home

# Parameters that run each notebook in seconds: for a smoke test of the whole chain, not for science.
TINY_PARAMETERS: dict[str, dict[str, object]] = {
    "01_gradient_bias": {
        "losses": ["clip", "bayes"],
        "batch_sizes": [4, 32],
        "num_samples": 32,
        "repeats": 3,
        "bias_repeats": 5,
        "pretrain_steps": 2,
    },
    "02_small_batch_convergence": {
        "noise_levels": [0.5],
        "batch_sizes": [4],
        "losses": ["clip", "bayes"],
        "seeds": 2,
        "steps": 20,
        "num_samples": 32,
        "reference_seeds": 1,
        "reference_steps": 40,
        "toy_step_partitions": 1,
        "workers": 1,
    },
    "03_modality_structure": {
        "regularizers": ["bridge"],
        "weights": [0.5],
        "steps": 2,
        "snapshots": 2,
        "batch_size": 32,
        "seeds": 1,
        "text_encoder": "tokens",
        "workers": 1,
    },
    "04_batch_size_sweep": {
        "losses": ["clip"],
        "batch_sizes": [16, 32],
        "steps": 1,
        "seeds": 1,
        "text_encoder": "tokens",
        "workers": 1,
    },
    "05_your_embeddings": {"max_points": 40, "bridge_pairs": 2},
    "06_fusion": {
        "regularizers": ["bridge"],
        "model_size": "tiny",
        "steps": 2,
        "batch_size": 32,
        "seeds": 1,
        "per_kind_train": 10,
        "per_kind_test": 6,
        "workers": 1,
    },
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m workbench.cli.demo", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--home", default=None, help="data home (default: $WORKBENCH_HOME or data/)")
    parser.add_argument("--quick", action="store_true", help="tiny parameters: a smoke test in seconds")
    parser.add_argument("--only", nargs="+", default=None, help="run only these notebooks (stem or number)")
    args = parser.parse_args(argv)
    home = Path(args.home).resolve() if args.home else data_home().resolve()
    names = notebook_names() if args.only is None else args.only
    started = time.perf_counter()
    failures = []
    for position, name in enumerate(names, 1):
        parameters = TINY_PARAMETERS.get(name, {}) if args.quick else {}
        print(f"[{position}/{len(names)}] {name}", flush=True)
        began = time.perf_counter()
        try:
            output = run_notebook(name, parameters, home, progress=True)
        except NotebookError as error:
            failures.append(name)
            print(f"    FAILED: {error}", flush=True)
            continue
        print(f"    done in {time.perf_counter() - began:.0f} s -> {output}", flush=True)

    elapsed = time.perf_counter() - started
    print(f"\n{len(names) - len(failures)} of {len(names)} notebooks ran in {elapsed:.0f} s.")
    print(f"Runs are in {home / 'runs'}; executed notebooks in {home / 'notebook-runs'}.")
    home_flag = "" if args.home is None else f" --home {home}"
    print(
        "Open the dashboard:  make app   (or: .venv/bin/workbench app" + home_flag + ")\n"
        "                     then browse to http://localhost:8501\n"
        "Step through the notebooks:  .venv/bin/jupyter lab notebooks/"
    )
    if failures:
        print(f"Failed: {', '.join(failures)}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
