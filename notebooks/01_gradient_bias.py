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
# # 1. Gradient bias against batch size, for every loss
#
# Why does contrastive learning want large batches? Chen et al. (NeurIPS 2022, "Why do we need
# large batch sizes in contrastive learning? A gradient-bias perspective") answer: the minibatch
# gradient of InfoNCE is a **biased** estimate of the gradient of the objective we actually care
# about, and the bias shrinks only as the batch grows. Their fix is a loss that is *decomposable*
# (a sum over pairs), obtained from a Bayesian augmentation with Gamma-distributed auxiliary
# variables.
#
# This notebook measures that bias directly. On a fixed set of $N$ pairs and a fixed, partly trained
# model it computes the exact full-data gradient $g^*$ of each loss's global objective, draws many
# random minibatches of size $B$, and reports how far the minibatch gradients $g_B$ are from $g^*$:
# bias, variance, their sum (the mean squared error), the cosine between $\mathbb{E}[g_B]$ and
# $g^*$, and the Jensen gap of the loss value. Every loss of the zoo is measured, and the stateful
# ones (MoCo's queue, SogCLR's and the Bayesian loss's running estimates) twice: *cold* and *warm*.
#
# All computation is `workbench.labs.gradbias.run_gradbias`; the figures come from `workbench.viz.bias`.
# RESULTS.md, section 1, reports the same measurement at 4,000 averaged batches per cell.

# %% tags=["parameters"]
dataset: str = "synthetic"  # pair dataset: synthetic or digits_views
num_samples: int = 256  # N of the synthetic data (digits_views always has its 1,797 rows)
noise: float = 0.0  # synthetic data only: fraction of near-duplicate samples, in [0, 0.5]
losses: list[str] = ["all"]  # labels of workbench.labs.gradbias.ALL_LOSSES (e.g. clip,bayes), or all
batch_sizes: list[int] = [4, 16, 64, 256]  # batch sizes in [2, N]; include N to see the bias vanish
repeats: int = 30  # minibatches with a full parameter gradient per cell (variance, distributions)
bias_repeats: int = 1000  # minibatches averaged in embedding space per cell (the mean gradient)
pretrain_steps: int = 100  # full-batch clip steps before measuring (0 measures at initialisation)
temperature: float = 0.1  # temperature of every loss that has one
model_size: str = "tiny"  # encoder size: tiny, small, ... (workbench.models.MODEL_SIZES)
seed: int = 0  # seeds the data draw, the model, the batches and the Gamma draws

# %% [markdown]
# ## Checking the parameters
#
# The library checks every value before anything trains: an unknown loss label, a batch size
# outside $[2, N]$, a dataset the lab cannot probe, fewer than two repeats or a non-positive
# temperature fail here with the parameter's name and what it accepts. The run id is a hash of the
# parameters (`workbench.store.runs.config_run_id`), so executing the notebook again with the same values
# reuses the stored measurement instead of repeating it.

# %%
from workbench.labs.gradbias import loss_specs, run_gradbias, validate_gradbias
from workbench.store.runs import config_run_id, load_run
from workbench.viz.notebook import setup_figures

setup_figures()  # every figure also as HTML, plotly.js embedded once: readable without a kernel

specs = loss_specs(losses)
dataset_params = {"num_samples": num_samples, "noise": noise} if dataset == "synthetic" else {}
settings = dict(
    losses=specs,
    batch_sizes=batch_sizes,
    repeats=repeats,
    bias_repeats=bias_repeats,
    dataset=dataset,
    dataset_params=dataset_params,
    model_size=model_size,
    pretrain_steps=pretrain_steps,
    temperature=temperature,
)
_, data = validate_gradbias(**settings)
run_id = config_run_id("gradbias-nb", {**settings, "seed": seed})
print(f"{len(specs)} losses, N = {len(data)}, batch sizes {batch_sizes}; run {run_id}")

