"""The numbers behind the dashboard's views: neighbours, seed aggregation, metric names, the what-if grid."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from workbench.metrics import names
from workbench.metrics.gap import gap_shift, gap_shift_curve, unit_rows, whatif_curve
from workbench.metrics.neighbours import point_neighbours, top_k
from workbench.metrics.seeds import flatten_config, mean_std_over_seeds, setting_key


def _pairs(n=30, d=6, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, d))
    return a, a + 0.3 * rng.normal(size=(n, d))


def test_neighbours_match_a_brute_force_ranking():
    a, b = _pairs()
    result = point_neighbours(a, b, 4, "a", k=3)
    ua, ub = unit_rows(a), unit_rows(b)
    within = ua @ ua[4]
    within[4] = -np.inf
    np.testing.assert_array_equal(result.same, np.argsort(-within)[:3])
    np.testing.assert_array_equal(result.other, np.argsort(-(ub @ ua[4]))[:3])
    assert 4 not in result.same
    cos = ub @ ua[4]
    assert result.partner_rank == int((cos > cos[4]).sum())
    np.testing.assert_allclose(result.partner_sim, cos[4])
    text = point_neighbours(a, b, 4, "b", k=2)  # from the caption: its image's rank among images
    assert text.partner_rank == int(((ua @ ub[4]) > (ua[4] @ ub[4])).sum())


def test_neighbours_reject_bad_arguments():
    a, b = _pairs()
    with pytest.raises(ValueError, match="modality must be one of a, b"):
        point_neighbours(a, b, 0, "c")
    with pytest.raises(ValueError, match=r"index must be an integer in \[0, 30\)"):
        point_neighbours(a, b, 30)
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        point_neighbours(a, b, 0, k=0)
    with pytest.raises(ValueError, match="one shape"):
        point_neighbours(a, b[:5], 0)
    rows, sims = top_k(np.ones(6), unit_rows(a[:2]), 5, exclude=0)
    assert rows.tolist() == [1] and sims.shape == (1,)


def test_seeds_are_averaged_per_step_with_the_sample_std():
    one = pd.DataFrame({"step": [1, 2], "loss": [1.0, 0.5]})
    two = pd.DataFrame({"step": [1, 2, 3], "loss": [3.0, 0.7, 0.2]})
    out = mean_std_over_seeds([one, two])
    assert out.step.tolist() == [1, 2, 3]
    np.testing.assert_allclose(out.loss, [2.0, 0.6, 0.2])
    np.testing.assert_allclose(out.loss_std[:2], [np.sqrt(2.0), np.std([0.5, 0.7], ddof=1)])
    assert np.isnan(out.loss_std[2]) and out.loss_n.tolist() == [2, 2, 1]
    with pytest.raises(ValueError, match="no 'step' column"):
        mean_std_over_seeds([pd.DataFrame({"x": [1]})])


def test_a_setting_is_the_config_without_its_seeds():
    base = {"loss": "clip", "seed": 0, "dataset_params": {"seed": 1, "variants": 3}}
    other = {"loss": "clip", "seed": 5, "dataset_params": {"seed": 9, "variants": 3}}
    assert setting_key(base) == setting_key(other)
    assert setting_key(base) != setting_key({**base, "loss": "bayes"})
    assert flatten_config(base) == {"loss": "clip", "seed": 0, "dataset_params.seed": 1,
                                    "dataset_params.variants": 3}  # fmt: skip


def test_metric_names_give_label_direction_and_unit():
    assert names.title("centroid_gap") == "centroid gap (lower is better)"
    assert names.title("effective_rank", unit=True) == "effective rank (higher is better; directions, 1 to d)"
    assert names.describe("t2i_R@10").label == "text→image recall@10"
    assert names.describe("fewshot_5_acc").direction == "higher"
    assert names.describe("zero_shot_acc_mean").label == "zero-shot accuracy (mean over seeds)"
    assert names.describe("whatever").label == "whatever" and names.title("whatever") == "whatever"
    assert "Lower is better" in names.help_text("alignment")
    assert [names.format_value(v) for v in (6e-14, 0.55234, 123.456, 0.0, float("nan"))] == [
        "6e-14", "0.552", "123", "0", ""]  # fmt: skip
    for info in names.METRICS.values():
        assert info.direction in ("higher", "lower", "") and info.label


def test_what_if_grid_extends_to_the_minimum_and_shifts_keep_unit_rows():
    a, b = _pairs(40, 5, 1)
    b = b - 2.0  # a wide gap: the clip loss keeps falling as the gap closes past shift 2
    for side in gap_shift(a, b, 1.5):
        np.testing.assert_allclose(np.linalg.norm(side, axis=1), 1.0, rtol=1e-5)
    curve = whatif_curve(a, b, "clip", {"temperature": 0.1}, low=-1.0, high=0.0, points=5)
    best = curve.loc[curve["loss"].idxmin(), "shift"]
    assert curve["shift"].max() > 0.0
    assert not curve.at_edge.any() and curve["shift"].min() < best < curve["shift"].max()
    same = gap_shift_curve(a, b, [0.0, 1.0], "siglip", {}, call_params={"scale": 10.0, "bias": -10.0})
    default = gap_shift_curve(a, b, [0.0, 1.0], "siglip", {})
    np.testing.assert_allclose(same.loss, default.loss, rtol=1e-6)
    with pytest.raises(ValueError, match="low must be below high"):
        whatif_curve(a, b, low=1.0, high=0.0)
