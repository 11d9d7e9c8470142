"""Shared plumbing of the dashboard pages: the run store, run picking, sources, caching, uploads.

Everything here reads; nothing trains. The store is ``workbench.store.runs.runs_root()`` (so
``$WORKBENCH_HOME`` points the dashboard at another store), run ids coming from the URL or from
widgets are checked against the run-id pattern and opened through ``workbench.store.runs.load_run``, which
refuses anything that resolves outside the store.

A *source* is what the geometry pages draw: a run with snapshots, or the user's uploaded file. Both
offer the same interface (:class:`Source`), so the pages and ``app.views`` do not care which it is.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from app.compare import LABEL_HELP, run_labels
from workbench.store.runs import RUN_ID_PATTERN, Run, list_runs, load_run, runs_root
from workbench.viz import embedding as emb
from workbench.viz.projection import Projection, fit_projection, run_projection, snapshot_geometry

#: Largest upload accepted (also ``server.maxUploadSize`` in .streamlit/config.toml, in MB).
MAX_UPLOAD_BYTES = 200 * 1024 * 1024
#: Most pairs an uploaded file may hold: projections and the O(n^2) measures stay interactive.
MAX_UPLOAD_ROWS = 50_000
#: Largest embedding dimension of an upload (the loader's default cap).
MAX_UPLOAD_DIM = 65_536
#: Most memory decoding an upload may take, checked from its headers before anything is decoded.
MAX_UPLOAD_DECODED_BYTES = 1 * 2**30
UPLOAD_TYPES = ("npz", "parquet")
UPLOAD_KEY = "uploaded_embeddings"
SELECTED_KEY = "selected_runs"
METHOD_LABELS = {
    "frozen_pca": "PCA, one basis for all checkpoints",
    "pca": "PCA per checkpoint",
    "aligned_umap": "AlignedUMAP across checkpoints",
    "umap": "UMAP per checkpoint",
}
# Data errors that become a warning on the page rather than a traceback.
DATA_ERRORS = (ValueError, OSError, KeyError, EOFError, zipfile.BadZipFile)
_RUN_ID_RE = re.compile(RUN_ID_PATTERN)
#: Pairs drawn in a scatter by default: beyond about a thousand the picture shows no more structure, and
#: each point costs the browser drawing time (5,000 pairs took about a second more per figure).
DRAWN_PAIRS = 1000
SUMMARY_METRICS = (
    "zero_shot_acc",
    "linear_probe_acc",
    "mean_R",
    "centroid_gap",
    "relative_modality_gap",
    "knn_acc",
    "global_loss",
    "train_loss",
    # the fusion model's (the columns no run reports are dropped)
    "itm_acc",
    "vqa_acc",
    "ve_acc",
    "nlvr_acc",
    "itm_mean_R",
)


# --------------------------------------------------------------------------------------------- page setup
def page_header(title: str, intro: str) -> None:
    """Title, one-line description and the store location."""
    st.title(title)
    st.caption(f"{intro}  \nRun store: `{runs_root()}`")


@dataclass
class GuardResult:
    """Whether the block of a :func:`data_guard` ran to its end."""

    ok: bool = True


@contextlib.contextmanager
def data_guard(what: str) -> Iterator[GuardResult]:
    """Turn a data error (unreadable file, missing array, bad shape) into a warning on the page.

    Programming errors (TypeError, AttributeError, ...) are not caught: tests must see them.
    """
    result = GuardResult()
    try:
        yield result
    except DATA_ERRORS as err:
        result.ok = False
        st.warning(f"Could not show {what}: {err}")


# --------------------------------------------------------------------------------------------- runs
def check_run_id(value: Any) -> str | None:
    """``value`` if it is a well-formed run id, else None (nothing is looked up)."""
    return value if isinstance(value, str) and _RUN_ID_RE.fullmatch(value) else None


def open_run(run_id: Any) -> Run | None:
    """Open a run of the store by id, or warn and return None (bad id, missing, outside the store)."""
    checked = check_run_id(run_id)
    if checked is None:
        st.warning(f"{run_id!r} is not a valid run id (it must match `{RUN_ID_PATTERN}`).")
        return None
    try:
        # An explicit root: a bare id is only ever looked up inside the store.
        return load_run(checked, root=runs_root())
    except (FileNotFoundError, ValueError) as err:
        st.warning(f"Run {checked!r} is not available: {err}")
        return None


def run_warnings(run: Run) -> bool:
    """Warn about a run that is not complete, has damaged files or no snapshots; True when its snapshots
    can be shown."""
    status = run.status
    steps = run.snapshot_steps
    if status == "running":
        writer = run.writer
        who = f", {writer.describe()}" if writer is not None else ""
        st.warning(
            f"Run `{run.run_id}` is still running (last step {run.step}{who}); showing what it has written."
        )
    elif status == "stopped":
        st.warning(
            f"Run `{run.run_id}` stopped at step {run.step} without finishing: the process writing it is "
            "gone (killed?). Train the same config again to resume it. Showing what it wrote."
        )
    elif status == "failed":
        st.warning(f"Run `{run.run_id}` failed: {run.error or 'no error recorded'}. Showing what it wrote.")
    elif status == "invalid":
        st.warning(
            f"Run `{run.run_id}` is half-written or damaged: its config.json or status.json is missing "
            "or unreadable."
        )
    for problem in run.problems():
        st.warning(f"Run `{run.run_id}`: {problem}")
    if not steps:
        st.warning(f"Run `{run.run_id}` has no embedding snapshots to show.")
        return False
    return True


@st.cache_data(ttl=5, show_spinner=False)
def runs_frame(root: str) -> pd.DataFrame:
    """One row per run with the columns the runs page shows (re-read at most every 5 s)."""
    rows = []
    for run in list_runs(root):
        config, summary = run.config, run.summary
        structure = config.get("structure") if isinstance(config.get("structure"), dict) else {}
        weights = structure.get("weights") if isinstance(structure.get("weights"), dict) else {}
        regs = ", ".join(f"{k}={v:g}" for k, v in weights.items() if isinstance(v, (int, float)) and v > 0)
        loss = config.get("loss")
        if not isinstance(loss, str) and isinstance(config.get("losses"), dict):
            loss = ", ".join(config["losses"])
        kind = config.get("kind") or ("train" if "loss" in config else "")
        snapshots = run.snapshot_steps
        status = run.status
        writer = run.writer if status == "running" else None
        row = {
            "run_id": run.run_id,
            "status": status,
            "writer": writer.describe().split(" since ")[0] if writer is not None else "",
            "kind": kind,
            "model": str(config.get("model") or ""),
            "dataset": config.get("dataset", ""),
            "loss": loss or "",
            "batch_size": config.get("batch_size", config.get("batch_sizes")),
            "regularizers": regs + (f" ({structure['mode']})" if regs and structure.get("mode") else ""),
            "steps": config.get("steps"),
            "seed": config.get("seed") if isinstance(config.get("seed"), int) else None,
            "snapshots": len(snapshots),
            "tables": ", ".join(run.tables),
            "created": run.created[:19].replace("T", " "),
        }
        for key in SUMMARY_METRICS:
            value = summary.get(key)
            row[key] = float(value) if isinstance(value, (int, float)) else np.nan
        if isinstance(row["batch_size"], list):
            row["batch_size"] = ", ".join(map(str, row["batch_size"]))
        elif row["batch_size"] is not None:
            row["batch_size"] = str(row["batch_size"])
        rows.append(row)
    columns = ["run_id", "status", "writer", "kind", "model", "dataset", "loss", "batch_size", "regularizers"]
    columns += ["steps"]
    columns += ["seed"]
    columns += ["snapshots", "tables", "created", *SUMMARY_METRICS]
    # Newest first: the run just trained is the one looked for.
    frame = pd.DataFrame(rows[::-1], columns=columns)
    # Metrics no run reports are noise in the table.
    return frame.drop(columns=[c for c in SUMMARY_METRICS if frame[c].isna().all()])


def run_ids_with(predicate: str) -> list[str]:
    """Ids of runs with snapshots (``"snapshots"``) or with a gradient-bias table (``"gradbias"``)."""
    frame = runs_frame(str(runs_root()))
    if predicate == "snapshots":
        return frame.loc[frame.snapshots > 0, "run_id"].tolist()
    if predicate == "gradbias":
        return frame.loc[frame.tables.str.split(", ").apply(lambda t: "gradbias" in t), "run_id"].tolist()
    raise ValueError(f"predicate must be 'snapshots' or 'gradbias', got {predicate!r}")


def run_label_map() -> dict[str, str]:
    """The readable label of every run of the store by run id (``app.compare.run_labels``)."""
    return run_labels(runs_frame(str(runs_root())))


def pick_runs(
    label: str, options: list[str], default: list[str], key: str, sidebar: bool = False
) -> list[str]:
    """A multiselect over run ids that shows their readable labels; the ids chosen are listed under it."""
    names = run_label_map()
    where = st.sidebar if sidebar else st
    chosen = where.multiselect(
        label, options, default=default, key=key, format_func=lambda r: names.get(r, r), help=LABEL_HELP
    )
    if chosen:
        where.caption("Run ids: " + ", ".join(f"`{r}`" for r in chosen))
    return chosen


def selected_runs() -> list[str]:
    """Runs chosen on the runs page (shared by every page in this session)."""
    value = st.session_state.get(SELECTED_KEY, [])
    return [v for v in value if check_run_id(v)]


def query_run() -> str | None:
    """The ``?run=`` of the URL, when it is a well-formed run id (warns otherwise)."""
    value = st.query_params.get("run")
    if value is None:
        return None
    if check_run_id(value) is None:
        st.warning(f"Ignoring ?run={value!r}: not a valid run id.")
        return None
    return value


# --------------------------------------------------------------------------------------------- sources
@dataclass
class Source:
    """Embeddings the geometry pages draw: a run's snapshots or an uploaded file (one step, 0).

    Attributes:
        label: Shown in titles.
        steps: Checkpoints with embeddings.
        run: The run (None for an upload).
        upload: The validated upload (None for a run).
        class_names: Names of the label values, when known.
    """

    label: str
    steps: list[int]
    run: Run | None = None
    upload: dict[str, Any] | None = None
    class_names: list[str] | None = None
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """Identifies these embeddings in caches: the run folder and its snapshot files, or the upload's
        digest (two uploads of one name are told apart)."""
        if self.run is not None:
            return f"{self.run.path}:{hash(snapshot_signature(self.run))}"
        return f"upload:{self.upload['digest']}"

    def snapshot(self, step: int) -> dict[str, np.ndarray]:
        """Arrays at ``step`` (``a``, ``b`` and whatever else the snapshot holds)."""
        if self.run is not None:
            return cached_snapshot(str(self.run.path), int(step), snapshot_signature(self.run))
        return self.upload["arrays"]

    def projection(self, method: str, dims: int, keys: Sequence[str], fit_on: str = "all") -> Projection:
        """Cached projection of every step.

        UMAP is fitted once per run on every paired array it has (``a``, ``b`` and ``a_aug``) and
        each page draws the arrays it needs from that one fit, so switching pages or toggling the
        augmented images never refits it (AlignedUMAP takes minutes on a large run).
        """
        keys = tuple(keys)
        fit_keys = keys
        if method in ("umap", "aligned_umap"):
            last = self.snapshot(self.steps[-1])
            fit_keys = tuple(k for k in ("a", "b", "a_aug") if k in last or k in keys)
        if self.run is not None:
            text = f"{METHOD_LABELS[method]}: fitting, or reading the run's cache ..."
            with st.spinner(text, show_time=True):
                fitted = cached_run_projection(
                    str(self.run.path), method, dims, fit_keys, fit_on, snapshot_signature(self.run)
                )
        else:
            fitted = cached_upload_projection(self.upload["digest"], method, dims, fit_keys, fit_on)
        return fitted.subset(keys)

    def info(self, step: int) -> emb.PointInfo:
        """Hover data of the rows."""
        return emb.PointInfo.from_snapshot(self.snapshot(step), self.class_names)

    @property
    def metrics(self) -> pd.DataFrame:
        """Logged metrics (empty for uploads)."""
        return self.run.metrics if self.run is not None else pd.DataFrame({"step": []})

    def geometry_table(self) -> pd.DataFrame:
        """Geometry measures per step: logged ones when the run logged them, else computed (cached)."""
        metrics = self.metrics
        if "centroid_gap" in metrics.columns and metrics["centroid_gap"].notna().any():
            return metrics
        if self.run is not None:
            return cached_snapshot_geometry(str(self.run.path), snapshot_signature(self.run))
        return cached_upload_geometry(self.upload["digest"])

    def scale_at(self, step: int) -> float | None:
        """The learned logit scale logged at ``step`` (None when the run did not learn one)."""
        metrics = self.metrics
        if "scale" not in metrics.columns or not self.config.get("learn_scale"):
            return None
        rows = metrics.loc[metrics.step <= step, ["step", "scale"]].dropna()
        return float(rows.scale.iloc[-1]) if len(rows) else None


def drawn_rows(n: int, limit: int | None = DRAWN_PAIRS) -> np.ndarray:
    """Rows of the pairs a scatter draws: all n, or ``limit`` evenly spaced ones (the probe set is
    shuffled, so they are a fair sample; ``None`` draws all)."""
    if limit is None or n <= limit:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, int(limit)).round().astype(int))


def subset_info(info: emb.PointInfo, rows: np.ndarray) -> emb.PointInfo:
    """The hover data of ``rows`` only."""
    labels = None if info.labels is None else np.asarray(info.labels)[rows]
    captions = None if info.captions is None else np.asarray(info.captions)[rows]
    return emb.PointInfo(ids=info.ids[rows], labels=labels, captions=captions, class_names=info.class_names)


@st.cache_resource(max_entries=96, show_spinner=False)
def _figure_cache(key: tuple, _build: Callable[[], Any]) -> Any:
    return _build()


def cached_figure(key: tuple, build: Callable[[], Any]) -> Any:
    """``build()``, once per ``key`` for every session: a plotly figure takes longer to build than to send.

    ``key`` must name everything the figure depends on (a :attr:`Source.key`, the step, the controls).
    The figure is shared: copy it (``go.Figure(fig)``) before changing it.
    """
    return _figure_cache(key, build)


def lazy_tabs(labels: Sequence[str], key: str) -> Sequence[Any]:
    """Tabs of which only the open one is built: draw a tab's content under ``if tab.open``.

    Every tab of a plain ``st.tabs`` is built and sent at once; on a 2-core machine with software
    rendering each plotly figure costs the browser a few hundred milliseconds, so a page of five
    figures in tabs took seconds to draw although one tab shows. Selecting a tab reruns the page.
    """
    return st.tabs(list(labels), key=key, on_change="rerun")


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Torch on one thread inside: the dashboard's losses are small, and on a busy 2-core machine two
    threads spin against each other (the what-if curve took 4x the CPU time with two)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def snapshot_signature(run: Run) -> tuple:
    """Cheap fingerprint of a run's snapshot files: cache entries are dropped when it changes."""
    folder = run.path / "snapshots"
    out = []
    for step in run.snapshot_steps:
        with contextlib.suppress(OSError):
            stat = (folder / f"step_{step:08d}.npz").stat()
            out.append((step, stat.st_size, stat.st_mtime_ns))
    return tuple(out)