# %% [markdown]
# ## The global objective and why the minibatch gradient is biased
#
# Write $s_{ij} = \langle a_i, b_j \rangle / \tau$ for the scaled similarity of the two embeddings
# of pairs $i$ and $j$ (unit vectors, temperature $\tau$). The objective every InfoNCE-type loss
# targets is the **global** one, each anchor against all $N$ samples:
#
# $$\mathcal{L}(\theta) = \frac{1}{N}\sum_{i=1}^{N}\Big[-s_{ii} + \log Z_i\Big], \qquad
#   Z_i = \frac{1}{N}\sum_{j=1}^{N} e^{s_{ij}} .$$
#
# A minibatch replaces $Z_i$ by an estimate $\hat Z_i$ from the $B$ rows of the batch. Even when
# $\hat Z_i$ is unbiased, $\mathbb{E}[\hat Z_i] = Z_i$, its logarithm is not, and neither is the
# gradient
#
# $$\nabla \log \hat Z_i = \frac{\nabla \hat Z_i}{\hat Z_i},$$
#
# a **ratio estimator**: the expectation of a ratio of two correlated noisy quantities is not the
# ratio of their expectations. A second-order expansion around $Z_i$ gives
#
# $$\mathbb{E}\Big[\frac{\nabla \hat Z_i}{\hat Z_i}\Big] \approx \frac{\nabla Z_i}{Z_i}
#   - \frac{\operatorname{Cov}(\nabla \hat Z_i, \hat Z_i)}{Z_i^2}
#   + \frac{\nabla Z_i \operatorname{Var}(\hat Z_i)}{Z_i^3},$$
#
# and both correction terms shrink like the variance of a batch mean, i.e. like $1/B$ (more
# precisely like $1/B - 1/N$ when the batch is drawn without replacement, so the bias is exactly
# zero at $B = N$). That is the article's "why large batches". The expansion assumes $\hat Z_i$ is
# concentrated; at $\tau = 0.1$ and $B = 4$ it is not, and the measured bias saturates instead of
# following $1/B$.
#
# Plain minibatch InfoNCE (`clip`, `ntxent`) adds a second, simpler bias: its $\hat Z_i$ is the
# batch mean, in which the positive has weight $1/B$ instead of $1/N$, so $\hat Z_i$ is not even
# unbiased for $Z_i$. The `bayes-batch` ablation keeps the ratio but weights the positive $1/N$
# (`workbench/losses/partition.py`), which separates the two sources.
#
# **The decomposable loss.** Because $1/Z = \int_0^\infty e^{-uZ}\,du$,
#
# $$e^{-\ell_i} = \frac{e^{s_{ii}}}{Z_i} = \int_0^\infty e^{\,s_{ii} - u_i Z_i}\, du_i ,$$
#
# so an auxiliary variable $u_i$ with posterior $\mathrm{Gamma}(1, \text{rate } Z_i)$,
# $\mathbb{E}[u_i] = 1/Z_i$, turns the per-anchor loss into $-s_{ii} + u_i Z_i$: **linear** in the
# negatives, hence decomposable, and its minibatch estimate $-s_{ii} + u_i \hat Z_i$ has an unbiased
# gradient *given* $u_i$. Stochastic EM alternates drawing $u_i$ (E-step) and a gradient step on the
# weighted loss (M-step). The catch, which this notebook measures: $Z_i$ is unknown, so the Gamma
# rate comes from an estimate $R_i$ (the E-step's *estimator*), and $\mathbb{E}[u_i] = 1/Z_i$ holds
# only if $1/R_i$ tracks $1/Z_i$ at the current parameters. The variants:
#
# | label | what the weight $u_i$ is |
# |---|---|
# | `bayes` | the default: a draw from $\mathrm{Gamma}(1, \text{rate } R_i)$, $R_i = Z_i$ against a bank |
# | `bayes-point` | the bank's point estimate $u_i = 1/R_i$ (Gamma shape $k = \infty$) |
# | `bayes-k64` | the bank, but a random 64-sample subset of it per step (`bank_size=64`) |
# | `bayes-exact` | the oracle: $R_i = Z_i$ over all $N$ at the current parameters |
# | `bayes-running` | the first reconstruction: $R_i$ a per-sample running mean of past batch estimates |
# | `bayes-batch` | $1/\hat Z_i$ of the current batch: the ratio estimator again (ablation) |
# | `sogclr` | $1/\tilde Z_i$ with the current batch folded in first (Yuan et al. 2022) |
#
# Why the bank is the default: at fixed parameters it is unbiased (relative bias 1.3e-6, float
# round-off, at every $B$; `bayes-running` 1.20 / 0.53 / 0.21 at $B$ = 4 / 16 / 64), it needs
# nothing from the caller, and it costs one no-grad product of the batch against $N$ rows. What it
# does not remove is variance: an anchor's rare hard negative is weighted by about $N/B$ when drawn
# (section "Bias or variance" below; notebook 2 shows what that does to training).
#
# The running means average past batch estimates with rate $\gamma$ (0.1 for `bayes-running`, 0.9 for
# `sogclr`). The bank (`estimator="bank"`) holds every sample's last embeddings.
#
# **Cold and warm.** A stateful loss measured with an empty state (*cold*, as on the first epoch)
# falls back to the current batch's estimate. *Warm* first runs warm-up passes over the data at the
# current parameters (about $3/\gamma$ passes), as later in training. For MoCo, warm means a full
# queue of keys.

