"""The decomposable contrastive loss from Bayesian data augmentation (Chen et al., NeurIPS 2022)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor
from torch.nn import functional as F

from workbench.losses._base import check_choice
from workbench.losses.bank import EmbeddingBank
from workbench.losses.partition import RunningPartitionLoss

ESTIMATORS = ("bank", "exact", "running", "batch")
BANK_ESTIMATORS = ("bank", "exact")
DEFAULT_ESTIMATOR = "bank"

PopulationSource = Callable[[], tuple[Tensor, Tensor]]


class BayesLoss(RunningPartitionLoss):
    r"""Decomposable InfoNCE through Gamma-distributed auxiliary variables, optimised by stochastic EM.

    **Derivation** (reconstructed by this project from the public abstract and the Amazon Science
    article; the paper's full text was not available, so the Gamma parameters and the E-step
    estimators are ours). The global objective is ``L = (1/N) sum_i l_i`` with
    ``l_i = -s_ii / tau + log Z_i`` and ``Z_i = (1/P) sum_j exp(s_ij / tau)`` over all P partition terms
    of anchor i (its positive and every other sample). A minibatch cannot estimate ``grad l_i``
    without bias: even an unbiased batch estimate ``Zhat_i`` (positive weighted 1/P, the batch's
    negatives by their mean; ``workbench.losses.partition``) enters as ``grad Zhat_i / Zhat_i``, and the
    mean of a ratio is not the ratio of the means. The trick is to take the logarithm out. For any
    ``Z > 0``, ``1/Z = \int_0^\infty exp(-u Z) du``, hence

        exp(-l_i) = exp(s_ii / tau) / Z_i = \int_0^\infty exp(s_ii / tau - u_i Z_i) du_i.

    Read as a joint density over the parameters and a latent ``u_i >= 0``, the integrand is linear in
    ``Z_i`` inside the exponential, and the posterior of ``u_i`` given the parameters is
    ``Gamma(shape 1, rate Z_i)``, with mean ``1 / Z_i``. Stochastic EM alternates:

    * E-step: draw ``u_i`` for the batch's anchors from ``Gamma(k, rate k * R_i)``, ``R_i`` an estimate
      of ``Z_i`` (the *estimator*, below). ``k = 1`` is the posterior; a larger ``k`` (tempering)
      keeps the mean ``1 / R_i`` and divides the variance by k (averaging m draws is the same as
      raising k to m k); ``k = inf`` is the point estimate ``u_i = 1 / R_i``.
    * M-step: an SGD step on the per-anchor surrogate ``-s_ii / tau + u_i * Zhat_i - log u_i - 1``
      with ``u_i`` held fixed. It is linear in the negatives (decomposable), and since
      ``log Z = min_u [u Z - log u - 1]`` (minimum at ``u = 1/Z``) its value bounds ``l_i`` from above,
      tightly at ``u_i = 1 / Z_i``.

    **Why the E-step decides the bias.** The step is ``-grad s_ii / tau + u_i grad Zhat_i``: affine in
    ``u_i``, so Gamma draws add variance but never bias (their expectation is the point estimate). If
    ``u_i`` does not depend on which negatives the batch drew, the expected step over batches is
    ``-grad s_ii / tau + E[u_i] grad Z_i``, the full-data gradient ``grad l_i = -grad s_ii / tau + grad
    Z_i / Z_i`` exactly when ``E[u_i] = 1 / Z_i(theta)`` at the current parameters. (Checked by
    enumerating every batch: ``tests/losses/test_bayes_bank.py``.) Everything therefore rests on how well
    ``1 / R_i`` tracks ``1 / Z_i(theta)``; an unbiased ``R_i`` is not enough, since
    ``E[1 / R] >= 1 / E[R]`` (Jensen), with a gap that grows with R's relative variance.

    **Estimators** (``estimator=``), per step for a batch of B samples with d-dimensional features:

    * ``"bank"`` (default): a memory bank (``workbench.losses.bank``) holds the last embedding of both
      sides of every sample. The batch's rows are written first (so each anchor and its positive are
      current); then ``R_i`` is ``Z_i`` computed against the bank, the other samples as last seen.
      Cost: 2B x N dot products (4B x N for "views") without backward, roughly N / (3B) times the
      M-step of the same batch on a CPU, and 2 N d floats of state. Bias: only the staleness of the
      rows not seen since the parameters moved (none at fixed parameters once every sample has been
      seen; until then the candidates are the rows written so far, and the first step is the batch
      estimate). ``bank_size=K`` takes, each
      step, a random subset of K samples of the bank as candidates, shared by the batch's anchors:
      cost 2B x K. ``R_i`` stays unbiased for ``Z_i`` but its relative variance grows like
      (1/K - 1/N), and Jensen's gap with it, with a constant set by how much of ``Z_i`` sits in rare
      hard negatives: measured below, K must be a sizeable fraction of N at temperature 0.1.
      MoCo's queue is the same kind of memory (detached past embeddings), but it keeps the latest K
      keys and puts them into the M-step's softmax denominator, which changes the objective (a queue
      holding in-batch keys biases it even at B = N); here the bank only sets the weight, and the
      gradient still flows through the batch alone. SogCLR keeps a scalar per sample instead (a
      running average of batch estimates folded in before weighting), which costs nothing but
      tracks ``Z_i`` through a few small-batch estimates; the bank is what that scalar approximates.
    * ``"exact"``: the oracle control for small N. ``R_i = Z_i(theta)`` over all N samples, from the
      whole dataset's embeddings at the current parameters, provided by the caller: call
      :meth:`set_population` (a, b of all N samples) at least every ``refresh_every`` steps, or
      register a callable with :meth:`set_population_source`, which the loss calls when a refresh is
      due. It is the bank with every row refreshed; unbiased at ``refresh_every=1``. Cost: the
      caller's forward pass over all N samples per refresh, plus the bank's E-step.
    * ``"running"`` (the first reconstruction): ``R_i`` is a per-sample running average of past batch
      estimates (rate ``gamma``; the estimate from *before* this batch, so ``u_i`` is independent of
      its negatives; on a first visit the batch estimate). Cost: nothing beyond the batch, 2N floats
      of state. Biased: an average of a few (B - 1)-negative estimates is unbiased for Z but not for
      1/Z, rarely contains the rare hard negatives, and goes stale.
    * ``"batch"`` (the ablation): ``R_i = Zhat_i`` of the current batch, which makes the step the ratio
      ``grad Zhat_i / Zhat_i`` again (exact at B = N).

    **Measured** (``python -m workbench.labs.gradbias --mode exact --losses clip bayes bayes-point
    bayes-k64 bayes-running bayes-batch bayes-exact --batch-sizes 4 16 64 --repeats 50 --bias-repeats
    4000``: the synthetic pairs, N = 256, a tiny two-tower model after 100 clip steps, temperature 0.1,
    warm state). Relative gradient bias ||E[g_B] - g*|| / ||g*|| at B = 4 / 16 / 64, exact (closed
    form) unless a noise floor is given:

    * ``"bank"`` and ``"exact"``: 1.3e-6 at every B (float32 round-off), with or without Gamma draws;
    * ``"bank"``, ``bank_size`` K (independent of B): 1.81 (K = 16), 1.02 (32), 0.48 (64), 0.17 (128),
      0.061 (192), 0.014 (240);
    * ``"running"`` (gamma 0.1): 1.20 / 0.53 / 0.21;
    * ``"batch"`` (by random partitions, ± the noise floor): 0.59 ± 0.29 (unresolved) / 0.38 ± 0.12 /
      0.17 ± 0.04;
    * minibatch InfoNCE (``clip``): 0.97 / 0.86 / 0.55 (± 0.03).

    The default is the bank: it removes the bias, needs nothing from the caller, and costs one no-grad
    product against N rows per step (``bank_size`` trades bias back for cost when N is large). What
    it does not remove is the variance every decomposable estimator shares: an anchor's rare hard
    negative is weighted by about N / B when it is drawn, so at B = 4 the trace of the step's
    covariance was 240 (point estimate; 300 with k = 1) against 0.23 for InfoNCE, and 2.5 (4.8) against
    0.45 at B = 64, with ||g*||^2 = 0.083; the running estimator's is comparable (360 and 4.5 with
    k = 1). In training that variance, not InfoNCE's bias, decides small-batch runs: on the
    one-parameter toy of ``workbench.labs.toy`` (optimum theta* = 1 by construction; RESULTS.md
    section 2.2) the bank's expected step at fixed parameters is the full-data gradient, but one
    step's standard deviation at B = 4 is about 24 against full-data gradients below 0.5, and SGD runs
    with it end far from theta*, while InfoNCE's runs move slowly towards a biased fixed point.

    Multi-process training: every process writes the whole (gathered) batch into its bank and
    computes the E-step for every anchor of it, so the bank and the weights stay identical everywhere;
    random choices (Gamma draws, the ``bank_size`` subset) are taken from process 0. The bank is a
    registered buffer, so checkpoints (``loss.state_dict()``) carry it and a resumed run continues
    exactly.

    Args:
        num_samples: dataset size N.
        temperature: tau > 0.
        shape: Gamma shape k > 0, or ``math.inf`` for the point estimate.
        estimator: "bank", "exact", "running" or "batch" (see above).
        gamma: rate of the running average of Z in (0, 1] (``estimator="running"`` only; gamma = 1 on
            a sample's first visit).
        bank_size: K in [1, N]: a random K-sample subset of the bank per step ("bank"/"exact"); None
            uses every filled row.
        refresh_every: steps between full refreshes of the bank from the population source, >= 1
            ("exact" requires one per this many steps; for "bank" a registered source is optional).
        negatives: "cross" (two-tower) or "views" (SimCLR).
        include_positive: keep the positive in the partition sum.
        normalize: L2-normalise the features first.
        chunk_size: exact memory-linear computation in chunks of this many anchors.
        implementation: "auto", "naive", "chunked" or "fused" (see ``ContrastiveLoss``).
        validate: check ``index`` values and features on every call; False in training.
    """

    def __init__(
        self,
        num_samples: int,
        temperature: float = 0.1,
        shape: float = 1.0,
        estimator: str = DEFAULT_ESTIMATOR,
        gamma: float = 0.1,
        bank_size: int | None = None,
        refresh_every: int = 1,
        negatives: str = "cross",
        include_positive: bool = True,
        normalize: bool = True,
        chunk_size: int | None = None,
        implementation: str = "auto",
        validate: bool = True,
    ):
        super().__init__(
            num_samples, temperature, negatives, include_positive, gamma, normalize, chunk_size,
            implementation, validate,
        )  # fmt: skip
        if isinstance(shape, bool) or not isinstance(shape, (int, float)) or math.isnan(shape) or shape <= 0:
            raise ValueError(f"shape (the Gamma shape k) must be > 0 or math.inf, got {shape!r}")
        self.shape = float(shape)
        self.estimator = check_choice("estimator", estimator, ESTIMATORS)
        uses_bank = estimator in BANK_ESTIMATORS
        if bank_size is not None:
            if (
                isinstance(bank_size, bool)
                or not isinstance(bank_size, int)
                or not 1 <= bank_size <= num_samples
            ):
                raise ValueError(
                    f"bank_size must be None or an integer in [1, num_samples={num_samples}], "
                    f"got {bank_size!r}"
                )
            if not uses_bank:
                raise ValueError(f"bank_size applies to estimator 'bank' or 'exact', not {estimator!r}")
        if isinstance(refresh_every, bool) or not isinstance(refresh_every, int) or refresh_every < 1:
            raise ValueError(f"refresh_every must be an integer >= 1, got {refresh_every!r}")
        if refresh_every != 1 and not uses_bank:
            raise ValueError(f"refresh_every applies to estimator 'bank' or 'exact', not {estimator!r}")
        self.bank_size = bank_size
        self.refresh_every = refresh_every
        self.bank = EmbeddingBank(num_samples) if uses_bank else None
        self.population_source: PopulationSource | None = None
        self._mean_draws = False
        # (2, N) log R fixed for the current call (the bank's E-step; NaN off the batch), or None
        self._fixed_log_rate: Tensor | None = None

    # --- the population (estimator "exact", optional for "bank") -----------------------------------
    @property
    def needs_population(self) -> bool:
        """Whether the caller must provide the whole dataset's embeddings (``estimator="exact"``)."""
        return self.estimator == "exact"

    def set_population(self, a: Tensor, b: Tensor) -> None:
        """Refresh every bank row from the embeddings ``a``, ``b`` (N, d) of the whole dataset.

        Pass them raw (the loss normalises them when ``normalize=True``), in dataset order, computed at
        the current parameters. Counts as the refresh of the current step.
        """
        if self.bank is None:
            raise ValueError(f"set_population needs estimator 'bank' or 'exact', not {self.estimator!r}")
        self._check_features(a, b)
        if a.shape[0] != self.num_samples:
            raise ValueError(
                f"population a and b must have shape (num_samples={self.num_samples}, d), "
                f"got {tuple(a.shape)}"
            )
        if self.normalize:
            a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
        self.bank.fill(a, b, int(self.steps))

    def set_population_source(self, source: PopulationSource | None) -> None:
        """Register ``source() -> (a, b)``, the whole dataset's embeddings at the current parameters.

        The loss calls it when a refresh is due (every ``refresh_every`` training steps); None
        unregisters. Under multi-process training every process calls it, so it must return the same
        embeddings everywhere (fixed views, the shared parameters).
        """
        if source is not None and not callable(source):
            raise ValueError(
                f"source must be a callable returning (a, b) or None, got {type(source).__name__}"
            )
        if source is not None and self.bank is None:
            raise ValueError(f"a population source needs estimator 'bank' or 'exact', not {self.estimator!r}")
        self.population_source = source

    def _refresh_if_due(self) -> None:
        if self.population_source is None and self.estimator == "bank":
            return  # nothing to refresh from, and no host read of the step counters in a plain step
        last = int(self.bank.refreshed_at)
        if last >= 0 and int(self.steps) - last < self.refresh_every:
            return
        if self.population_source is not None:
            with torch.no_grad():
                self.set_population(*self.population_source())
        elif self.estimator == "exact":
            when = "before the first step" if last < 0 else f"every refresh_every={self.refresh_every} steps"
            raise ValueError(
                "estimator='exact' needs the whole dataset's embeddings at the current parameters "
                f"{when}: call loss.set_population(a_all, b_all) or register "
                "loss.set_population_source(fn)"
            )

    # --- E-step ------------------------------------------------------------------------------------
    @contextmanager
    def expected_draws(self) -> Iterator[BayesLoss]:
        """Within the block, ``u`` is the Gamma draws' mean ``1 / R`` (their expected step, exactly)."""
        previous, self._mean_draws = self._mean_draws, True
        try:
            yield self
        finally:
            self._mean_draws = previous

    def _loss(self, a: Tensor, b: Tensor, index: Tensor, scale: Tensor, bias) -> Tensor:
        if self.bank is None:
            return super()._loss(a, b, index, scale, bias)
        self._fixed_log_rate = self._bank_e_step(a, b, index, scale)
        try:
            return super()._loss(a, b, index, scale, bias)
        finally:
            self._fixed_log_rate = None

    @torch.no_grad()
    def _bank_e_step(self, a: Tensor, b: Tensor, index: Tensor, scale: Tensor) -> Tensor:
        """log Z over the bank for every anchor of the (whole, gathered) batch, as a (2, N) table."""
        self._refresh_if_due()
        self.bank.write(a, b, index)
        candidates = None  # every filled row
        if self.bank_size is not None and self.bank_size < self.num_samples:
            candidates = self.bank.draw_subset(self.bank_size)
            if self._local is not None:  # process 0's subset, so every process uses the same
                candidates = self.sharding.gather(candidates)[: self.bank_size]
        population = self.population_terms() if self.include_positive else None
        log_z = self.bank.log_partition(
            index, scale, candidates, self.negatives, population, self.chunk_size, self._logit_bound
        )
        table = torch.full((2, self.num_samples), math.nan, dtype=log_z.dtype, device=log_z.device)
        table[:, index] = log_z
        return table

    def expected_step_objective(
        self, a: Tensor, b: Tensor, scale: Tensor | float | None = None, subset_draws: int = 1000
    ) -> Tensor | None:
        """A scalar whose gradient is the expected step over uniformly random batches; None if unknown.

        Known in closed form when, in the current state, no anchor's weight depends on which samples
        share its batch: ``"running"`` once every sample has been visited (the weight is the stored
        estimate), ``"bank"``/``"exact"`` once the bank holds exactly these embeddings (writing a batch
        then changes nothing; ``"exact"`` refreshes first if due, as a step would). With ``bank_size``
        the subset is drawn independently of the batch, so the expected weight is the mean of
        ``1 / R`` over subsets, averaged over ``subset_draws`` random subsets (global RNG): the only
        Monte-Carlo part, with a relative error of about std(u) / mean(u) / sqrt(subset_draws) per
        anchor. The step is affine in ``u`` and ``Zhat_i`` is unbiased for ``Z_i`` (see the class
        docstring), so the expectation is the step at B = N with the same weights, and Gamma draws enter
        through their mean. Its value is the expected surrogate at the mean draw. Otherwise (a first
        visit, a stale or partial bank, ``"batch"``) None. The state is left as it was (the global
        RNG advances by the subset draws).

        Args:
            a, b: raw (N, d) embeddings of every sample, in dataset order, at the current parameters.
            scale: as for the forward call.
            subset_draws: random subsets averaged over for the weights when ``bank_size`` is set.
        """
        self._check_features(a, b)
        if a.shape[0] != self.num_samples:
            raise ValueError(f"a and b must hold all num_samples={self.num_samples} rows, got {a.shape[0]}")
        if self.normalize:
            a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
        scale = self._resolve_scale(scale, a)
        index = torch.arange(self.num_samples, device=self.log_z.device)
        with torch.no_grad():
            log_rate = self._batch_independent_log_rate(a, b, index, scale, subset_draws)
        if log_rate is None:
            return None
        steps = self.steps.clone()
        self._fixed_log_rate = log_rate
        try:
            with self.expected_draws():
                return RunningPartitionLoss._loss(self, a, b, index, scale, None)
        finally:
            self._fixed_log_rate = None
            self.steps.copy_(steps)

    def _batch_independent_log_rate(
        self, a: Tensor, b: Tensor, index: Tensor, scale: Tensor, subset_draws: int
    ) -> Tensor | None:
        if self.estimator == "running":
            return self.log_z.clone() if bool(self.visited.all()) else None
        if self.bank is None or (self.bank_size is not None and self.bank_size < 2):
            return None  # (with K = 1 an anchor may draw only itself and fall back on its batch)
        if self.estimator == "exact":
            self._refresh_if_due()
        rows = self.bank.rows
        if not self.bank.complete or rows.shape[2] != a.shape[1]:
            return None
        tol = 16 * torch.finfo(rows.dtype).eps  # the rows are these embeddings, up to round-off
        if not all(torch.allclose(rows[s], x.to(rows), rtol=0, atol=tol) for s, x in enumerate((a, b))):
            return None
        population = self.population_terms() if self.include_positive else None
        if self.bank_size is None:
            return self.bank.log_partition(index, scale, None, self.negatives, population, self.chunk_size)
        # A subset drawn independently of the batch: the expected weight is the mean of 1 / R over
        # subsets, estimated from ``subset_draws`` of them (the only sampling left).
        log_u = []
        for _ in range(subset_draws):
            subset = torch.randperm(self.num_samples, device=index.device)[: self.bank_size]
            log_r = self.bank.log_partition(index, scale, subset, self.negatives, population, self.chunk_size)
            log_u.append(-log_r)  # never NaN: a subset of K >= 2 holds another sample
        return -(torch.logsumexp(torch.stack(log_u), dim=0) - math.log(subset_draws))

    def _log_weight(self, log_zhat: Tensor, slots: Tensor, samples: Tensor) -> Tensor:
        if self.estimator == "batch":
            log_rate = log_zhat
        elif self._fixed_log_rate is not None:
            # NaN: no candidate negative in a tiny bank_size subset; the batch estimate stands in
            banked = self._fixed_log_rate[slots, samples].to(log_zhat.dtype)
            log_rate = torch.where(torch.isnan(banked), log_zhat, banked)
        else:
            seen = self.visited[slots, samples]
            log_rate = torch.where(seen, self.log_z[slots, samples].to(log_zhat.dtype), log_zhat)
            self._update(log_zhat, slots, samples, self.gamma)
        if math.isinf(self.shape) or self._mean_draws:
            return -log_rate
        concentration = torch.full_like(log_rate, self.shape)
        draws = torch._standard_gamma(concentration).clamp_min(torch.finfo(log_rate.dtype).tiny)
        return torch.log(draws / self.shape) - log_rate

    def reset_state(self) -> None:
        """Forget every estimate and bank row (as before training)."""
        super().reset_state()
        if self.bank is not None:
            self.bank.reset()

    def extra_repr(self) -> str:
        text = super().extra_repr() + f", shape={self.shape}, estimator={self.estimator!r}"
        if self.bank is not None:
            text += f", bank_size={self.bank_size}, refresh_every={self.refresh_every}"
        return text