def _run_at(path: str) -> Run:
    # Paths only ever come from runs opened through open_run, i.e. inside the store.
    return Run(Path(path))


@st.cache_data(max_entries=64, show_spinner=False)
def cached_snapshot(path: str, step: int, signature: tuple) -> dict[str, np.ndarray]:
    return _run_at(path).snapshot(step)


@st.cache_data(max_entries=32, show_spinner=False)
def cached_run_projection(
    path: str, method: str, dims: int, keys: tuple, fit_on: str, signature: tuple
) -> Projection:
    return run_projection(_run_at(path), method=method, dims=dims, keys=keys, fit_on=fit_on)


@st.cache_data(max_entries=16, show_spinner="Measuring the geometry of every snapshot (cached) ...")
def cached_snapshot_geometry(path: str, signature: tuple) -> pd.DataFrame:
    return snapshot_geometry(_run_at(path))


def source_for_run(run: Run) -> Source:
    """A :class:`Source` over the run's snapshots (callers check ``run_warnings`` first)."""
    config = run.config
    names = None
    dataset = config.get("dataset")
    if dataset in ("digits_captions", "mnist_captions"):
        names = [str(k) for k in range(10)]
    return Source(label=run.run_id, steps=run.snapshot_steps, run=run, class_names=names, config=config)


