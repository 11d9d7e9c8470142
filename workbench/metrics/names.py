"""What every logged metric means: a readable label, its unit, which direction is better, its axis.

One table for the figures (``workbench.viz``) and the dashboard, so a measure is named, explained and
formatted the same way everywhere. Keys are the column names the labs and trainers log (metrics.csv,
geometry reports, gradient-bias tables, summaries). :func:`describe` also resolves the patterned
names (``i2t_R@5``, ``fewshot_10_acc``, ``loss_bridge``, ``*_mean`` / ``*_std`` of summaries, the fusion
model's ``vqa_acc/digit``, ``ve_chance/parity``, ``itm_t2i_R@5`` ...).

>>> describe("centroid_gap").direction
'lower'
>>> title("i2t_R@5")
'image→text recall@5 (higher is better)'
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

__all__ = ["METRICS", "TASK_LABELS", "MetricName", "describe", "format_value", "help_text", "title"]


@dataclass(frozen=True)
class MetricName:
    """How one metric is shown.

    Attributes:
        name: Column name as logged.
        label: Short readable name.
        unit: Unit or range in words ("" when dimensionless and unbounded).
        direction: ``"higher"`` or ``"lower"`` is better, or ``""`` (neither: a diagnostic).
        log: Draw on a logarithmic axis (non-negative, spans decades).
        definition: One sentence: what it measures.
    """

    name: str
    label: str
    unit: str = ""
    direction: str = ""
    log: bool = False
    definition: str = ""

    @property
    def better(self) -> str:
        """``"higher is better"``, ``"lower is better"`` or ``""``."""
        return f"{self.direction} is better" if self.direction else ""


def _m(name: str, label: str, unit: str = "", direction: str = "", log: bool = False, definition: str = ""):
    return name, MetricName(name, label, unit, direction, log, definition)


#: Every metric the labs log, by column name.
METRICS: dict[str, MetricName] = dict(
    [
        # geometry of paired embeddings (workbench.metrics.geometry.geometry_report)
        _m("centroid_gap", "centroid gap", "distance on the unit sphere, 0 to 2", "lower", False,
           "‖mean image − mean text‖ of the L2-normalised embeddings (Liang et al. 2022)"),
        _m("relative_modality_gap", "relative modality gap", "fraction, 0 to 1", "lower", False,
           "paired distance relative to the spread inside each modality (Schrodi et al. 2025)"),
        _m("modality_separability", "modality separability", "accuracy, 0.5 to 1", "lower", False,
           "held-out accuracy of a linear classifier telling images from texts; 0.5 = mixed"),
        _m("alignment", "alignment", "squared distance, 0 to 4", "lower", False,
           "mean ‖x_i − y_i‖² between each image and its own caption (Wang & Isola 2020)"),
        _m("uniformity", "uniformity", "log of a mean Gaussian kernel, ≤ 0", "lower", False,
           "log mean exp(−2‖z_i − z_j‖²) within each modality: lower = more spread over the sphere"),
        _m("cross_uniformity", "cross-uniformity", "log of a mean Gaussian kernel, ≤ 0", "lower", False,
           "the uniformity kernel between images and captions of different pairs"),
        _m("cone", "cone (mean cosine)", "cosine, −1 to 1", "lower", False,
           "mean cosine between different items of one modality; near 1 = a narrow cone"),
        _m("effective_rank", "effective rank", "directions, 1 to d", "higher", False,
           "exp(entropy of the normalised singular values) (Roy & Vetterli 2007)"),
        _m("paired_distance", "paired distance", "distance, 0 to 2", "lower", False,
           "mean ‖x_i − y_i‖ between each image and its own caption"),
        _m("mean_pair_cosine", "mean pair cosine", "cosine, −1 to 1", "higher", False,
           "mean cosine between each image and its own caption"),
        # downstream (workbench.metrics.downstream)
        _m("zero_shot_acc", "zero-shot accuracy", "fraction, 0 to 1", "higher", False,
           "a test image classified by its nearest class prompt"),
        _m("linear_probe_acc", "linear probe accuracy", "fraction, 0 to 1", "higher", False,
           "logistic regression on the frozen image embeddings, held-out accuracy"),
        _m("text_probe_acc", "text probe accuracy", "fraction, 0 to 1", "higher", False,
           "logistic regression on the frozen caption embeddings"),
        _m("concat_probe_acc", "image+text probe accuracy", "fraction, 0 to 1", "higher", False,
           "logistic regression on image and caption embeddings concatenated"),
        _m("knn_acc", "k-NN accuracy", "fraction, 0 to 1", "higher", False,
           "k-nearest-neighbour classification of held-out embeddings"),
        _m("mean_R", "mean recall", "fraction, 0 to 1", "higher", False,
           "mean of image→text and text→image recall@1, 5 and 10"),
        _m("pos_cos", "positive-pair cosine", "cosine, −1 to 1", "higher", False,
           "mean cosine between the two views of a pair"),
        # fusion model (workbench.training.fusion): matching head and its re-ranked retrieval
        _m("itm_acc", "image-text matching accuracy", "balanced accuracy, 0.5 to 1", "higher", False,
           "matching head on each held-out pair and its hardest negatives, (positives + negatives) / 2"),
        _m("itm_mean_R", "mean recall, re-ranked by matching", "fraction, 0 to 1", "higher", False,
           "mean recall@1, 5, 10 both ways after the matching head re-ranks the contrastive top k"),
        _m("zero_shot_itm_acc", "zero-shot accuracy via matching", "fraction, 0 to 1", "higher", False,
           "a test image classified by the class prompts the matching head scores highest"),
        _m("loss_itc", "loss term image-text contrastive", "nats", "lower", False,
           "the contrastive objective of the fusion model's unimodal embeddings"),
        _m("loss_itm", "loss term image-text matching", "nats", "lower", False,
           "cross-entropy of the matching head on positives and hard negatives"),
        _m("loss_mlm", "loss term masked tokens", "nats", "lower", False,
           "cross-entropy of the masked caption words predicted from the fused tokens"),
        # training
        _m("train_loss", "training loss", "nats", "lower", False, "the minibatch loss being optimised"),
        _m("global_loss", "global loss", "nats", "lower", False,
           "the loss over all N pairs at once (every other sample a negative)"),
        _m("loss_total", "total loss", "nats", "lower", False, "contrastive loss plus regularizers"),
        _m("loss_base", "contrastive loss", "nats", "lower", False, "the loss without regularizers"),
        _m("scale", "logit scale 1/τ", "inverse temperature", "", True, "learned multiplier of the cosines"),
        _m("lr", "learning rate", "", "", True, "optimiser step size"),
        _m("progress", "progress", "fraction of the way to L*, ≤ 1", "higher", False,
           "(L_0 − L) / (L_0 − L*) of the global loss"),
        _m("excess", "excess loss L − L*", "nats", "lower", True, "global loss above the full-batch optimum"),
        # gradient bias (workbench.labs.gradbias.COLUMNS)
        _m("rel_bias", "relative bias", "fraction of ‖g*‖", "lower", True,
           "‖E[g_B] − g*‖ / ‖g*‖: how far the average minibatch step is from the full gradient"),
        _m("bias", "bias", "gradient norm", "lower", True, "‖E[g_B] − g*‖"),
        _m("bias_raw", "raw bias", "gradient norm", "lower", True,
           "‖mean of R_b minibatch gradients − g*‖ before the sampling noise is subtracted"),
        _m("variance", "variance", "squared gradient norm", "lower", True,
           "E‖g_B − E g_B‖² (trace of the covariance)"),
        _m("mse", "MSE", "squared gradient norm", "lower", True, "E‖g_B − g*‖² = bias² + variance"),
        _m("cosine", "cos(E[g_B], g*)", "cosine, −1 to 1", "higher", False,
           "does the average minibatch step point where the full gradient does"),
        _m("jensen_gap", "Jensen gap", "nats", "", False, "E[L_B] − L of the loss value; changes sign"),
        _m("bias_floor", "noise floor of the bias", "gradient norm", "", True,
           "√(tr Cov(g_B) / R_b): the bias cannot be resolved below it"),
        _m("rel_error", "relative error of one step", "fraction of ‖g*‖", "lower", True,
           "‖g_B − g*‖ / ‖g*‖ of a single minibatch"),
    ]
)  # fmt: skip

_RECALL = re.compile(r"^(i2t|t2i)_R@(\d+)$")
_FEWSHOT = re.compile(r"^fewshot_(\d+)_acc$")
_SUMMARY = re.compile(r"^(.+)_(mean|std)$")
_ITM_RECALL = re.compile(r"^itm_(i2t|t2i)_R@(\d+)$")
_ITM_FEWSHOT = re.compile(r"^fewshot_itm_(\d+)_acc$")
# reasoning tasks of the fusion model: vqa_acc, vqa_acc/digit, vqa_chance/digit, vqa_ft_acc
_TASK = re.compile(r"^(vqa|ve|nlvr)_(acc|chance|ft_acc)(?:/(\w+))?$")
#: Readable names of the fusion model's reasoning tasks (workbench.data.reasoning.TASKS).
TASK_LABELS = {"vqa": "VQA", "ve": "visual entailment", "nlvr": "NLVR (two images)"}


def describe(name: str) -> MetricName:
    """The :class:`MetricName` of a logged column; unknown names get their own name as label."""
    if name in METRICS:
        return METRICS[name]
    if match := _RECALL.match(name):
        way = "image→text" if match[1] == "i2t" else "text→image"
        return MetricName(name, f"{way} recall@{match[2]}", "fraction, 0 to 1", "higher", False,
                          f"share of queries whose true match is among the {match[2]} nearest")  # fmt: skip
    if match := _FEWSHOT.match(name):
        return MetricName(name, f"{match[1]}-shot accuracy", "fraction, 0 to 1", "higher", False,
                          f"nearest class mean of {match[1]} labelled images per class")  # fmt: skip
    if match := _ITM_RECALL.match(name):
        way = "image→text" if match[1] == "i2t" else "text→image"
        definition = "recall after the matching head re-ranks the contrastive top k"
        label = f"{way} recall@{match[2]}, re-ranked by matching"
        return MetricName(name, label, "fraction, 0 to 1", "higher", False, definition)
    if match := _ITM_FEWSHOT.match(name):
        definition = f"{match[1]} labelled images per class, on their matching scores with the prompts"
        label = f"{match[1]}-shot accuracy via matching"
        return MetricName(name, label, "fraction, 0 to 1", "higher", False, definition)
    if match := _SUMMARY.match(name):
        base = describe(match[1])
        if match[2] == "mean":
            return MetricName(name, f"{base.label} (mean over seeds)", base.unit, base.direction, base.log,
                              base.definition)  # fmt: skip
        return MetricName(name, f"{base.label} (std over seeds)", base.unit, "", base.log, base.definition)
    if match := _TASK.match(name):
        return _task_name(name, match[1], match[2], match[3])
    if name.startswith("loss_"):
        return MetricName(name, f"loss term {name[5:]}", "nats", "lower", False, "one term of the loss")
    return MetricName(name, name)


def _task_name(name: str, task: str, what: str, kind: str | None) -> MetricName:
    """A reasoning task's accuracy (probed or fine-tuned) or chance level, in total or for one kind."""
    questions = f", {kind.replace('_', ' ')} questions" if kind else ""
    label, unit = TASK_LABELS[task], "fraction, 0 to 1"
    if what == "chance":
        definition = "accuracy of guessing uniformly among the answers each question allows"
        return MetricName(name, f"{label} chance level{questions}", unit, "", False, definition)
    if what == "ft_acc":
        definition = "held-out accuracy after fine-tuning the model with an answer head"
        return MetricName(name, f"{label} accuracy, fine-tuned{questions}", unit, "higher", False, definition)
    definition = "held-out accuracy of a logistic-regression answer classifier on the frozen fused features"
    return MetricName(name, f"{label} accuracy{questions}", unit, "higher", False, definition)


def title(name: str, unit: bool = False) -> str:
    """``label (higher is better)``, optionally with the unit: for axis and subplot titles."""
    info = describe(name)
    parts = [info.better] + ([info.unit] if unit and info.unit else [])
    parts = [p for p in parts if p]
    return f"{info.label} ({'; '.join(parts)})" if parts else info.label


def help_text(name: str) -> str:
    """Definition, unit and direction in one line: for tooltips and captions."""
    info = describe(name)
    parts = [info.definition, info.unit, info.better]
    return ". ".join(p[0].upper() + p[1:] for p in parts if p) or info.label


def format_value(value: float, digits: int = 3) -> str:
    """``value`` to ``digits`` significant digits, without exponent clutter for ordinary sizes.

    >>> format_value(0.00000000000006)
    '6e-14'
    >>> format_value(0.55234)
    '0.552'
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    value = float(value)
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    if 1e-3 <= abs(value) < 1e5:
        decimals = max(digits - 1 - math.floor(math.log10(abs(value))), 0)
        return f"{value:.{decimals}f}"
    return f"{value:.{digits}g}"
