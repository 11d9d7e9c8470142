"""The tiny fusion run the fusion tests train (model, dataset, task splits), one config varied per test."""

from __future__ import annotations

from workbench.training.config import FusionConfig, TrainConfig


def tiny_fusion_config(steps: int = 4, *, task: dict | None = None, **fields) -> TrainConfig:
    """A fusion run of a few seconds on the digits and their word-token captions.

    Args:
        steps: training steps (a snapshot at the last).
        task: ``FusionConfig`` fields over the tiny defaults (structure, reasoning-task sizes, ...).
        fields: ``TrainConfig`` fields over the defaults (loss, batch size, evaluation cadence, ...).
    """
    block = {"model_size": "tiny", "per_kind_train": 20, "per_kind_test": 10, "attention_examples": 3}
    values = {
        "dataset": "digits_captions",
        "dataset_params": {"text_encoder": "tokens", "variants": 2},
        "model": "fusion",
        "loss": "clip",
        "batch_size": 32,
        "steps": steps,
        "eval_every": 2,
        "snapshot_every": steps,
        "checkpoint_every": 2,
        "probe_size": 48,
        "device": "cpu",
    }
    return TrainConfig(**{**values, **fields}, task=FusionConfig(**{**block, **(task or {})}))