def upload_source() -> Source | None:
    """The upload of this session as a source, or None."""
    upload = st.session_state.get(UPLOAD_KEY)
    if not upload:
        return None
    return Source(
        label=f"upload: {upload['name']}", steps=[0], upload=upload, class_names=upload.get("class_names")
    )


def pick_source(key: str, allow_upload: bool = True) -> Source | None:
    """Sidebar picker over runs with snapshots (and the upload); warns and returns None when unusable.

    The default is ``?run=`` of the URL, else the first run selected on the runs page, else the
    newest run with snapshots. The choice is written back to ``?run=`` so the page can be shared.
    """
    options = run_ids_with("snapshots")
    upload = upload_source() if allow_upload else None
    labels = ([upload.label] if upload is not None else []) + options
    if not labels:
        st.info("The run store has no runs with embedding snapshots yet, and no file was uploaded.")
        return None
    wanted = query_run()
    if wanted is not None and wanted not in options:
        # Open it anyway: the warnings say why it cannot be drawn (missing, half-written, no snapshots).
        run = open_run(wanted)
        if run is not None:
            run_warnings(run)
        wanted = None
    chosen = [r for r in selected_runs() if r in options]
    default = wanted or (chosen[0] if chosen else labels[0])
    names = run_label_map()
    choice = st.sidebar.selectbox(
        "Embeddings", labels, index=labels.index(default), key=key, format_func=lambda v: names.get(v, v),
        help=LABEL_HELP,
    )  # fmt: skip
    if upload is not None and choice == upload.label:
        st.query_params.pop("run", None)
        return upload
    st.query_params["run"] = choice
    st.sidebar.caption(f"Run id: `{choice}`")
    run = open_run(choice)
    if run is None or not run_warnings(run):
        return None
    return source_for_run(run)


