"""Downstream evaluation (workbench.metrics.downstream): zero-shot, probes, few-shot, retrieval, report."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits

from workbench.metrics import downstream as ev


@pytest.fixture(autouse=True)
def _single_thread():
    # The probes fit tiny problems, where BLAS/OpenMP thread start-up dominates on a shared CPU.
    with threadpool_limits(limits=1):
        yield


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _clustered(n_per_class: int, n_classes: int, dim: int, noise: float, seed: int):
    """Unit-ish class centroids and points scattered around them, with shuffled rows."""
    rng = np.random.default_rng(seed)
    centroids = _normalize(rng.normal(size=(n_classes, dim)))
    labels = rng.permutation(np.repeat(np.arange(n_classes), n_per_class))
    points = centroids[labels] + noise * rng.normal(size=(labels.size, dim))
    return centroids, points, labels


def _blobs(n_train: int, n_test: int, n_classes: int, dim: int, sep: float, seed: int):
    rng = np.random.default_rng(seed)
    means = sep * rng.normal(size=(n_classes, dim))
    ytr = rng.integers(0, n_classes, size=n_train)
    yte = rng.integers(0, n_classes, size=n_test)
    xtr = means[ytr] + rng.normal(size=(n_train, dim))
    xte = means[yte] + rng.normal(size=(n_test, dim))
    return xtr, ytr, xte, yte


def _brute_force_recall(img: np.ndarray, txt: np.ndarray, ks) -> dict[str, float]:
    sims = _normalize(img) @ _normalize(txt).T
    pos = np.diag(sims)
    r_i2t = (sims > pos[:, None]).sum(axis=1)
    r_t2i = (sims > pos[None, :]).sum(axis=0)
    out = {f"i2t_R@{k}": float(np.mean(r_i2t < k)) for k in ks}
    out.update({f"t2i_R@{k}": float(np.mean(r_t2i < k)) for k in ks})
    out["mean_R"] = float(np.mean(list(out.values())))
    return out


# ------------------------------------------------------------------------------------------- zero-shot


def test_zero_shot_centroids_are_perfect_and_permuted_classes_are_not():
    centroids, images, labels = _clustered(40, 5, 32, noise=0.05, seed=0)
    assert ev.zero_shot_accuracy(images, centroids, labels) == 1.0
    np.testing.assert_array_equal(ev.zero_shot_predict(images, centroids), labels)

    # Row j of the permuted class matrix is the centroid of class perm[j]; an image of class c is
    # therefore predicted as j = argsort(perm)[c], correct only where perm fixes c (classes 0 and 4).
    perm = np.array([0, 2, 3, 1, 4])
    shuffled = centroids[perm]
    expected = float(np.mean(perm[labels] == labels))
    assert 0.0 < expected < 1.0
    assert ev.zero_shot_accuracy(images, shuffled, labels) == pytest.approx(expected)
    np.testing.assert_array_equal(ev.zero_shot_predict(images, shuffled), np.argsort(perm)[labels])


def test_zero_shot_is_scale_invariant_and_accepts_torch():
    centroids, images, labels = _clustered(20, 4, 16, noise=0.3, seed=1)
    rng = np.random.default_rng(1)
    scaled_images = images * rng.uniform(0.01, 100.0, size=(images.shape[0], 1))
    scaled_classes = centroids * rng.uniform(0.01, 100.0, size=(centroids.shape[0], 1))
    acc = ev.zero_shot_accuracy(images, centroids, labels)
    assert ev.zero_shot_accuracy(scaled_images, scaled_classes, labels) == pytest.approx(acc)
    acc_torch = ev.zero_shot_accuracy(
        torch.from_numpy(images).float(), torch.from_numpy(centroids).float(), torch.from_numpy(labels)
    )
    assert acc_torch == pytest.approx(acc)


def test_prompt_ensemble_survives_one_noisy_template():
    n_classes, n_prompts, dim = 6, 4, 32
    centroids, images, labels = _clustered(30, n_classes, dim, noise=0.1, seed=2)
    rng = np.random.default_rng(2)
    # Three good templates (each a slightly perturbed centroid with an arbitrary norm) and one bad
    # template: a random direction with a huge norm. Without per-prompt normalisation the bad template
    # would dominate the average.
    good = centroids[:, None, :] + 0.05 * rng.normal(size=(n_classes, 3, dim))
    good *= rng.uniform(0.5, 2.0, size=(n_classes, 3, 1))
    bad = 100.0 * _normalize(rng.normal(size=(n_classes, 1, dim)))
    prompts = np.concatenate([good, bad], axis=1)
    assert prompts.shape == (n_classes, n_prompts, dim)

    assert ev.zero_shot_accuracy(images, prompts, labels) == 1.0
    assert ev.zero_shot_accuracy(images, prompts[:, 3], labels) < 0.5  # the bad template alone
    assert ev.zero_shot_accuracy(images, prompts.mean(axis=1), labels) < 0.5  # the naive average

    recipe = _normalize(_normalize(prompts).mean(axis=1))
    np.testing.assert_array_equal(ev.zero_shot_predict(images, prompts), ev.zero_shot_predict(images, recipe))


# ---------------------------------------------------------------------------------------- linear probe


def test_linear_probe_separable_blobs():
    xtr, ytr, xte, yte = _blobs(300, 300, n_classes=4, dim=10, sep=3.0, seed=3)
    assert ev.linear_probe_accuracy(xtr, ytr, xte, yte) >= 0.99


def test_linear_probe_random_labels_is_chance_and_deterministic():
    rng = np.random.default_rng(4)
    xtr, xte = rng.normal(size=(400, 20)), rng.normal(size=(2000, 20))
    ytr, yte = rng.integers(0, 4, size=400), rng.integers(0, 4, size=2000)
    acc = ev.linear_probe_accuracy(xtr, ytr, xte, yte, seed=0)
    assert 0.19 <= acc <= 0.31  # chance = 0.25; sd of the estimate ~0.01
    assert ev.linear_probe_accuracy(xtr, ytr, xte, yte, seed=0) == acc


def test_linear_probe_standardises_features():
    # A per-feature affine change of the features (same on both splits) leaves a probe on
    # standardised features unchanged, even with strong regularisation.
    xtr, ytr, xte, yte = _blobs(200, 200, n_classes=3, dim=8, sep=0.6, seed=5)
    scale = np.logspace(-3, 3, 8)
    shift = np.linspace(-50, 50, 8)
    base = ev.linear_probe_accuracy(xtr, ytr, xte, yte, C=0.01)
    moved = ev.linear_probe_accuracy(xtr * scale + shift, ytr, xte * scale + shift, yte, C=0.01)
    assert moved == pytest.approx(base, abs=1e-2)
    assert 0.4 < base < 1.0  # a problem where the probe is neither trivial nor at chance


# ------------------------------------------------------------------------------------------- few-shot


def test_few_shot_structure_determinism_and_more_shots_help():
    xtr, ytr, xte, yte = _blobs(400, 300, n_classes=5, dim=20, sep=0.5, seed=6)
    shots = (1, 5, 10)
    res = ev.few_shot_accuracy(xtr, ytr, xte, yte, shots=shots, trials=4, seed=0)
    assert list(res) == list(shots)
    for stats in res.values():
        assert set(stats) == {"mean", "std"}
        assert 0.0 <= stats["mean"] <= 1.0
        assert stats["std"] >= 0.0
    assert res[1]["mean"] < 0.95  # not saturated, so the comparison below means something
    assert res[10]["mean"] >= res[5]["mean"] >= res[1]["mean"]
    assert ev.few_shot_accuracy(xtr, ytr, xte, yte, shots=shots, trials=4, seed=0) == res
    # The draw for one k does not depend on the other requested shots.
    assert ev.few_shot_accuracy(xtr, ytr, xte, yte, shots=(5,), trials=4, seed=0)[5] == res[5]


def test_few_shot_with_every_example_equals_the_full_probe():
    xtr, ytr, xte, yte = _blobs(60, 100, n_classes=3, dim=6, sep=0.8, seed=7)
    # k = size of the largest class: every class uses all its examples (shorter ones with a
    # warning), every trial trains on the full set, so std is 0 and the mean is the full probe.
    k = int(np.bincount(ytr).max())
    with pytest.warns(UserWarning, match="fewer than"):
        res = ev.few_shot_accuracy(xtr, ytr, xte, yte, shots=(k,), trials=3)
    assert res[k]["std"] == pytest.approx(0.0, abs=1e-12)
    assert res[k]["mean"] == pytest.approx(ev.linear_probe_accuracy(xtr, ytr, xte, yte))


def test_few_shot_short_class_warns_and_uses_all():
    rng = np.random.default_rng(8)
    ytr = np.array([0] * 3 + [1] * 20 + [2] * 20)
    xtr = rng.normal(size=(ytr.size, 4)) + 4.0 * np.eye(3, 4)[ytr]
    yte = rng.integers(0, 3, size=50)
    xte = rng.normal(size=(50, 4)) + 4.0 * np.eye(3, 4)[yte]
    with pytest.warns(UserWarning, match=r"\[0\]"):
        res = ev.few_shot_accuracy(xtr, ytr, xte, yte, shots=(5,), trials=2)
    assert set(res) == {5}
    with pytest.raises(ValueError, match="shots"):
        ev.few_shot_accuracy(xtr, ytr, xte, yte, shots=(5, 21), trials=2)


# ------------------------------------------------------------------------------------------ retrieval


def test_retrieval_identical_pairs_are_perfect():
    rng = np.random.default_rng(9)
    emb = rng.normal(size=(50, 16))
    res = ev.retrieval_recall(emb, emb * 3.0, ks=(1, 5, 10))
    assert set(res) == {f"{d}_R@{k}" for d in ("i2t", "t2i") for k in (1, 5, 10)} | {"mean_R"}
    assert all(v == 1.0 for v in res.values())


def test_retrieval_known_permutation_r_at_1_is_the_fixed_points():
    rng = np.random.default_rng(10)
    img = rng.normal(size=(40, 32))
    perm = np.arange(40)
    perm[:30] = rng.permutation(30)  # rows 30..39 stay paired, a few more by chance
    txt = img[perm]
    res = ev.retrieval_recall(img, txt, ks=(1, 40, 100), chunk_size=7)
    fixed = float(np.mean(perm == np.arange(40)))
    assert fixed < 1.0
    assert res["i2t_R@1"] == pytest.approx(fixed)
    assert res["t2i_R@1"] == pytest.approx(fixed)
    assert res["i2t_R@40"] == res["i2t_R@100"] == 1.0  # k >= n: every query is found
    assert res == _brute_force_recall(img, txt, (1, 40, 100))


@pytest.mark.parametrize(("n", "chunk_size"), [(1500, 1024), (37, 1), (37, 10), (37, 37), (37, 1000)])
def test_retrieval_matches_brute_force_for_any_chunk(n, chunk_size):
    rng = np.random.default_rng(n + chunk_size)
    img = rng.normal(size=(n, 8))
    perm = np.arange(n)
    swap = rng.choice(n, size=n // 3, replace=False)
    perm[swap] = rng.permutation(swap)
    txt = img[perm] + 0.7 * rng.normal(size=(n, 8))
    ks = (1, 5, 10)
    res = ev.retrieval_recall(img, txt, ks=ks, chunk_size=chunk_size)
    assert res == _brute_force_recall(img, txt, ks)
    assert 0.0 < res["i2t_R@1"] < res["i2t_R@10"] < 1.0  # a non-trivial case


def test_retrieval_ties_count_only_strictly_greater():
    e = np.eye(4)
    img = e[[0, 0, 1, 2]]
    txt = e[[0, 0, 2, 3]]
    # i2t ranks: 0, 0 (tie with row 0 does not count), 0 (all sims 0), 1 (text 2 matches image 3)
    # t2i ranks: 0, 0, 1 (image 3 matches text 2), 0
    res = ev.retrieval_recall(img, txt, ks=(1, 2))
    assert res["i2t_R@1"] == 0.75 and res["t2i_R@1"] == 0.75
    assert res["i2t_R@2"] == 1.0 and res["t2i_R@2"] == 1.0


def test_retrieval_accepts_torch():
    rng = np.random.default_rng(11)
    img, txt = rng.normal(size=(30, 8)), rng.normal(size=(30, 8))
    res = ev.retrieval_recall(torch.from_numpy(img), torch.from_numpy(txt), ks=(1, 5))
    assert res == ev.retrieval_recall(img, txt, ks=(1, 5))


# --------------------------------------------------------------------------------------------- report


# ------------------------------------------------------------------------------------------ bad input

_RNG = np.random.default_rng(13)
_X = _RNG.normal(size=(10, 4))
_Y = np.arange(10) % 2
_C = _RNG.normal(size=(2, 4))


def _nan(x: np.ndarray) -> np.ndarray:
    x = x.copy()
    x[0, 0] = np.nan
    return x


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: ev.zero_shot_accuracy(_X[0], _C, _Y), "image_emb"),
        (lambda: ev.zero_shot_accuracy(_nan(_X), _C, _Y), "image_emb"),
        (lambda: ev.zero_shot_accuracy(_X, _C[:, :3], _Y), "class_emb"),
        (lambda: ev.zero_shot_accuracy(_X, _C[None, None], _Y), "class_emb"),
        (lambda: ev.zero_shot_accuracy(_X, np.inf * _C, _Y), "class_emb"),
        (lambda: ev.zero_shot_accuracy(_X, _C, _Y[:-1]), "labels"),
        (lambda: ev.zero_shot_accuracy(_X, _C, _Y.astype(float)), "labels"),
        (lambda: ev.zero_shot_accuracy(_X, _C, _Y[:, None]), "labels"),
        (lambda: ev.zero_shot_accuracy(_X, _C, _Y + 1), "labels"),  # label 2 with only 2 classes
        (lambda: ev.zero_shot_predict(_X, _C[:0]), "class_emb"),
        (lambda: ev.linear_probe_accuracy(_X[:, :, None], _Y, _X, _Y), "train_x"),
        (lambda: ev.linear_probe_accuracy(_X, _Y[:5], _X, _Y), "train_y"),
        (lambda: ev.linear_probe_accuracy(_X, np.zeros(10, dtype=int), _X, _Y), "train_y"),
        (lambda: ev.linear_probe_accuracy(_X, _Y, _X[:, :3], _Y), "test_x"),
        (lambda: ev.linear_probe_accuracy(_X, _Y, _nan(_X), _Y), "test_x"),
        (lambda: ev.linear_probe_accuracy(_X, _Y, _X, _Y.astype(np.float32)), "test_y"),
        (lambda: ev.linear_probe_accuracy(_X, _Y, _X, _Y, C=0.0), "C"),
        (lambda: ev.few_shot_accuracy(_X, _Y, _X, _Y, shots=(0,)), "shots"),
        (lambda: ev.few_shot_accuracy(_X, _Y, _X, _Y, shots=()), "shots"),
        (lambda: ev.few_shot_accuracy(_X, _Y, _X, _Y, shots=(6,)), "shots"),
        (lambda: ev.few_shot_accuracy(_X, _Y, _X, _Y, shots=(1,), trials=0), "trials"),
        (lambda: ev.retrieval_recall(_X, _X[:-1]), "text_emb"),
        (lambda: ev.retrieval_recall(_X, _X[:, :3]), "text_emb"),
        (lambda: ev.retrieval_recall(_nan(_X), _X), "image_emb"),
        (lambda: ev.retrieval_recall(_X, _X, ks=(0, 1)), "ks"),
        (lambda: ev.retrieval_recall(_X, _X, ks=()), "ks"),
        (lambda: ev.retrieval_recall(_X, _X, ks=(1.5,)), "ks"),
        (lambda: ev.retrieval_recall(_X, _X, chunk_size=0), "chunk_size"),
    ],
)
def test_bad_inputs_raise_value_error_naming_the_parameter(call, name):
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        call()
