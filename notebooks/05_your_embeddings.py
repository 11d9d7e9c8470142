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
# # 5. Bring your own embeddings: the geometry of a paired embedding space
#
# Give this notebook a file of paired embeddings (row $i$ of the image embeddings goes with row $i$
# of the text embeddings, both in one shared space, as a CLIP-style model produces them) and it
# measures the geometry the other notebooks follow during training: the modality gap and where it
# lives, alignment and uniformity, how many directions the embeddings use, how well the pairs
# retrieve each other, and what Brownian bridges between the pairs look like. The report is stored
# as a run, so the dashboard shows it next to the training runs.
#
# **The file.** A `.npz` with arrays `image_emb` $(n, d)$ and `text_emb` $(n, d)$, optionally
# `labels` $(n,)$ (integers or strings) and `captions` $(n,)$ (strings); or a `.parquet` with
# list columns `image_emb`, `text_emb` (or wide columns `image_emb_0, image_emb_1, ...`) and
# optional `labels` / `captions` columns. `workbench.data.userdata.save_paired_embeddings` writes
# either. With `embeddings_path` empty, the notebook uses an example made offline by
# `workbench.labs.embedding_report.make_example_embeddings`: a small CLIP model trained for 300 steps on
# sklearn's digits with captions, and the embeddings of all 1,797 digits and their captions.

# %% tags=["parameters"]
embeddings_path: str = ""  # a .npz or .parquet of paired embeddings; empty: the offline digits example
max_points: int = 800  # pairs drawn in the projections (a seeded subset); the measures use every pair
bridge_pairs: int = 6  # pairs whose Brownian-bridge paths are drawn
seed: int = 0  # seed of the drawn subset, the separability split and the bridge noise
temperature: float = 0.07  # temperature of the CLIP loss in the gap-shift experiment

# %% [markdown]
# ## Reading and checking the file
#
# `resolve_embeddings_path` turns the parameter into a file (making the example when it is empty)
# and refuses a missing file or another format, naming `embeddings_path`. `load_paired_embeddings`
# then checks the content: both arrays present, 2-D, the same number of rows, finite, at least two
# rows. The geometry needs one shared space, so image and text must also have the same dimension.
# `build_loss` checks the temperature of the last section.

# %%
from workbench.data.userdata import load_paired_embeddings
from workbench.labs.embedding_report import embedding_report, resolve_embeddings_path, subsample_rows
from workbench.losses import build_loss
from workbench.viz.notebook import setup_figures

setup_figures()  # every figure also as HTML, plotly.js embedded once: readable without a kernel

path = resolve_embeddings_path(embeddings_path)
data = load_paired_embeddings(path)
n = data["image_emb"].shape[0]
drawn = subsample_rows(n, max_points, seed)
bridged = drawn[subsample_rows(len(drawn), bridge_pairs, seed + 1, name="bridge_pairs", minimum=1)]
build_loss("clip", temperature=temperature)
print(f"{path}: {n} pairs, image dim {data['image_emb'].shape[1]}, text dim {data['text_emb'].shape[1]}")
print(f"labels: {data['labels'] is not None}, captions: {data['captions'] is not None}")

# %% [markdown]
# ## The geometry report
#
# All measures are on L2-normalised rows $x_i$ (image) and $y_i$ (text), following methods.md §4:
#
# * **Gap vector and centroid gap** (Liang et al. 2022, "Mind the Gap"):
#   $g = \bar x - \bar y$ with $\bar x = \frac1n \sum_i x_i$, and $\lVert g \rVert$. Zero when the two
#   modalities share a centre; CLIP-like models keep them apart, each in its own cone.
# * **Paired distance** $\frac1n\sum_i \lVert x_i - y_i\rVert$ and **alignment**
#   $\frac1n\sum_i \lVert x_i - y_i\rVert^2 = 2 - 2\,\overline{\cos(x_i, y_i)}$ (Wang & Isola 2020):
#   how far each image is from its own caption.
# * **Relative modality gap** (Schrodi et al. 2025): $d_M / (d_M + (d_I + d_T)/2)$, where $d_M$ maps
#   the mean paired cosine to a distance and $d_I$, $d_T$ do the same for the mean cosine between
#   different items of one modality. It compares the image-caption distance with the spread inside
#   each modality, so it does not grow just because everything is spread out.
# * **Modality separability** (Fahim et al. 2024): held-out accuracy of a logistic regression
#   telling image rows from text rows; 0.5 means the modalities are mixed, 1.0 that a hyperplane
#   splits them.
# * **Uniformity** $\log \frac{1}{n(n-1)}\sum_{i\ne j} e^{-2\lVert z_i - z_j\rVert^2}$ per modality
#   (averaged), and **cross-uniformity** between images and captions: lower means more spread over
#   the sphere (Wang & Isola 2020).
# * **Cone**: mean cosine between different items of one modality (Liang et al.); near 1 means a
#   narrow cone.
# * **Effective rank** $\exp\left(-\sum_k p_k \log p_k\right)$ with $p_k = s_k / \sum_j s_j$ the
#   normalised singular values (Roy & Vetterli 2007): how many directions carry the embeddings.
# * **Retrieval** recall@$k$ image→text and text→image among all $n$ pairs, and their mean.
#
# `embedding_report` computes all of them and writes the run; the O(n²) measures use at most
# 2,000 pairs. Reporting the same file again returns the stored run (the run id includes the file's
# content hash).

# %%
run = embedding_report(path, seed=seed)
print(f"run {run.run_id} ({run.status})")
run.table("geometry")

