"""Projections of run snapshots (cache included) and the embedding figures built on them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from workbench.metrics.geometry import bridge_paths, centroid_gap
from workbench.store.runs import RunWriter, load_run
from workbench.viz import embedding as emb
from workbench.viz.projection import (
    Projection,
    clear_cache,
    fit_projection,
    run_projection,
    snapshot_geometry,
)

STEPS = (0, 10, 20)
N, D = 40, 6


def _snapshots(seed: int = 0, n: int = N, d: int = D) -> list[dict[str, np.ndarray]]:
    """Paired embeddings drifting from step to step, with a gap between the modalities."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, d))
    shift = np.zeros(d)
    shift[0] = 2.0
    out = []
    for i, _ in enumerate(STEPS):
        a = base + 0.3 * i + shift
        b = base + 0.3 * i - shift + 0.1 * rng.normal(size=(n, d))
        out.append(
            {
                "a": a.astype(np.float32),
                "b": b.astype(np.float32),
                "a_aug": (a + 0.05 * rng.normal(size=(n, d))).astype(np.float32),
                "ids": np.arange(100, 100 + n),
                "labels": np.arange(n) % 3,
                "captions": np.array([f"caption {k}" for k in range(n)]),
            }
        )
    return out


@pytest.fixture()
def run(tmp_path):
    with RunWriter.create({"kind": "viz-test"}, run_id="viz", root=tmp_path) as writer:
        for step, snap in zip(STEPS, _snapshots(), strict=True):
            writer.save_snapshot(step, snap)
            writer.log(step, centroid_gap=float(step))
        writer.finish({"done": 1})
    return load_run("viz", root=tmp_path)


