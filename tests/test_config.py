"""TrainConfig: task blocks chosen by the dataset, one validation, a flat config.json that reads back."""

from __future__ import annotations

import argparse

import pytest

from workbench.training.config import (
    ImageTextConfig,
    PairConfig,
    TrainConfig,
    add_config_arguments,
    config_from_args,
)


def test_the_dataset_chooses_the_task_block():
    assert isinstance(TrainConfig(dataset="synthetic").task, PairConfig)
    assert isinstance(TrainConfig(dataset="digits_captions").task, ImageTextConfig)
    assert TrainConfig(dataset="digits_views").kind == "pairs"
    assert TrainConfig(dataset="infogap").kind == "image_text"


def test_a_block_of_another_task_cannot_be_written():
    with pytest.raises(ValueError, match=r"trains a pairs task; task must be a PairConfig, got ImageText"):
        TrainConfig(dataset="synthetic", task=ImageTextConfig())
    with pytest.raises(ValueError, match=r"model_size do\(es\) not apply to dataset 'digits_captions'"):
        TrainConfig.from_dict({"dataset": "digits_captions", "model_size": "tiny"})
    with pytest.raises(ValueError, match=r"model must be one of auto, two_tower, fusion; got 'siamese'"):
        TrainConfig(dataset="digits_captions", model="siamese")


def test_flat_dict_round_trip_and_old_configs_with_every_key():
    config = TrainConfig(
        dataset="digits_captions", task=ImageTextConfig(structure={"weights": {"bridge": 1.0}}), steps=7
    )
    flat = config.to_dict()
    assert flat["structure"] == {"weights": {"bridge": 1.0}} and "task" not in flat
    assert TrainConfig.from_dict(flat) == config
    # a config.json written before the task blocks carried every key, empty where it did not apply
    old = {**TrainConfig(dataset="synthetic").to_dict(), "image_tower": {}, "text_tower": {}, "structure": {}}
    assert TrainConfig.from_dict(old) == TrainConfig(dataset="synthetic")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"structure": {"nope": 1}, "dataset": "infogap"}, r"unknown structure key\(s\) \['nope'\]"),
        ({"structure": "four_term", "dataset": "infogap"}, r"structure must be a JSON object"),
        ({"batchsize": 3}, r"unknown config key\(s\) \['batchsize'\]"),
        ({"weight_decay": -1.0}, r"weight_decay must be a finite number >= 0"),
        ({"lr": float("nan")}, r"lr must be a finite number > 0"),
        ({"device": "tpu"}, r"device must be 'auto', 'cpu' or 'cuda\[:N\]'"),
    ],
)
def test_bad_values_name_the_parameter(values, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_dict(values)


def test_command_line_flags_come_from_the_config_fields():
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    args = parser.parse_args(
        ["--dataset", "infogap", "--structure", '{"mode": "four_term"}', "--steps", "5", "--learn-scale"]
    )
    config = config_from_args(args)
    assert config.task.structure == {"mode": "four_term"} and config.steps == 5 and config.learn_scale
    with pytest.raises(SystemExit):
        parser.parse_args(["--loss-params", "[1]"])


def test_the_fusion_model_reads_word_tokens_unless_told_otherwise():
    # its text encoder reads the caption's words: no MiniLM encoding of sentences it never reads
    assert TrainConfig(dataset="digits_captions", model="fusion").dataset_params == {"text_encoder": "tokens"}
    chosen = TrainConfig(dataset="digits_captions", model="fusion", dataset_params={"text_encoder": "minilm"})
    assert chosen.dataset_params == {"text_encoder": "minilm"}
    assert TrainConfig(dataset="digits_captions").dataset_params == {}  # the two towers read MiniLM
