"""Tests for workbench.metrics.geometry: closed forms, brute-force references and input validation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from workbench.metrics import geometry as geo


def _unit(z: np.ndarray) -> np.ndarray:
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def _random(n: int, d: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d))


@pytest.fixture
def pair() -> tuple[np.ndarray, np.ndarray]:
    x = _random(60, 8, 1)
    y = x + 0.5 * _random(60, 8, 2)
    return x, y


# ------------------------------------------------------------------------------- identical and shifted
def test_identical_inputs_have_no_gap():
    x = _random(200, 16, 0)
    assert geo.centroid_gap(x, x) == pytest.approx(0.0, abs=1e-12)
    assert geo.paired_distance(x, x) == pytest.approx(0.0, abs=1e-12)
    assert geo.alignment(x, x) == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(geo.gap_vector(x, x), 0.0, atol=1e-12)
    # d_M hits the floor; d_I = d_T = max(1e-3, (1 - cone) / 2).
    z = _unit(x)
    c = (z @ z.T)[~np.eye(200, dtype=bool)].mean()
    d_i = max(1e-3, (1 - c) / 2)
    assert geo.relative_modality_gap(x, x) == pytest.approx(1e-3 / (1e-3 + d_i), rel=1e-9)
    assert geo.modality_separability(x, x, seed=0) == pytest.approx(0.5, abs=0.1)


def test_shifted_pairs_have_large_gap_and_are_separable():
    x = _random(200, 16, 3)
    shift = np.zeros(16)
    shift[0] = 10.0
    y = _unit(_unit(x) + shift)
    assert geo.centroid_gap(x, y) > 0.8
    assert geo.modality_separability(x, y, seed=0) == pytest.approx(1.0)
    assert geo.relative_modality_gap(x, y) > geo.relative_modality_gap(x, x)
    assert geo.cross_uniformity(x, y) < geo.uniformity(x, y)


def test_rows_are_normalised_internally(pair):
    x, y = pair
    scales = np.random.default_rng(5).uniform(0.1, 10.0, size=(len(x), 1))
    assert geo.alignment(x * scales, y) == pytest.approx(geo.alignment(_unit(x), _unit(y)), rel=1e-12)
    assert geo.centroid_gap(x * 7.0, y) == pytest.approx(geo.centroid_gap(x, y), rel=1e-12)


# ----------------------------------------------------------------------------------------- closed forms
def test_orthonormal_basis_closed_forms():
    d = 6
    e = np.eye(d)
    assert geo.cone_single(e) == pytest.approx(0.0, abs=1e-12)
    assert geo.effective_rank_single(e) == pytest.approx(d, rel=1e-12)
    # All pairwise squared distances are 2: uniformity = -2 t exactly.
    assert geo.uniformity_single(e, t=2.0) == pytest.approx(-4.0, rel=1e-12)
    y = np.roll(e, 1, axis=0)  # y_i = e_{i-1}: orthogonal to x_i
    assert geo.alignment(e, y) == pytest.approx(2.0, rel=1e-12)
    assert geo.paired_distance(e, y) == pytest.approx(math.sqrt(2.0), rel=1e-12)
    assert geo.centroid_gap(e, y) == pytest.approx(0.0, abs=1e-12)
    # d_M = d_I = d_T = 1/2 -> 1/2.
    assert geo.relative_modality_gap(e, y) == pytest.approx(0.5, rel=1e-12)


def test_cone_and_effective_rank_of_collapsed_set():
    z = np.tile([[1.0, 2.0, 2.0]], (5, 1)) * np.arange(1, 6)[:, None]  # same direction, different norms
    assert geo.cone_single(z) == pytest.approx(1.0, rel=1e-12)
    assert geo.effective_rank_single(z) == pytest.approx(1.0, rel=1e-9)


def test_cone_matches_pairwise_mean(pair):
    x, y = pair
    n = len(x)
    off = ~np.eye(n, dtype=bool)
    cx = (_unit(x) @ _unit(x).T)[off].mean()
    cy = (_unit(y) @ _unit(y).T)[off].mean()
    assert geo.cone(x, y) == pytest.approx((cx + cy) / 2, rel=1e-10)
    assert geo.effective_rank(x, y) == pytest.approx(
        (geo.effective_rank_single(x) + geo.effective_rank_single(y)) / 2
    )


# --------------------------------------------------------------------------------- brute-force kernels
def _brute_log_mean(a: np.ndarray, b: np.ndarray, t: float) -> float:
    vals = []
    for i in range(len(a)):
        for j in range(len(b)):
            if i != j:
                vals.append(math.exp(-t * float(np.sum((a[i] - b[j]) ** 2))))
    return math.log(sum(vals) / len(vals))


@pytest.mark.parametrize("t", [0.5, 2.0, 5.0])
def test_uniformity_matches_double_loop(pair, t):
    x, y = pair
    ux, uy = _brute_log_mean(_unit(x), _unit(x), t), _brute_log_mean(_unit(y), _unit(y), t)
    assert geo.uniformity_single(x, t=t) == pytest.approx(ux, rel=1e-10)
    assert geo.uniformity(x, y, t=t) == pytest.approx((ux + uy) / 2, rel=1e-10)


def test_cross_uniformity_matches_double_loop(pair):
    x, y = pair
    assert geo.cross_uniformity(x, y, t=2.0) == pytest.approx(
        _brute_log_mean(_unit(x), _unit(y), 2.0), rel=1e-10
    )


def test_uniformity_chunking_and_large_t(monkeypatch):
    x = _random(50, 4, 9)
    whole = geo.uniformity_single(x)
    monkeypatch.setattr(geo, "_BLOCK_ENTRIES", 7)  # many small blocks
    assert geo.uniformity_single(x) == pytest.approx(whole, rel=1e-12)
    # exp(-t d^2) underflows in float64 for t = 1e4; the logsumexp must stay finite.
    assert np.isfinite(geo.uniformity_single(x, t=1e4))


# ---------------------------------------------------------------------------------------------- spectra
def test_per_dimension_gap_is_sorted_abs_gap_vector(pair):
    x, y = pair
    g = geo.per_dimension_gap(x, y)
    assert g.shape == (x.shape[1],)
    assert np.all(np.diff(g) <= 0)
    np.testing.assert_allclose(g, np.sort(np.abs(geo.gap_vector(x, y)))[::-1])
    np.testing.assert_allclose(geo.gap_vector(x, y), _unit(x).mean(0) - _unit(y).mean(0))


def test_singular_spectrum_normalised(pair):
    x, y = pair
    spec = geo.singular_spectrum(x, y)
    assert set(spec) == {"x", "y", "joint"}
    assert spec["x"].shape == (8,) and spec["joint"].shape == (8,)
    for v in spec.values():
        assert v.sum() == pytest.approx(1.0, rel=1e-12)
        assert np.all(np.diff(v) <= 1e-15) and np.all(v >= 0)
    p = spec["x"]
    assert geo.effective_rank_single(x) == pytest.approx(np.exp(-(p * np.log(p)).sum()), rel=1e-12)


# ---------------------------------------------------------------------------------------------- report
def test_geometry_report_keys_and_consistency():
    x = _random(300, 32, 11)
    y = x + _random(300, 32, 12)
    rep = geo.geometry_report(x, y, seed=0)
    expected = {
        "centroid_gap",
        "paired_distance",
        "relative_modality_gap",
        "modality_separability",
        "alignment",
        "uniformity",
        "cross_uniformity",
        "cone",
        "effective_rank",
        "mean_pair_cosine",
    }
    assert set(rep) == expected
    assert all(isinstance(v, float) and math.isfinite(v) for v in rep.values())
    for name in expected - {"modality_separability", "mean_pair_cosine"}:
        assert rep[name] == pytest.approx(getattr(geo, name)(x, y), rel=1e-10), name
    assert rep["modality_separability"] == geo.modality_separability(x, y, seed=0)
    assert rep["alignment"] == pytest.approx(2 - 2 * rep["mean_pair_cosine"], rel=1e-10)


def test_geometry_report_subsamples_deterministically():
    x = _random(120, 8, 13)
    y = _random(120, 8, 14)
    a = geo.geometry_report(x, y, seed=3, max_pairs=50)
    assert a == geo.geometry_report(x, y, seed=3, max_pairs=50)
    full = geo.geometry_report(x, y, seed=3)
    assert a["uniformity"] != full["uniformity"]  # subsampled
    assert a["cone"] == full["cone"]  # exact on all rows
    with pytest.raises(ValueError, match="max_pairs"):
        geo.geometry_report(x, y, max_pairs=1)


def test_separability_deterministic_given_seed():
    x = _random(80, 8, 15)
    y = _random(80, 8, 16) + 0.3
    assert geo.modality_separability(x, y, seed=4) == geo.modality_separability(x, y, seed=4)


# ----------------------------------------------------------------------------------------- bridge paths
def test_bridge_paths_shape_endpoints_and_norm(pair):
    x, y = pair
    p = geo.bridge_paths(x, y, n_paths=3, n_steps=9, sigma=0.3, seed=0)
    assert p.shape == (60, 3, 9, 8)
    xn, yn = _unit(x), _unit(y)
    assert np.array_equal(p[:, :, 0], np.broadcast_to(xn[:, None], (60, 3, 8)))
    assert np.array_equal(p[:, :, -1], np.broadcast_to(yn[:, None], (60, 3, 8)))
    np.testing.assert_allclose(np.linalg.norm(p, axis=-1), 1.0, atol=1e-12)
    assert not np.allclose(p[:, 0], p[:, 1])  # the paths differ


def test_bridge_paths_sigma_zero_is_normalised_straight_line(pair):
    x, y = pair
    p = geo.bridge_paths(x, y, n_paths=2, n_steps=5, sigma=0.0)
    t = np.linspace(0, 1, 5)[:, None]
    xn, yn = _unit(x), _unit(y)
    for i in (0, 17, 59):
        line = _unit((1 - t) * xn[i] + t * yn[i])
        np.testing.assert_allclose(p[i, 0], line, atol=1e-12)
        np.testing.assert_allclose(p[i, 1], line, atol=1e-12)
        # on the great circle through x_i and y_i: residual after projecting on span(x_i, y_i) is 0
        basis, _ = np.linalg.qr(np.stack([xn[i], yn[i]], axis=1))
        np.testing.assert_allclose(p[i, 0] - p[i, 0] @ basis @ basis.T, 0.0, atol=1e-12)


def test_bridge_paths_seeded_pairs_and_cap():
    x = _random(300, 4, 20)
    y = _random(300, 4, 21)
    a = geo.bridge_paths(x, y, n_paths=2, n_steps=4, seed=7)
    assert a.shape == (geo.BRIDGE_MAX_PAIRS, 2, 4, 4)
    assert np.array_equal(a, geo.bridge_paths(x, y, n_paths=2, n_steps=4, seed=7))
    assert not np.allclose(a, geo.bridge_paths(x, y, n_paths=2, n_steps=4, seed=8))
    sel = geo.bridge_paths(x, y, n_paths=2, n_steps=4, seed=7, pairs=[5, 299])
    assert sel.shape == (2, 2, 4, 4)
    np.testing.assert_array_equal(sel[1, :, -1], np.broadcast_to(_unit(y)[299], (2, 4)))


def test_bridge_noise_has_bridge_variance():
    # Far from the origin sphere effects are small: with x = y the midpoint noise variance is sigma^2 / 4.
    x = np.zeros((2, 200))
    x[:, 0] = 1.0
    p = geo.bridge_paths(x, x, n_paths=200, n_steps=5, sigma=0.01, seed=1)
    mid = p[:, :, 2, 1:]
    assert mid.var() == pytest.approx(0.01**2 / 4, rel=0.05)


# ------------------------------------------------------------------------------------------- validation
ALL_PAIR_FUNCS = [
    geo.gap_vector,
    geo.centroid_gap,
    geo.paired_distance,
    geo.relative_modality_gap,
    geo.modality_separability,
    geo.alignment,
    geo.uniformity,
    geo.cross_uniformity,
    geo.cone,
    geo.effective_rank,
    geo.per_dimension_gap,
    geo.singular_spectrum,
    geo.geometry_report,
    geo.bridge_paths,
]


@pytest.mark.parametrize("func", ALL_PAIR_FUNCS, ids=lambda f: f.__name__)
def test_bad_inputs_raise(func):
    good = _random(20, 4, 30)
    with pytest.raises(ValueError, match="x and y must have the same shape"):
        func(good, good[:, :3])
    with pytest.raises(ValueError, match="x and y must have the same shape"):
        func(good, good[:19])
    bad = good.copy()
    bad[17, 2] = np.nan
    with pytest.raises(ValueError, match="x contains NaN or inf at row 17"):
        func(bad, good)
    bad = good.copy()
    bad[3, 0] = np.inf
    with pytest.raises(ValueError, match="y contains NaN or inf at row 3"):
        func(good, bad)
    with pytest.raises(ValueError, match="x must be a 2-D"):
        func(good[0], good[0])
    with pytest.raises(ValueError, match="y must be a 2-D"):
        func(good, good[None])
    with pytest.raises(ValueError, match="at least 2 rows"):
        func(good[:1], good[:1])
    zero = good.copy()
    zero[4] = 0.0
    with pytest.raises(ValueError, match="y has a row of zero norm at row 4"):
        func(good, zero)
    with pytest.raises(ValueError, match="x must be a numeric"):
        func([["a", "b"], ["c", "d"]], good[:2, :2])


@pytest.mark.parametrize(
    "func", [geo.uniformity_single, geo.cone_single, geo.effective_rank_single], ids=lambda f: f.__name__
)
def test_single_bad_inputs_raise(func):
    good = _random(10, 3, 31)
    bad = good.copy()
    bad[6, 1] = np.nan
    with pytest.raises(ValueError, match="z contains NaN or inf at row 6"):
        func(bad)
    with pytest.raises(ValueError, match="z must be a 2-D"):
        func(good[0])
    with pytest.raises(ValueError, match="z must have at least 2 rows"):
        func(good[:1])


def test_bad_t_raises(pair):
    x, y = pair
    for f in (geo.uniformity, geo.cross_uniformity):
        with pytest.raises(ValueError, match="t must be"):
            f(x, y, t=0.0)
    with pytest.raises(ValueError, match="t must be"):
        geo.uniformity_single(x, t=float("nan"))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n_steps": 1}, "n_steps"),
        ({"n_steps": 2.5}, "n_steps"),
        ({"n_paths": 0}, "n_paths"),
        ({"sigma": -0.1}, "sigma"),
        ({"sigma": float("inf")}, "sigma"),
        ({"pairs": [0, 60]}, "pairs"),
        ({"pairs": [-1]}, "pairs"),
        ({"pairs": []}, "pairs"),
        ({"pairs": [0.5]}, "pairs"),
    ],
)
def test_bridge_bad_parameters_raise(pair, kwargs, name):
    x, y = pair
    with pytest.raises(ValueError, match=name):
        geo.bridge_paths(x, y, **kwargs)


def test_bridge_antipodal_straight_line_raises():
    x = np.eye(3)
    with pytest.raises(ValueError, match="origin"):
        geo.bridge_paths(x, -x, n_steps=3, sigma=0.0)
