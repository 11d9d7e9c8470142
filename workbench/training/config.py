"""What defines a training run: :class:`TrainConfig`, with one task-specific block per kind of model.

The settings every run shares (data, loss, batch, optimiser, schedule, precision, evaluation cadence)
are fields of :class:`TrainConfig`; what only one kind of training understands lives in its task
block (:class:`PairConfig` for two-view and paired datasets, :class:`ImageTextConfig` for two-tower
image-text models, :class:`FusionConfig` for the ALBEF-style fusion model, ``model="fusion"`` on an
image-text dataset). The block is chosen by the dataset and ``model``, so a setting that the run would
ignore cannot be written: regularizers on a two-view dataset, or a model size on an image-text one, fail
when the config is built. A config is validated once, in ``__post_init__``.

A run's ``config.json`` is the flat dict of :meth:`TrainConfig.to_dict` (common fields plus the task
block's fields), and :meth:`TrainConfig.from_dict` reads it back.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from workbench.data import dataset_kind, dataset_parameters
from workbench.data.reasoning import TASKS as REASONING_TASKS
from workbench.losses import loss_names
from workbench.losses.fusion import check_objective_weights
from workbench.models import FUSION_SIZES, MODEL_SIZES
from workbench.models.fusion import IMAGE_ENCODERS, POOLS

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine")
PRECISIONS = ("auto", "fp32", "bf16")
# the models each kind of dataset can train, the first being what "auto" means
MODELS = {"pairs": ("siamese", "two_tower"), "image_text": ("two_tower", "fusion")}
STRUCTURE_KEYS = ("mode", "weights", "bridge_t", "bridge_random_t")


def _positive_int(name: str, value, minimum: int = 1, why: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        bound = "a positive integer" if minimum == 1 else f"an integer >= {minimum}{why}"
        raise ValueError(f"{name} must be {bound}, got {value!r}")


def _choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(str, allowed))}; got {value!r}")


def _dict(name: str, value) -> None:
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a JSON object (dict), got {value!r}")


@dataclass
class PairConfig:
    """Two-view (siamese) or paired (two MLP towers) datasets."""

    task: ClassVar[str] = "pairs"
    model_size: str = "small"

    def __post_init__(self) -> None:
        _choice("model_size", self.model_size, tuple(MODEL_SIZES))


@dataclass
class ImageTextConfig:
    """Two-tower image-text models with modality-structure regularizers (Jiang et al., CVPR 2023).

    Attributes:
        image_tower, text_tower: fields of ``workbench.models.TowerConfig`` (kind, hidden, depth,
            out_dim, ...); unset ones are chosen from the data.
        structure: ``mode`` ("clip" or "four_term"), ``weights`` of separation / bridge / consistency,
            ``bridge_t``, ``bridge_random_t`` (see ``workbench.losses.structures.StructuredLoss``).
    """

    task: ClassVar[str] = "image_text"
    image_tower: dict = field(default_factory=dict)
    text_tower: dict = field(default_factory=dict)
    structure: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("image_tower", "text_tower", "structure"):
            _dict(name, getattr(self, name))
        unknown = sorted(set(self.structure) - set(STRUCTURE_KEYS))
        if unknown:
            raise ValueError(f"unknown structure key(s) {unknown}; allowed: {list(STRUCTURE_KEYS)}")


TEXT_EMBEDDINGS = ("learned", "minilm")


@dataclass
class FusionConfig:
    """The ALBEF-style fusion model (``model="fusion"``; ``workbench.training.fusion``).

    Attributes:
        model_size: ``workbench.models.FUSION_SIZES`` (tiny, small, base).
        structure: the modality-structure regularizers on the unimodal embeddings, as for two towers.
        objective_weights: weight per objective, ``itc`` (contrastive, with the structure
            regularizers), ``itm`` (matching), ``mlm`` (masked tokens); missing ones weigh 1.
        reasoning_tasks: generated tasks to evaluate (``workbench.data.reasoning.TASKS``); they need
            digit images, so use ``[]`` on other data.
        answers: per task, an answer vocabulary replacing the default (it must cover both splits).
        mask_probability: share of caption words chosen for masked-token prediction.
        image_encoder: "vit" (patches) or "cnn" (a conv feature map as tokens).
        patch_size: ViT patch side (0 = automatic).
        pool: what the contrastive embeddings project: "cls" (ALBEF's [CLS] token) or "mean" (the
            mean of each encoder's tokens).
        text_embeddings: "learned" word embeddings, or frozen "minilm" word vectors (the packaged
            all-MiniLM-L6-v2's WordPiece embeddings averaged over each word's pieces).
        per_kind_train, per_kind_test: generated examples per kind of question and split.
        rerank_k: contrastive candidates the matching head re-ranks in retrieval.
        finetune_steps: at snapshots, fine-tune a copy of the model on each reasoning task for this
            many steps (0 = probe only).
        attention_examples: questions whose cross-attention maps each snapshot keeps.
    """

    task: ClassVar[str] = "fusion"
    model_size: str = "small"
    structure: dict = field(default_factory=dict)
    objective_weights: dict = field(default_factory=dict)
    reasoning_tasks: list = field(default_factory=lambda: list(REASONING_TASKS))
    answers: dict = field(default_factory=dict)
    mask_probability: float = 0.15
    image_encoder: str = "cnn"
    patch_size: int = 0
    pool: str = "mean"
    text_embeddings: str = "learned"
    per_kind_train: int = 200
    per_kind_test: int = 60
    rerank_k: int = 16
    finetune_steps: int = 0
    attention_examples: int = 4

    def __post_init__(self) -> None:
        _choice("model_size", self.model_size, tuple(FUSION_SIZES))
        for name in ("structure", "objective_weights", "answers"):
            _dict(name, getattr(self, name))
        unknown = sorted(set(self.structure) - set(STRUCTURE_KEYS))
        if unknown:
            raise ValueError(f"unknown structure key(s) {unknown}; allowed: {list(STRUCTURE_KEYS)}")
        weights = check_objective_weights(self.objective_weights)
        if weights["itc"] == 0 and any((self.structure.get("weights") or {}).values()):
            raise ValueError(
                "structure regularizers ride on the itc objective: objective_weights['itc'] must be > 0"
            )
        tasks = self.reasoning_tasks
        if isinstance(tasks, str) or not isinstance(tasks, list):
            raise ValueError(
                f"reasoning_tasks must be a list among {', '.join(REASONING_TASKS)}; got {tasks!r}"
            )
        unknown = [t for t in tasks if t not in REASONING_TASKS]
        if unknown:
            raise ValueError(
                f"reasoning_tasks has unknown task(s) {unknown}; allowed: {', '.join(REASONING_TASKS)}"
            )
        if len(set(tasks)) != len(tasks):
            raise ValueError(f"reasoning_tasks has duplicates: {tasks}")
        extra = sorted(set(self.answers) - set(tasks))
        if extra:
            raise ValueError(f"answers names task(s) {extra} that are not among reasoning_tasks {tasks}")
        p = self.mask_probability
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p < 1:
            raise ValueError(f"mask_probability must be a number in (0, 1), got {p!r}")
        _choice("image_encoder", self.image_encoder, IMAGE_ENCODERS)
        _choice("pool", self.pool, POOLS)
        _choice("text_embeddings", self.text_embeddings, TEXT_EMBEDDINGS)
        for name, minimum in (
            ("patch_size", 0),
            ("per_kind_train", 2),
            ("per_kind_test", 2),
            ("rerank_k", 1),
            ("finetune_steps", 0),
            ("attention_examples", 0),
        ):
            _positive_int(name, getattr(self, name), minimum)


TASK_CONFIGS: dict[str, type] = {"pairs": PairConfig, "image_text": ImageTextConfig, "fusion": FusionConfig}
TaskConfig = PairConfig | ImageTextConfig | FusionConfig


def _check_fusion_kind(model, dataset: str, kind: str) -> None:
    if model == "fusion" and kind != "image_text":
        raise ValueError(
            f"model='fusion' needs an image-text dataset (digits_captions, mnist_captions, "
            f"image_folder_captions); dataset {dataset!r} is a {kind} dataset"
        )


def _block(kind: str, model) -> type:
    """The task block of a dataset kind and a ``model`` choice."""
    return FusionConfig if kind == "image_text" and model == "fusion" else TASK_CONFIGS[kind]


@dataclass
class TrainConfig:
    """Everything that defines a training run (saved flat as the run's ``config.json``).

    ``task`` is the block of the dataset's kind; left as None it gets that block's defaults.
    """

    dataset: str = "digits_views"
    dataset_params: dict = field(default_factory=dict)
    model: str = "auto"  # siamese for two-view datasets, two_tower otherwise
    loss: str = "ntxent"
    loss_params: dict = field(default_factory=dict)
    learn_scale: bool = False  # a learnable logit scale (and SigLIP bias) passed to the loss
    batch_size: int = 256  # the global batch: split evenly over the processes under torchrun
    micro_batch: int | None = None  # GradCache micro-batch (per process); None = one forward/backward
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "constant"
    steps: int = 300
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"  # bf16 autocast on CUDA, fp32 on CPU
    eval_every: int = 50
    snapshot_every: int = 100
    checkpoint_every: int = 100
    probe_size: int = 512
    task: TaskConfig | None = None

    def __post_init__(self) -> None:
        kind = dataset_kind(self.dataset)  # raises for an unknown dataset, naming the known ones
        _check_fusion_kind(self.model, self.dataset, kind)
        _choice("model", self.model, ("auto", *MODELS[kind]))
        block = _block(kind, self.model)
        if self.task is None:
            self.task = block()
        elif not isinstance(self.task, block):
            raise ValueError(
                f"dataset {self.dataset!r} with model={self.model!r} trains a {block.task} task; "
                f"task must be a {block.__name__}, got {type(self.task).__name__}"
            )
        _choice("loss", self.loss, loss_names())
        _dict("dataset_params", self.dataset_params)
        _dict("loss_params", self.loss_params)
        encoder_unset = "text_encoder" in dataset_parameters(self.dataset) - set(self.dataset_params)
        if isinstance(self.task, FusionConfig) and encoder_unset:
            # the fusion model reads the caption's words itself: MiniLM sentence vectors would be
            # encoded (1-2 min on a fresh store) and never read
            self.dataset_params = {**self.dataset_params, "text_encoder": "tokens"}
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("schedule", self.schedule, SCHEDULES)
        _choice("precision", self.precision, PRECISIONS)
        for name in ("batch_size", "steps", "eval_every", "snapshot_every", "checkpoint_every"):
            _positive_int(name, getattr(self, name))
        _positive_int("batch_size", self.batch_size, 2, " (a contrastive loss needs a negative)")
        _positive_int("probe_size", self.probe_size, 2, " (measures compare probe rows)")
        _positive_int("seed", self.seed, 0)
        if self.micro_batch is not None:
            _positive_int("micro_batch (None or a positive integer)", self.micro_batch)
        for name, zero_allowed in (("lr", False), ("weight_decay", True)):
            value = getattr(self, name)
            number = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
            if not (number and (value > 0 or (zero_allowed and value == 0))):
                bound = ">= 0" if zero_allowed else "> 0"
                raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
        if not isinstance(self.device, str) or not (
            self.device in ("auto", "cpu") or self.device.startswith("cuda")
        ):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {self.device!r}")

    @property
    def kind(self) -> str:
        """The task that trains this config: ``"pairs"``, ``"image_text"`` or ``"fusion"``."""
        return self.task.task

    def to_dict(self) -> dict:
        """The flat dict stored as ``config.json``: common fields, then the task block's fields."""
        common = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "task"}
        # through JSON, so the dict equals what a stored config.json reads back as
        return json.loads(json.dumps({**common, **dataclasses.asdict(self.task)}))

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """Build from a flat dict (``config.json``, CLI values); unknown keys are refused by name.

        Keys of another task's block are accepted when they hold their empty default (configs written
        before the blocks existed carry every key), and refused otherwise.
        """
        if not isinstance(values, dict):
            raise ValueError(f"config must be a dict, got {type(values).__name__}")
        common = {f.name for f in dataclasses.fields(cls)} - {"task"}
        dataset = values.get("dataset", cls.dataset)
        kind = dataset_kind(dataset)
        _check_fusion_kind(values.get("model", cls.model), dataset, kind)
        block = _block(kind, values.get("model", cls.model))
        own = {f.name for f in dataclasses.fields(block)}
        others = {
            f.name: f
            for other in TASK_CONFIGS.values()
            if other is not block
            for f in dataclasses.fields(other)
            if f.name not in own
        }
        unknown = sorted(set(values) - common - own - set(others))
        if unknown:
            raise ValueError(f"unknown config key(s) {unknown}; allowed: {sorted(common | own)}")
        misplaced = sorted(key for key in set(values) & set(others) if values[key] != _default(others[key]))
        if misplaced:
            raise ValueError(
                f"{', '.join(misplaced)} do(es) not apply to dataset {dataset!r} "
                f"(a {block.task} task); its settings are {sorted(own)}"
            )
        task = block(**{key: values[key] for key in own if key in values})
        return cls(**{key: values[key] for key in common if key in values}, task=task)


def _default(f: dataclasses.Field):
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def resolve_device(device: str) -> torch.device:
    """The torch device of a config's ``device`` ("auto" picks CUDA where available)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was requested but CUDA is not available; use 'cpu' or 'auto'")
    return torch.device(device)


# --- command line ------------------------------------------------------------------------------------
def config_fields() -> list[dataclasses.Field]:
    """Every flat config key's field: common ones, then each task block's."""
    seen: dict[str, dataclasses.Field] = {}
    for f in dataclasses.fields(TrainConfig):
        if f.name != "task":
            seen[f.name] = f
    for block in TASK_CONFIGS.values():
        for f in dataclasses.fields(block):
            seen.setdefault(f.name, f)
    return list(seen.values())


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One ``--flag`` per config key; JSON objects for dict fields. Unset flags stay unset (None)."""
    for f in config_fields():
        flag = "--" + f.name.replace("_", "-")
        default = _default(f)
        if isinstance(default, dict):
            parser.add_argument(flag, type=_json_object(flag), default=None, help="JSON object")
        elif isinstance(default, list):
            parser.add_argument(
                flag, type=_json_array(flag), default=None, help=f"JSON array (default: {default})"
            )
        elif f.name == "learn_scale":
            parser.add_argument(flag, action="store_true", default=None)
        elif f.name == "micro_batch":
            parser.add_argument(flag, type=int, default=None, help="GradCache micro-batch (default: off)")
        else:
            parser.add_argument(flag, type=type(default), default=None, help=f"default: {default}")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The config of the flags that were given (the rest keep their defaults)."""
    values = {f.name: getattr(args, f.name) for f in config_fields() if getattr(args, f.name) is not None}
    return TrainConfig.from_dict(values)


def _json_array(flag: str):
    def parse(text: str) -> list:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as err:
            raise argparse.ArgumentTypeError(f"{flag} must be a JSON array: {err}") from None
        if not isinstance(value, list):
            raise argparse.ArgumentTypeError(f'{flag} must be a JSON array like ["a", "b"], got {text!r}')
        return value

    return parse


def _json_object(flag: str):
    def parse(text: str) -> dict:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as err:
            raise argparse.ArgumentTypeError(f"{flag} must be a JSON object: {err}") from None
        if not isinstance(value, dict):
            example = '{"key": 1}'
            raise argparse.ArgumentTypeError(f"{flag} must be a JSON object like {example}, got {text!r}")
        return value

    return parse