# %% [markdown]
# ## The two modalities in one picture
#
# A 2-D PCA of all image and caption embeddings together (`workbench.viz.projection.run_projection`,
# cached in the run folder, so the dashboard reuses it), drawing the `max_points` pairs. Grey lines
# join each image to its caption. The red arrow is the gap vector $g$, from the caption centroid to
# the image centroid, placed exactly by the same linear projection.
#
# The purple curves are **Brownian bridges** between a few pairs (Jiang et al., CVPR 2023):
# $W(t) = (1-t)\,x_i + t\,y_i + \sigma\,(B(t) - t\,B(1))$ re-projected to the sphere, with $B$ a
# standard Brownian motion, so $W(0) = x_i$, $W(1) = y_i$ and the noise has variance
# $\sigma^2 t(1-t)$ per coordinate. The bridge regularizer of notebook 3 asks an augmented image to
# lie near such a bridge's mean, between the image and its caption.
#
# What to look for: two separate clouds with parallel pair lines mean a large, systematic gap (one
# shift explains most of the image-caption distance); clouds that overlap with pair lines in all
# directions mean the gap is small compared with the spread. With labels, colour by class: classes
# that are clusters in both modalities are what zero-shot classification and linear probes use.
# The controls redraw the figure when the notebook runs interactively.

# %%
import ipywidgets as widgets
import numpy as np

from workbench.metrics.geometry import bridge_paths
from workbench.viz.controls import show_linked
from workbench.viz.embedding import PointInfo, add_gap_arrow, add_paths, scatter_figure
from workbench.viz.projection import run_projection

snapshot = run.snapshot(0)
a, b = snapshot["a"], snapshot["b"]
info = PointInfo.from_snapshot(snapshot, run.read_json("class_names") if data["labels"] is not None else None)
subset = PointInfo(
    ids=info.ids[drawn],
    labels=None if info.labels is None else info.labels[drawn],
    captions=None if info.captions is None else info.captions[drawn],
    class_names=info.class_names,
)
paths = bridge_paths(a, b, n_paths=3, n_steps=24, sigma=0.15, seed=seed, pairs=bridged)


def projection_figure(color_by: str, dims: int):
    projection = run_projection(run, method="frozen_pca", dims=dims)
    coords = {key: value[drawn] for key, value in projection.at(0).items()}
    fig = scatter_figure(
        coords,
        subset,
        color_by=color_by,
        pair_lines=200,
        bounds=projection.bounds(),
        axis_title="PC",
        title=f"{n} pairs, {len(drawn)} drawn: PCA of images and captions",
    )
    add_gap_arrow(fig, projection.place(0, b.mean(axis=0)), projection.place(0, a.mean(axis=0)))
    return add_paths(fig, projection.place(0, paths), name=f"Brownian bridges ({len(bridged)} pairs)")


colour_options = ["modality", "class"] if data["labels"] is not None else ["modality"]
controls = {
    "color_by": widgets.Dropdown(options=colour_options, value="modality", description="colour by"),
    "dims": widgets.ToggleButtons(options=[2, 3], value=2, description="dims"),
}
_ = show_linked(projection_figure, controls, box=widgets.HBox(list(controls.values())))

# %% [markdown]
# ## Where the gap lives, and how many directions are used
#
# Left: $|\bar x_d - \bar y_d|$ for the dimensions that carry most of the gap, and the cumulative
# share of $\lVert g\rVert^2$ (Schrodi et al. 2025 find that a few dimensions carry most of it in
# CLIP). A steep cumulative curve means the gap is a shift along a few axes; a flat one means it is
# spread over the whole space. Right: the normalised singular values of the images, the captions
# and both together; a spectrum that drops fast means a low effective rank, i.e. the embeddings
# live near a low-dimensional subspace (a narrow cone shows up as one dominant value).

# %%
from workbench.viz.embedding import per_dimension_gap_figure, singular_spectrum_figure

per_dimension_gap_figure(a, b, top=min(32, a.shape[1]), title="Per-dimension gap").show()
singular_spectrum_figure(a, b, title="Singular spectrum").show()

# %% [markdown]
# ## Does closing the gap help the contrastive loss?
#
# Liang et al. (2022, §4.2) move both modalities towards each other along the gap vector,
# $x_i' = \mathrm{normalize}(x_i - \lambda g/2)$ and $y_i' = \mathrm{normalize}(y_i + \lambda g/2)$,
# and recompute the loss: $\lambda = 0$ is the embedding as given, $\lambda = 1$ puts both centroids
# at their midpoint, $\lambda < 0$ widens the gap. The loss here is the symmetric CLIP loss over all
# $n$ pairs at once (every other caption is a negative) at the temperature parameter.
#
# How to read it: if the lowest loss sits at $\lambda \approx 0$, the gap is where the loss wants it,
# which is what Liang et al. report for CLIP at its learned temperature. If the loss keeps falling
# as the gap closes, the loss would prefer a smaller gap and something else holds the modalities
# apart, such as the separate cones random towers start in (Liang et al.'s cone effect) or a
# minibatch objective that differs from this all-pairs one. The offline example, a small model
# trained briefly on batches of 128, is of the second kind at every temperature we tried
# (0.01 to 0.1): its loss is lowest near $\lambda = 1$.

# %%
from workbench.viz.embedding import gap_shift_curve, whatif_figure

curve = gap_shift_curve(
    a, b, shifts=np.linspace(-1.0, 1.5, 11), loss="clip", loss_params={"temperature": temperature}
)
whatif_figure(curve, current=0.0, title="CLIP loss against a shift along the gap vector").show()

# %%
print("report run:", run.run_id)
print("open the dashboard with `workbench app`")