def step_slider(source: Source, key: str, label: str = "Checkpoint (step)") -> int:
    """Select slider over the source's steps (the last one by default); a fixed step when only one."""
    if len(source.steps) == 1:
        if source.run is not None:  # an upload has no checkpoints to speak of
            st.caption(f"One checkpoint: step {source.steps[0]}")
        return source.steps[0]
    return int(st.select_slider(label, options=source.steps, value=source.steps[-1], key=key))


# --------------------------------------------------------------------------------------------- uploads
def validate_upload(name: str, data: bytes, max_bytes: int = MAX_UPLOAD_BYTES) -> dict[str, Any]:
    """Check an uploaded paired-embedding file and turn it into an upload source's data.

    The file is read by ``workbench.data.userdata.load_paired_embeddings`` (``.npz`` read without
    pickle, or ``.parquet``), which sizes it from its headers before decoding anything (at most
    :data:`MAX_UPLOAD_ROWS` rows, d <= :data:`MAX_UPLOAD_DIM`, :data:`MAX_UPLOAD_DECODED_BYTES` decoded)
    and checks the keys, shapes and finiteness; on top of that the dashboard needs both modalities
    in one space (same d).

    Args:
        name: The file name (its suffix picks the reader).
        data: The file's bytes.
        max_bytes: Size limit.

    Returns:
        ``{"name", "digest", "arrays": {"a", "b", "ids", ["labels"], ["captions"]}, "class_names",
        "n", "d"}``.

    Raises:
        ValueError: Empty or too large, wrong type, or anything ``load_paired_embeddings`` rejects;
            messages name the file, not the temporary path it was checked at.
    """
    from workbench.data.userdata import load_paired_embeddings

    suffix = Path(name).suffix.lower()
    if suffix.lstrip(".") not in UPLOAD_TYPES:
        raise ValueError(
            f"{name}: unsupported file type {suffix or '(none)'!r}; upload a .npz or .parquet file"
        )
    if not data:
        raise ValueError(f"{name}: the file is empty")
    if len(data) > max_bytes:
        raise ValueError(f"{name}: {len(data) / 2**20:.1f} MB is over the {max_bytes / 2**20:.0f} MB limit")
    with tempfile.TemporaryDirectory(prefix="workbench-upload-") as folder:
        path = Path(folder) / f"upload{suffix}"
        path.write_bytes(data)
        try:
            loaded = load_paired_embeddings(
                path, max_dim=MAX_UPLOAD_DIM, max_rows=MAX_UPLOAD_ROWS, max_bytes=MAX_UPLOAD_DECODED_BYTES
            )
        except MemoryError:
            raise  # the header checks exist so that this never happens: a test must see it if it does
        except (ValueError, OSError, zipfile.BadZipFile, EOFError) as err:
            message = str(err).replace(str(path), name)
            raise ValueError(message if message.startswith(name) else f"{name}: {message}") from None
        except Exception as err:  # anything a decoder raises on a damaged file
            raise ValueError(f"{name}: could not be read as {suffix}: {type(err).__name__}: {err}") from None
    image, text = loaded["image_emb"], loaded["text_emb"]
    n, d = image.shape
    if text.shape[1] != d:
        raise ValueError(
            f"{name}: image_emb has d={d} columns but text_emb has d={text.shape[1]}; the geometry "
            "views compare the two modalities in one space, so both need the same dimension"
        )
    # Squared norms without an (n, d) temporary.
    norms = np.minimum(np.einsum("ij,ij->i", image, image), np.einsum("ij,ij->i", text, text))
    if (norms == 0).any():
        row = int(np.flatnonzero(norms == 0)[0])
        raise ValueError(f"{name}: row {row} has an all-zero embedding, which has no direction")
    arrays: dict[str, np.ndarray] = {"a": image, "b": text, "ids": np.arange(n)}
    if loaded["labels"] is not None:
        arrays["labels"] = loaded["labels"]
    if loaded["captions"] is not None:
        arrays["captions"] = np.asarray(loaded["captions"], dtype=str)
    return {
        "name": name,
        "digest": hashlib.sha256(data).hexdigest(),
        "arrays": arrays,
        "class_names": loaded["class_names"],
        "n": n,
        "d": d,
    }