# --------------------------------------------------------------------------------------------- projection
@pytest.mark.parametrize("dims", [2, 3])
def test_frozen_pca_uses_one_basis_and_places_points_exactly(dims):
    proj = fit_projection(_snapshots(), STEPS, "frozen_pca", dims, keys=("a", "b"))
    assert proj.coords.shape == (len(STEPS), 2 * N, dims)
    assert np.allclose(proj.components[0], proj.components[-1])
    comps = proj.components[0]
    assert np.allclose(comps @ comps.T, np.eye(dims), atol=1e-8)
    # The projection of the centroid is the centroid of the projected points (PCA is affine).
    snap = _snapshots()[1]
    unit = snap["a"] / np.linalg.norm(snap["a"], axis=1, keepdims=True)
    placed = proj.place(10, unit.mean(axis=0))
    assert np.allclose(placed, proj.at(10)["a"].mean(axis=0), atol=1e-5)
    # Placing the fitted rows reproduces their coordinates, whatever the leading shape.
    again = proj.place(10, unit.reshape(4, N // 4, D))
    assert np.allclose(again.reshape(N, dims), proj.at(10)["a"], atol=1e-5)


def test_frozen_pca_fit_on_last_differs_from_all():
    snaps = _snapshots()
    last = fit_projection(snaps, STEPS, "frozen_pca", fit_on="last")
    alone = fit_projection(snaps[-1:], STEPS[-1:], "pca")
    assert np.allclose(last.at(20)["a"], alone.at(20)["a"], atol=1e-5)
    every = fit_projection(snaps, STEPS, "frozen_pca", fit_on="all")
    assert not np.allclose(every.components[0], last.components[0])


def test_per_step_pca_keeps_axis_orientation():
    snaps = _snapshots()
    proj = fit_projection(snaps, STEPS, "pca")
    for i in range(1, len(STEPS)):
        agree = (proj.components[i] * proj.components[i - 1]).sum(axis=1)
        assert (agree >= 0).all()
    # Each step's first axis explains at least as much as the second.
    assert (proj.explained[:, 0] >= proj.explained[:, 1]).all()


def test_fit_projection_rejects_bad_input():
    snaps = _snapshots()
    with pytest.raises(ValueError, match="method must be one of"):
        fit_projection(snaps, STEPS, "tsne")
    with pytest.raises(ValueError, match="dims must be 2 or 3"):
        fit_projection(snaps, STEPS, dims=4)
    with pytest.raises(ValueError, match="fit_on must be one of"):
        fit_projection(snaps, STEPS, fit_on="first")
    with pytest.raises(ValueError, match="strictly increasing"):
        fit_projection(snaps, (0, 20, 10))
    with pytest.raises(ValueError, match="lacks array"):
        fit_projection(snaps, STEPS, keys=("a", "zzz"))
    bad = _snapshots()
    bad[1]["b"][3, 2] = np.nan
    with pytest.raises(ValueError, match=r"b \(step 10\) contains NaN or inf at row 3"):
        fit_projection(bad, STEPS)
    uneven = _snapshots()
    uneven[2] = {k: v[:-1] for k, v in uneven[2].items()}
    with pytest.raises(ValueError, match="same rows and dimension"):
        fit_projection(uneven, STEPS)


def test_run_projection_is_cached_in_the_run_folder(run, monkeypatch):
    first = run_projection(run, "frozen_pca", dims=2)
    files = list((run.path / "cache" / "projections").glob("*.npz"))
    assert len(files) == 1 and not [p for p in files[0].parent.iterdir() if p.name.startswith(".tmp-")]
    # A second call must read the cache, not refit.
    monkeypatch.setattr("workbench.viz.projection.fit_projection", lambda *a, **k: pytest.fail("refit"))
    second = run_projection(run, "frozen_pca", dims=2)
    assert second.steps == first.steps and np.array_equal(second.coords, first.coords)
    assert np.array_equal(second.components, first.components) and second.method == "frozen_pca"
    monkeypatch.undo()
    run_projection(run, "pca", dims=3, steps=[10, 20])
    assert len(list(files[0].parent.glob("*.npz"))) == 2
    assert clear_cache(run) == 2


def test_run_projection_cache_follows_the_snapshot_files(run):
    before = run_projection(run, "frozen_pca")
    snaps = _snapshots(seed=5)
    writer = RunWriter.create({"kind": "viz-test"}, run_id="viz", root=run.path.parent)
    writer.save_snapshot(20, snaps[2])
    after = run_projection(run, "frozen_pca")
    assert not np.allclose(before.coords, after.coords)


def test_run_projection_errors_name_the_steps(run, tmp_path):
    with pytest.raises(ValueError, match=r"no snapshot at step\(s\) \[5\]; available steps: \[0, 10, 20\]"):
        run_projection(run, steps=[5, 10])
    with RunWriter.create({"kind": "empty"}, run_id="empty", root=tmp_path / "other") as writer:
        writer.finish({})
    with pytest.raises(ValueError, match="available steps: \\[\\]"):
        run_projection(load_run("empty", root=tmp_path / "other"))


def test_snapshot_geometry_matches_geometry_report_and_is_cached(run):
    table = snapshot_geometry(run)
    assert list(table.step) == list(STEPS)
    snap = run.snapshot(10)
    assert table.set_index("step").loc[10, "centroid_gap"] == pytest.approx(
        centroid_gap(snap["a"], snap["b"])
    )
    assert list((run.path / "cache" / "geometry").glob("*.json"))
    assert snapshot_geometry(run).equals(table)


@pytest.mark.slow
def test_aligned_umap_moves_points_smoothly():
    """One small AlignedUMAP fit (umap-learn compiles numba code on its first use)."""
    snaps = _snapshots(n=60)
    proj = fit_projection(snaps, STEPS, "aligned_umap", dims=2, seed=0)
    assert proj.coords.shape == (3, 120, 2) and np.isfinite(proj.coords).all()
    flat = np.concatenate([snaps[1]["a"], snaps[1]["b"]])
    placed = proj.place(10, flat[:5], fitted=flat)
    # A fitted point is its own nearest neighbour, so it lands close to its own position.
    spread = np.ptp(proj.coords[1], axis=0).max()
    assert np.abs(placed - proj.at(10)["a"][:5]).max() < 0.2 * spread
    with pytest.raises(ValueError, match="needs the fitted rows"):
        proj.place(10, flat[:5])


# --------------------------------------------------------------------------------------------- figures
def _projection() -> tuple[Projection, emb.PointInfo]:
    snaps = _snapshots()
    proj = fit_projection(snaps, STEPS, "frozen_pca", 2, keys=("a", "b", "a_aug"))
    info = emb.PointInfo.from_snapshot(snaps[0], class_names=["zero", "one", "two"])
    return proj, info


def test_scatter_figure_by_modality_has_pairs_and_hover():
    proj, info = _projection()
    fig = emb.scatter_figure(proj.at(10), info, pair_lines=5)
    names = [t.name for t in fig.data]
    assert names == ["pairs", "image", "text", "augmented image"]
    lines = fig.data[0]
    assert np.isnan(np.asarray(lines.x, dtype=float)).sum() == 5  # five separated segments
    image = fig.data[1]
    # id, label, caption for the hover; row and array for a selection
    assert len(image.x) == N and tuple(image.customdata[0]) == ("100", "zero", "caption 0", "0", "a")
    assert tuple(fig.data[2].customdata[7])[3:] == ("7", "b")
    assert fig.layout.legend.title.text == "colour and marker: modality"
    assert fig.layout.yaxis.scaleanchor == "x"


def test_figure_coordinates_are_sent_as_float32_typed_arrays():
    proj, info = _projection()
    coords = {k: v.astype(np.float64) for k, v in proj.at(10).items()}
    fig = emb.scatter_figure(coords, info, pair_lines=5)
    for trace in fig.data:
        assert np.asarray(trace.x).dtype == np.float32 and np.asarray(trace.y).dtype == np.float32
    assert np.allclose(fig.data[1].x, coords["a"][:, 0], atol=1e-6)
    assert np.isnan(np.asarray(fig.data[0].x)).sum() == 5  # the pair lines keep their NaN separators
    assert '"dtype":"f4"' in fig.to_json().replace(" ", "")


def test_scatter_figure_by_class_groups_rows_by_label():
    proj, info = _projection()
    fig = emb.scatter_figure({k: v for k, v in proj.at(0).items() if k != "a_aug"}, info, "class", 0)
    points = [t for t in fig.data if (t.meta or {}).get("kind") != "legend"]
    assert len(points) == 6  # three classes x two modalities
    assert {t.legendgroup for t in points} == {"zero", "one", "two"}
    assert sum(len(t.x) for t in points) == 2 * N
    # The legend explains both: colours are classes, and one grey entry per marker shape.
    shapes = [t for t in fig.data if (t.meta or {}).get("kind") == "legend"]
    assert [t.name for t in shapes] == ["marker: image", "marker: text"]
    assert [t.marker.symbol for t in shapes] == ["circle", "diamond"]
    assert fig.layout.legend.title.text == "colour: class · marker: modality"
    with pytest.raises(ValueError, match="color_by must be one of"):
        emb.scatter_figure(proj.at(0), info, color_by="size")
    with pytest.raises(ValueError, match="needs labels"):
        emb.scatter_figure(proj.at(0), emb.PointInfo(ids=np.arange(N)), color_by="class")
    with pytest.raises(ValueError, match="info describes"):
        emb.scatter_figure(proj.at(0), emb.PointInfo(ids=np.arange(3)))


def test_animated_figure_has_a_frame_per_step_and_fixed_axes():
    proj, info = _projection()
    fig = emb.animated_figure(proj, info, start_step=10, pair_lines=3)
    assert [f.name for f in fig.frames] == ["0", "10", "20"]
    assert len(fig.frames[0].data) == len(fig.data)  # frames replace every trace
    assert np.allclose(fig.data[1].x, proj.at(10)["a"][:, 0])
    assert np.allclose(fig.frames[2].data[1].x, proj.at(20)["a"][:, 0])
    assert fig.layout.sliders[0].active == 1
    assert fig.layout.updatemenus[0].buttons[0].label.endswith("play")
    low, high = fig.layout.xaxis.range
    assert low <= proj.coords[..., 0].min() and high >= proj.coords[..., 0].max()
    with pytest.raises(ValueError, match="step 7 was not projected"):
        emb.animated_figure(proj, info, start_step=7)


def test_overlays_in_two_and_three_dimensions():
    snaps = _snapshots()
    for dims in (2, 3):
        proj = fit_projection(snaps, STEPS, "frozen_pca", dims)
        snap = snaps[2]
        fig = emb.scatter_figure(proj.at(20), pair_lines=0)
        a = snap["a"] / np.linalg.norm(snap["a"], axis=1, keepdims=True)
        b = snap["b"] / np.linalg.norm(snap["b"], axis=1, keepdims=True)
        emb.add_gap_arrow(fig, proj.place(20, b.mean(0)), proj.place(20, a.mean(0)))
        paths = bridge_paths(snap["a"], snap["b"], n_paths=2, n_steps=5, pairs=np.arange(3))
        emb.add_paths(fig, proj.place(20, paths))
        means = emb.bridge_means(snap["a"], snap["b"], 0.25)
        emb.add_points(fig, proj.place(20, means), "bridge means")
        assert fig.data[0].name == "bridge paths"  # paths drawn beneath the markers
        assert np.isnan(np.asarray(fig.data[0].x, dtype=float)).sum() == 6
        if dims == 2:
            assert len(fig.layout.annotations) == 1
        else:
            assert any(t.type == "cone" for t in fig.data)
        with pytest.raises(ValueError):
            emb.add_gap_arrow(fig, np.zeros(dims + 1), np.zeros(dims + 1))


def test_bridge_means_lie_between_image_and_text():
    snap = _snapshots()[0]
    a = snap["a"] / np.linalg.norm(snap["a"], axis=1, keepdims=True)
    b = snap["b"] / np.linalg.norm(snap["b"], axis=1, keepdims=True)
    assert np.allclose(emb.bridge_means(a, b, 1.0), a, atol=1e-6)
    mid = emb.bridge_means(a, b, 0.25)
    assert np.allclose(np.linalg.norm(mid, axis=1), 1, atol=1e-6)
    assert ((mid * b).sum(1) > (mid * a).sum(1)).all()  # t = 0.25 is nearer the text


def test_sphere_figure_needs_three_dimensions():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(20, 3)), rng.normal(size=(20, 3))
    fig = emb.sphere_figure({"a": a, "b": b})
    radii = np.sqrt(
        np.asarray(fig.data[1].x) ** 2 + np.asarray(fig.data[1].y) ** 2 + np.asarray(fig.data[1].z) ** 2
    )
    assert np.allclose(radii, 1, atol=1e-6)
    assert fig.data[-1].type == "surface"
    with pytest.raises(ValueError, match=r"needs \(n, 3\) embeddings"):
        emb.sphere_figure({"a": rng.normal(size=(5, 4))})


def test_gap_and_spectrum_figures():
    snap = _snapshots()[0]
    fig = emb.per_dimension_gap_figure(snap["a"], snap["b"], top=3)
    bars, share = fig.data
    assert bars.x[0] == "d0"  # the planted gap is along dimension 0
    assert len(bars.x) == 3 and share.y[-1] <= 1 + 1e-9
    spec = emb.singular_spectrum_figure(snap["a"], snap["b"])
    assert len(spec.data) == 3 and spec.layout.yaxis.type == "log"
    with pytest.raises(ValueError, match="top must be"):
        emb.per_dimension_gap_figure(snap["a"], snap["b"], top=0)


def test_metrics_figure_overlays_runs():
    one = pd.DataFrame({"step": [0, 10, 20], "centroid_gap": [0.5, np.nan, 0.3], "cone": [0.1, 0.2, 0.3]})
    two = pd.DataFrame({"step": [0, 20], "centroid_gap": [0.6, 0.2]})
    fig = emb.metrics_figure({"r1": one, "r2": two}, ["centroid_gap", "cone"], marker_step=10)
    assert [t.name for t in fig.data] == ["r1", "r1", "r2"]
    assert list(fig.data[0].x) == [0, 20]  # the NaN row is skipped
    assert [t.showlegend for t in fig.data] == [True, False, True]
    with pytest.raises(ValueError, match="no 'step' column"):
        emb.metrics_figure({"bad": pd.DataFrame({"x": [1]})}, ["x"])


def test_gap_shift_closes_the_gap_and_the_curve_uses_the_loss():
    snap = _snapshots()[0]
    gap = centroid_gap(snap["a"], snap["b"])
    xs, ys = emb.gap_shift(snap["a"], snap["b"], 1.0)
    assert centroid_gap(xs, ys) < 0.5 * gap
    x0, y0 = emb.gap_shift(snap["a"], snap["b"], 0.0)
    assert centroid_gap(x0, y0) == pytest.approx(gap, rel=1e-5)
    curve = emb.gap_shift_curve(
        snap["a"], snap["b"], [-0.5, 0.0, 1.0], loss="clip", loss_params={"temperature": 0.1}
    )
    assert list(curve.columns) == ["shift", "loss", "centroid_gap", "mean_pair_cosine"]
    assert curve.centroid_gap.is_monotonic_decreasing
    import torch

    from workbench.losses import build_loss

    expected = build_loss("clip", temperature=0.1)(torch.from_numpy(x0), torch.from_numpy(y0))
    assert curve.loss[1] == pytest.approx(float(expected), rel=1e-5)
    scaled = emb.gap_shift_curve(snap["a"], snap["b"], [0.0], loss="clip", scale=10.0)
    assert scaled.loss[0] == pytest.approx(curve.loss[1], rel=1e-5)  # scale 10 = temperature 0.1
    stateful = emb.gap_shift_curve(snap["a"], snap["b"], [0.0], loss="bayes")
    assert np.isfinite(stateful.loss).all()
    fig = emb.whatif_figure(curve, current=0.5)
    assert fig.data[0].name == "loss"
    with pytest.raises(ValueError, match="unknown loss name"):
        emb.gap_shift_curve(snap["a"], snap["b"], [0.0], loss="nope")
    with pytest.raises(ValueError, match="shift must be a finite number"):
        emb.gap_shift(snap["a"], snap["b"], float("nan"))


def test_figures_serialise(run):
    """Every figure survives plotly's JSON encoder (what streamlit sends to the browser)."""
    proj = run_projection(run, "frozen_pca", dims=3)
    info = emb.PointInfo.from_snapshot(run.snapshot(0))
    assert isinstance(emb.animated_figure(proj, info, color_by="class").to_json(), str)
    assert isinstance(go.Figure(emb.scatter_figure(proj.at(0), info)).to_json(), str)
