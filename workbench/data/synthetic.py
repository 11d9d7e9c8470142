"""The simulated data of the article's small-batch experiment.

Each sample i has a latent identity ``z_i ~ N(0, I_m)``; its two views are noisy linear images of
it, ``x_a = z A + sigma * xi``, ``x_b = z B + sigma * xi'``. Noise is injected as *near-duplicates*:
a fraction ``noise`` of the samples are copies of another sample's latent plus a small perturbation
(``z_j = z_i + delta * nu``). A near-duplicate is a hard negative that exists once in the whole
population, so a batch of B rows contains it with probability (B - 1) / (N - 1): the minibatch
negatives' distribution differs from the population's in exactly the heavy tail that dominates
``Z_i``. That is where the ratio estimator ``grad Zhat / Zhat`` of minibatch InfoNCE is most
biased, and where a decomposable loss that weights negatives by a running ``1 / Z_i`` should not be.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from workbench.data.base import PairDataset


def _check_fraction(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    return float(value)


def make_synthetic(
    num_samples: int = 256,
    latent_dim: int = 8,
    input_dim: int = 16,
    noise: float = 0.0,
    duplicate_spread: float = 0.2,
    view_noise: float = 0.3,
    seed: int = 0,
) -> PairDataset:
    """Simulated paired data with an injected fraction of near-duplicate samples.

    Args:
        num_samples: N >= 4.
        latent_dim: size m of the shared latent.
        input_dim: size of each view's input.
        noise: fraction of samples that are near-duplicates of another sample, in [0, 1).
        duplicate_spread: delta, the distance scale between a sample and its near-duplicate.
        view_noise: sigma, per-view input noise.
        seed: data seed (independent of the model seed).
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 4:
        raise ValueError(f"num_samples must be an integer >= 4, got {num_samples!r}")
    for name, value in (("latent_dim", latent_dim), ("input_dim", input_dim)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    noise = _check_fraction("noise", noise)
    if noise > 0.5:
        raise ValueError(f"noise must be <= 0.5 (duplicates copy distinct samples), got {noise!r}")
    if duplicate_spread < 0 or view_noise < 0:
        raise ValueError("duplicate_spread and view_noise must be >= 0")
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((num_samples, latent_dim))
    num_duplicates = math.floor(noise * num_samples)  # <= N/2: each duplicate copies a distinct sample
    # The duplicates overwrite the last rows; each copies a distinct row of the first part.
    originals = rng.choice(num_samples - num_duplicates, size=num_duplicates, replace=False)
    duplicates = np.arange(num_samples - num_duplicates, num_samples)
    latent[duplicates] = latent[originals] + duplicate_spread * rng.standard_normal(
        (num_duplicates, latent_dim)
    )
    mix_a = rng.standard_normal((latent_dim, input_dim)) / np.sqrt(latent_dim)
    mix_b = rng.standard_normal((latent_dim, input_dim)) / np.sqrt(latent_dim)
    x_a = latent @ mix_a + view_noise * rng.standard_normal((num_samples, input_dim))
    x_b = latent @ mix_b + view_noise * rng.standard_normal((num_samples, input_dim))
    is_duplicate = np.zeros(num_samples, dtype=np.int64)
    is_duplicate[duplicates] = 1
    return PairDataset(
        name="synthetic",
        x_a=torch.tensor(x_a, dtype=torch.float32),
        x_b=torch.tensor(x_b, dtype=torch.float32),
        labels=is_duplicate,
        class_names=["original", "near-duplicate"],
        info={"noise": noise, "num_duplicates": num_duplicates, "duplicate_of": originals.tolist()},
    )