def _upload_arrays(digest: str) -> dict[str, np.ndarray]:
    upload = st.session_state.get(UPLOAD_KEY)
    if not upload or upload["digest"] != digest:
        raise ValueError("the uploaded file is no longer in this session; upload it again")
    return upload["arrays"]


@st.cache_data(max_entries=8, show_spinner="Projecting the uploaded embeddings ...")
def cached_upload_projection(digest: str, method: str, dims: int, keys: tuple, fit_on: str) -> Projection:
    return fit_projection([_upload_arrays(digest)], [0], method, dims, keys, fit_on=fit_on)


@st.cache_data(max_entries=8, show_spinner="Measuring the geometry of the uploaded embeddings ...")
def cached_upload_geometry(digest: str) -> pd.DataFrame:
    from workbench.metrics.geometry import geometry_report

    arrays = _upload_arrays(digest)
    return pd.DataFrame([{"step": 0, **geometry_report(arrays["a"], arrays["b"])}])


@st.cache_data(max_entries=8, show_spinner="Measuring the uploaded embeddings (geometry and retrieval) ...")
def cached_upload_report(digest: str) -> dict[str, float]:
    """The scalar report of an upload: every geometry measure and retrieval recall@1, 5, 10."""
    from workbench.metrics.downstream import retrieval_recall
    from workbench.metrics.geometry import geometry_report

    arrays = _upload_arrays(digest)
    report = geometry_report(arrays["a"], arrays["b"])
    report.update(retrieval_recall(arrays["a"], arrays["b"]))
    return report