# %% [markdown]
# ## What is measured, and the uncertainty bands
#
# For each loss and batch size, with $R$ full minibatch gradients and $R_b$ minibatches averaged
# for the mean (`repeats`, `bias_repeats`):
#
# * **bias** $\lVert \mathbb{E}[g_B] - g^* \rVert$; the average of $R_b$ batches overshoots it by
#   sampling noise, which is subtracted in quadrature (`workbench.labs.gradbias` docstring);
#   **relative bias** = bias / $\lVert g^* \rVert$;
# * **variance** $\mathbb{E}\lVert g_B - \mathbb{E} g_B \rVert^2$ (trace of the covariance);
# * **MSE** $\mathbb{E}\lVert g_B - g^* \rVert^2 = \text{bias}^2 + \text{variance}$: what an SGD step
#   actually suffers;
# * **cosine** $\cos(\mathbb{E}[g_B], g^*)$: does the *average* step point the right way;
# * **Jensen gap** $\mathbb{E}[\mathcal{L}_B] - \mathcal{L}$ of the loss value (partition sums
#   written as means so that different $B$ target the same value).
#
# The shaded bands are the Monte-Carlo error of this one measurement, not the spread over seeds:
# bias $\pm$ the noise floor $\sqrt{\operatorname{tr}\operatorname{Cov}(g_B) / (R_b - 1)}$, which is
# the root-mean-square length of the error of the averaged gradient and so bounds the error of the
# bias (triangle inequality); variance $\times (1 \pm \sqrt{2/(R-1)})$ (Gaussian approximation). A
# band reaching the bottom of the plot means the bias is not resolved from zero at this $R_b$.
# Details: `workbench.viz.bias` docstring.

# %%
from workbench.viz.bias import bias_table

table = run_gradbias(**settings, seed=seed, run_id=run_id)
samples = load_run(run_id).table("gradbias_samples")
bias_table(table)

# %% [markdown]
# The table gives relative bias $\pm$ its noise floor (relative to $\lVert g^* \rVert$, 3 significant
# digits; "≈ 0 (round-off)" where the bias is zero up to float precision, at $B = N$), per loss,
# state and batch size.

# %% [markdown]
# ## Relative bias against batch size
#
# The first figure shows four losses, the stateful ones in their warm state (as later in
# training): plain InfoNCE (`clip`), its two fixes that carry $Z_i$ across batches (`sogclr`,
# `bayes`) and the `bayes-batch` ablation. Log-log, with the noise-floor band; the band stops at the
# noise floor, below which the measurement cannot tell values apart. At $B = N$ every "minibatch" is a
# permutation of the data, so the bias of the stateless losses is zero up to float round-off; that
# point is marked with an open triangle at the bottom instead of stretching the axis by six decades.
# The second figure shows every loss and state, one panel per family. What to look for:
#
# * `clip`, `ntxent` and a cold `moco` start near 1 at $B = 4$ (the average step is about as far
#   from $g^*$ as $g^*$ is long), fall with $B$, and reach float round-off at $B = N$ (the
#   triangles). That is the bias vanishing, not a plotting artefact.
# * `bayes-batch` lies below `clip`: fixing the positive's weight removes a large share of
#   InfoNCE's bias; what is left is the ratio bias. At the default budget this is resolved at
#   $B = 64$ (about 0.17 against 0.55); at $B = 4$ the band of `bayes-batch` is too wide to tell.
# * Warm `bayes-running` is *above* its cold version at small $B$: at fixed parameters a running
#   average of a few small-batch estimates is unbiased for $Z_i$ but not for $1/Z_i$ (Jensen again).
#   Warm `sogclr` shows the same direction within its band. Warm `bayes` (the bank) and
#   `bayes-exact` sit at the noise floor: their bias is not resolved from zero.
#
# Read the stateful losses with care: their gradients are heavy-tailed, so the variance estimated
# from `repeats` gradients (and with it the noise floor that the bias is corrected by) is itself
# uncertain, more than the band says. RESULTS.md, section 1, repeats the measurement with 100
# gradients and 4,000 averaged batches per cell (warm `bayes` at $B = 4$: $1.45 \pm 1.25$).
# * `siglip` and a warm `moco` do not target the global InfoNCE gradient at all (SigLIP's minibatch
#   objective weights negatives differently at every $B$; the queue repeats keys), so their "bias"
#   is a change of objective; a warm `moco` stays biased even at $B = N$.

# %%
from workbench.viz.bias import batch_bars, batch_distribution, bias_curves, bias_overview, decomposition

bias_overview(table).show()
bias_curves(table, "rel_bias", title="relative bias of every loss and state, per family").show()

# %% [markdown]
# ## Bias or variance: the mean squared error
#
# An SGD step suffers bias$^2$ + variance. Pick a loss: the figure splits its MSE. What to look
# for: for `clip` the variance is small and the bias$^2$ is a large share of the MSE at small
# $B$, so averaging more steps (a smaller learning rate) does not remove the error; only a larger
# batch does. The stateful estimators trade bias for variance: their variance is orders of
# magnitude larger at $B = 4$ (a few negatives, reweighted by a noisy $u_i$), which averages out over
# steps but makes each step noisy. The Gamma draws of `bayes` add variance on top of `bayes-point`.

