"""Datasets (workbench.data): the synthetic near-duplicate data, digits views, and batch sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.data import (
    PairDataset,
    build_dataset,
    dataset_names,
    epoch_batch,
    sample_batch,
    step_generator,
)
from workbench.data.synthetic import make_synthetic


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


# --- synthetic ----------------------------------------------------------------------------------------
def test_synthetic_shapes_and_defaults():
    ds = make_synthetic(num_samples=40, latent_dim=5, input_dim=12)
    assert isinstance(ds, PairDataset)
    assert ds.name == "synthetic" and len(ds) == 40
    assert ds.x_a.shape == ds.x_b.shape == (40, 12)
    assert ds.x_a.dtype == ds.x_b.dtype == torch.float32
    assert ds.in_dims == (12, 12)
    assert not ds.views and ds.augment is None
    np.testing.assert_array_equal(ds.ids, np.arange(40))
    np.testing.assert_array_equal(ds.labels, np.zeros(40, dtype=np.int64))  # noise 0: no duplicates
    assert ds.info["num_duplicates"] == 0
    # without augmentation a batch is plain indexing
    index = torch.tensor([3, 0, 7])
    x_a, x_b = ds.batch(index)
    assert torch.equal(x_a, ds.x_a[index]) and torch.equal(x_b, ds.x_b[index])


def test_synthetic_is_a_function_of_its_seed():
    first, again = make_synthetic(num_samples=32, seed=3), make_synthetic(num_samples=32, seed=3)
    assert torch.equal(first.x_a, again.x_a) and torch.equal(first.x_b, again.x_b)
    other = make_synthetic(num_samples=32, seed=4)
    assert not torch.allclose(first.x_a, other.x_a)
    # independent of the global torch RNG
    torch.manual_seed(123)
    assert torch.equal(make_synthetic(num_samples=32, seed=3).x_a, first.x_a)


def test_synthetic_views_are_paired():
    ds = make_synthetic(num_samples=200, view_noise=0.1)
    # x_b is a fixed linear image of the same latent as x_a: a least-squares map predicts it well
    x_a, x_b = ds.x_a.double(), ds.x_b.double()
    solution = torch.linalg.lstsq(x_a, x_b).solution
    residual = (x_a @ solution - x_b).pow(2).sum() / (x_b - x_b.mean(0)).pow(2).sum()
    assert residual < 0.2
    shuffled = x_b[torch.randperm(200)]
    solution = torch.linalg.lstsq(x_a, shuffled).solution
    assert (x_a @ solution - shuffled).pow(2).sum() / (shuffled - shuffled.mean(0)).pow(2).sum() > 0.8


@pytest.mark.parametrize(("num_samples", "noise"), [(50, 0.1), (40, 0.25), (64, 0.5), (30, 0.3)])
def test_synthetic_near_duplicates(num_samples, noise):
    ds = make_synthetic(num_samples=num_samples, noise=noise, seed=1)
    count = round(noise * num_samples)
    assert ds.info["num_duplicates"] == count
    assert ds.labels.sum() == count
    duplicates = np.arange(num_samples - count, num_samples)
    np.testing.assert_array_equal(np.flatnonzero(ds.labels == 1), duplicates)
    originals = np.asarray(ds.info["duplicate_of"])
    assert len(originals) == count and len(set(originals.tolist())) == count
    assert originals.max() < num_samples - count  # each copies a distinct non-duplicate row

    x = ds.x_a.numpy().astype(np.float64)
    pair_distance = np.linalg.norm(x[duplicates] - x[originals], axis=1)
    all_distances = np.linalg.norm(x[:, None] - x[None], axis=2)
    random_pairs = all_distances[np.triu_indices(num_samples, k=1)]
    assert pair_distance.mean() < 0.5 * random_pairs.mean()
    assert np.median(pair_distance) < np.quantile(random_pairs, 0.05)


def test_synthetic_duplicates_are_close_in_both_views_without_view_noise():
    ds = make_synthetic(num_samples=40, noise=0.25, view_noise=0.0, duplicate_spread=0.01)
    originals = np.asarray(ds.info["duplicate_of"])
    for x in (ds.x_a.numpy(), ds.x_b.numpy()):
        gap = np.linalg.norm(x[30:] - x[originals], axis=1)
        assert gap.max() < 0.05 * np.linalg.norm(x[:30] - x[:30].mean(0), axis=1).mean()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (dict(noise=0.6), r"noise must be <= 0.5"),
        (dict(noise=1.0), r"noise must be in \[0, 1\)"),
        (dict(noise=-0.1), r"noise must be in \[0, 1\)"),
        (dict(num_samples=3), r"num_samples must be an integer >= 4, got 3"),
        (dict(num_samples=10.0), r"num_samples must be an integer"),
        (dict(latent_dim=0), r"latent_dim must be a positive integer"),
        (dict(input_dim=0), r"input_dim must be a positive integer"),
        (dict(view_noise=-1.0), r"view_noise must be >= 0"),
    ],
)
def test_synthetic_rejects_bad_parameters(params, message):
    with pytest.raises(ValueError, match=message):
        make_synthetic(**params)


@pytest.mark.parametrize("num_samples", [7, 11])
def test_synthetic_half_noise_with_odd_sizes(num_samples):
    """noise=0.5 passes validation, but round(0.5 * N) rounds half to even: for N = 7 it asks for 4
    duplicates of distinct rows among the 3 remaining ones. It must either build or say what is wrong."""
    try:
        ds = make_synthetic(num_samples=num_samples, noise=0.5)
    except ValueError as err:
        assert "noise" in str(err), f"unhelpful error: {err}"
    else:
        count = ds.info["num_duplicates"]
        assert 0 < count <= num_samples - count
        assert len(set(ds.info["duplicate_of"])) == count


# --- digits -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    return build_dataset("digits_views")


def test_digits_views_dataset(digits):
    assert digits.name == "digits_views" and len(digits) == 1797
    assert digits.views and digits.augment is not None
    assert digits.x_a.shape == (1797, 8, 8) and digits.x_a is digits.x_b
    assert digits.in_dims == (64, 64)
    assert float(digits.x_a.min()) == 0.0 and float(digits.x_a.max()) == 1.0
    assert digits.labels.shape == (1797,) and set(digits.labels.tolist()) == set(range(10))
    assert digits.class_names == [str(d) for d in range(10)]


def test_digits_augmentation(digits):
    index = torch.arange(0, 64)
    x_a, x_b = digits.batch(index, torch.Generator().manual_seed(0))
    assert x_a.shape == x_b.shape == (64, 8, 8)
    assert not torch.allclose(x_a, digits.x_a[index])  # augmented
    assert not torch.allclose(x_a, x_b)  # two different augmentations
    assert (x_a - digits.x_a[index]).abs().mean() < 0.5  # ... of the same images
    again = digits.batch(index, torch.Generator().manual_seed(0))
    assert torch.equal(again[0], x_a) and torch.equal(again[1], x_b)


def test_digits_no_shift_no_noise_is_the_identity():
    ds = build_dataset("digits_views", max_shift=0, noise=0.0)
    index = torch.tensor([5, 1, 9])
    x_a, x_b = ds.batch(index, torch.Generator().manual_seed(0))
    assert torch.equal(x_a, ds.x_a[index]) and torch.equal(x_b, ds.x_a[index])


@pytest.mark.parametrize(
    ("params", "message"), [(dict(max_shift=4), "max_shift"), (dict(noise=2.0), "noise must be in")]
)
def test_digits_rejects_bad_parameters(params, message):
    with pytest.raises(ValueError, match=message):
        build_dataset("digits_views", **params)


# --- sampling -----------------------------------------------------------------------------------------
def test_sample_batch_is_a_pure_function_of_seed_and_step(digits):
    first = sample_batch(digits, step=5, batch_size=32, seed=3)
    torch.manual_seed(999)  # the global RNG plays no part
    assert torch.equal(sample_batch(digits, step=5, batch_size=32, seed=3), first)
    assert first.shape == (32,) and first.dtype == torch.int64
    assert not torch.equal(sample_batch(digits, step=5, batch_size=32, seed=4), first)
    assert not torch.equal(sample_batch(digits, step=6, batch_size=32, seed=3), first)


@pytest.mark.parametrize("batch_size", [32, 599])
def test_sample_batch_covers_each_row_once_per_epoch(digits, batch_size):
    per_epoch = 1797 // batch_size
    for epoch in range(2):
        steps = range(epoch * per_epoch, (epoch + 1) * per_epoch)
        rows = torch.cat([sample_batch(digits, s, batch_size, seed=0) for s in steps])
        assert rows.numel() == per_epoch * batch_size
        assert torch.unique(rows).numel() == rows.numel()  # no row twice within an epoch
        assert int(rows.min()) >= 0 and int(rows.max()) < 1797
        if 1797 % batch_size == 0:
            assert torch.equal(rows.sort().values, torch.arange(1797))
    # two epochs are shuffled differently
    next_epoch = sample_batch(digits, per_epoch, batch_size, seed=0)
    assert not torch.equal(sample_batch(digits, 0, batch_size, seed=0), next_epoch)


def test_epoch_batch_exact_cover():
    rows = torch.cat([epoch_batch(step, 8, 32, seed=2) for step in range(4)])
    assert torch.equal(rows.sort().values, torch.arange(32))


def test_custom_batch_sampler_is_used():
    calls = []

    def sampler(step, batch_size, seed):
        calls.append((step, batch_size, seed))
        return torch.arange(batch_size)

    ds = PairDataset("custom", torch.zeros(10, 2), torch.zeros(10, 2), batch_sampler=sampler)
    assert torch.equal(sample_batch(ds, 3, 4, 7), torch.arange(4))
    assert calls == [(3, 4, 7)]


def test_step_generator_streams_are_independent():
    def draw(seed, step, stream):
        return torch.rand(4, generator=step_generator(seed, step, stream))

    assert torch.equal(draw(0, 1, 0), draw(0, 1, 0))
    values = [draw(0, 1, 0), draw(0, 1, 1), draw(0, 2, 0), draw(1, 1, 0)]
    for i in range(len(values)):
        for j in range(i + 1, len(values)):
            assert not torch.equal(values[i], values[j])


# --- registry and validation --------------------------------------------------------------------------
def test_build_dataset_unknown_name_lists_known_ones():
    names = {"synthetic", "digits_views", "digits_captions", "mnist_captions", "infogap"}
    assert names <= set(dataset_names())
    with pytest.raises(ValueError, match=r"unknown dataset 'mnist'; known datasets: synthetic, digits_views"):
        build_dataset("mnist")


def test_pair_dataset_validates_rows():
    with pytest.raises(ValueError, match="same number of rows"):
        PairDataset("bad", torch.zeros(4, 2), torch.zeros(5, 2))
    with pytest.raises(ValueError, match="labels has 3 rows"):
        PairDataset("bad", torch.zeros(4, 2), torch.zeros(4, 2), labels=np.zeros(3))