# %%
import ipywidgets as widgets

from workbench.viz.controls import show_linked

loss_labels = list(dict.fromkeys(table.loss))
_ = show_linked(
    lambda loss: decomposition(table, loss),
    {"loss": widgets.Dropdown(options=loss_labels, value=loss_labels[0], description="loss")},
)

# %% [markdown]
# ## Any metric, any loss
#
# The same curves for every metric of the table. `cosine` close to 1 means the average minibatch
# step points where the full gradient does; the Jensen gap is on a linear axis (it changes sign).
# For `clip` the gap is *positive*: the positive's weight $1/B$ inflates $\hat Z_i$ more than the
# concavity of the logarithm deflates it. For `bayes-batch`, whose $\hat Z_i$ is unbiased, the gap
# is negative, $\mathbb{E}[\log \hat Z_i] < \log Z_i$, exactly as Jensen's inequality says.

# %%
METRICS = ["rel_bias", "bias", "variance", "mse", "cosine", "jensen_gap", "bias_floor"]


def metric_figure(metric: str, loss: str):
    return bias_curves(table, metric, losses=None if loss == "all" else [loss])


metric_controls = {
    "metric": widgets.Dropdown(options=METRICS, value="mse", description="metric"),
    "loss": widgets.Dropdown(options=["all", *loss_labels], value="all", description="loss"),
}
_ = show_linked(metric_figure, metric_controls, box=widgets.HBox(list(metric_controls.values())))

# %% [markdown]
# ## Single minibatches at one batch size
#
# The curves above describe the *average* minibatch gradient. Pick a batch size to see single
# ones: the boxes show, over the `repeats` minibatches of each loss, $\cos(g_B, g^*)$ or the
# relative error $\lVert g_B - g^* \rVert / \lVert g^* \rVert$; the bars show
# $\cos(\mathbb{E}[g_B], g^*)$ of their average. What to look for:
#
# * At small $B$ a single step is almost orthogonal to $g^*$ for *every* loss (median cosine
#   about 0.03 at $B = 4$ and 0.2 at $B = 64$ with the defaults): a batch moves mainly the
#   embeddings of its own rows. Only the average over many steps (the bars, about 0.45 for `clip`
#   at $B = 4$) points roughly the right way. Single steps are noisy; the bias is what survives
#   averaging.
# * The relative error separates the losses: at $B = 4$ a `clip` step misses $g^*$ by about
#   $\lVert g^* \rVert$, a `sogclr` or Bayesian step by 15 to 25 times that. Their lower bias is
#   bought with far more variance.

# %%
def batch_figures(batch_size: int, column: str):
    return [batch_distribution(samples, batch_size, column), batch_bars(table, batch_size, "cosine")]


batch_controls = {
    "batch_size": widgets.SelectionSlider(
        options=sorted(batch_sizes), value=min(batch_sizes), description="batch size"
    ),
    "column": widgets.Dropdown(options=["cosine", "rel_error"], value="cosine", description="per batch"),
}
_ = show_linked(batch_figures, batch_controls, box=widgets.HBox(list(batch_controls.values())))

# %% [markdown]
# ## What this says about large batches
#
# * Minibatch InfoNCE is biased, the bias falls with $B$ and vanishes at $B = N$: large batches are
#   needed to make the *expected* step right, not only to make it less noisy.
# * Making the loss decomposable removes the bias only if the auxiliary weight $u_i$ has the right
#   mean. With a running estimate that is stale or built from a few negatives, it does not: at
#   fixed parameters the warm running estimators (`bayes-running`, `sogclr`) are *more* biased than
#   their first visit. With the bank E-step (the default) it does: the bias is float round-off.
# * Unbiased is not enough at small $B$. The decomposable step's variance at $B = 4$ is about a
#   thousand times InfoNCE's (the "Bias or variance" figure), and notebook 2's one-parameter toy
#   shows the consequence: InfoNCE's runs settle quietly at a biased fixed point, the unbiased
#   decomposable runs scatter widely around the optimum. RESULTS.md sections 1 and 2 have the
#   numbers.
# * To overlay this measurement with other runs (another seed, temperature or dataset), stack
#   their tables with `workbench.viz.bias.label_runs` and pass `run="run"` to `bias_curves`, or
#   use the dashboard's gradient-bias page.
#
# The full measurement of RESULTS.md: `workbench gradbias --repeats 100 --bias-repeats 4000`
# (or `python -m workbench.labs.gradbias ...`); a sweep over temperatures:
# `workbench sweep 01_gradient_bias --grid temperature=0.05,0.1,0.5`.

# %%
print("run written:", run_id)
print("open the dashboard with `workbench app`")
