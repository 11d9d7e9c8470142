"""End-to-end checks of the multimodal trainer: structured losses, evaluation, geometry, resumption."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.store.runs import load_run
from workbench.training.trainer import TrainConfig, Trainer, train

ALL_THREE = {"mode": "four_term", "weights": {"separation": 1.0, "bridge": 0.5, "consistency": 0.5}}


def _config(**overrides) -> TrainConfig:
    values = dict(
        dataset="digits_captions",
        dataset_params={"text_encoder": "tokens", "variants": 3},
        loss="clip",
        learn_scale=True,
        image_tower={"hidden": 32, "depth": 1, "out_dim": 16},
        text_tower={"hidden": 32, "depth": 1, "out_dim": 16},
        batch_size=32,
        steps=6,
        eval_every=3,
        snapshot_every=6,
        checkpoint_every=3,
        probe_size=64,
        structure=ALL_THREE,
    )
    values.update(overrides)
    return TrainConfig.from_dict(dict(**values))


def test_structured_run_logs_downstream_metrics_and_geometry(tmp_path):
    run = train(_config(), run_id="mm", root=tmp_path, progress=False)
    assert run.status == "complete"
    metrics = run.metrics.set_index("step")
    assert list(metrics.index) == [0, 3, 6]
    for key in ("zero_shot_acc", "i2t_R@1", "loss_separation", "loss_bridge", "loss_consistency", "scale"):
        assert key in metrics.columns, key
    final = metrics.loc[6]
    probes = ("linear_probe_acc", "fewshot_1_acc", "fewshot_5_acc", "concat_probe_acc")
    for key in (*probes, "centroid_gap", "cone"):
        assert 0.0 <= final[key] <= 1.0 or key == "centroid_gap", key
    assert 0 <= final["zero_shot_acc"] <= 1
    snap = run.snapshot(6)
    assert snap["a"].shape == snap["b"].shape == snap["a_aug"].shape == (64, 16)
    assert snap["class_emb"].shape[0] == 10 and snap["captions"].shape == (64,)
    assert torch.allclose(torch.from_numpy(snap["a"]).norm(dim=1), torch.ones(64), atol=1e-5)


def test_multimodal_run_resumes_exactly(tmp_path):
    config = _config(steps=6, checkpoint_every=2)
    whole = train(config, run_id="whole", root=tmp_path, progress=False)
    train(config, run_id="cut", root=tmp_path, progress=False, stop_at_step=4)
    assert load_run("cut", root=tmp_path).status == "stopped"
    resumed = train(config, run_id="cut", root=tmp_path, progress=False)
    a = torch.load(whole.path / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(resumed.path / "checkpoint.pt", weights_only=True)["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    assert resumed.metrics.step.is_unique


def test_infogap_with_a_stateful_base_loss(tmp_path):
    config = _config(
        dataset="infogap",
        dataset_params={"num_samples": 200},
        loss="bayes",
        learn_scale=False,
        structure={"weights": {"separation": 1.0}},
    )
    run = train(config, root=tmp_path, progress=False)
    assert run.status == "complete"
    assert "zero_shot_acc" not in run.metrics.columns  # feature data has no prompts
    assert run.metrics.concat_probe_acc.notna().any()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"structure": {"weights": {"separation": -1.0}}}, "weights"),
        ({"structure": {"weights": {"bridges": 1.0}}}, "separation"),
        ({"structure": {"mode": "six_term"}}, "mode"),
        ({"structure": {"temperature": 1.0}}, "structure"),
        ({"micro_batch": 8}, "micro_batch"),
        ({"batch_size": 5000}, "batch_size"),
        ({"image_tower": {"kind": "transformer"}}, "kind"),
    ],
)
def test_bad_multimodal_configs_fail_before_writing(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        train(_config(**overrides), run_id="bad", root=tmp_path, progress=False)
    assert not (tmp_path / "bad").exists()


def test_structure_on_a_paired_dataset_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"structure do\(es\) not apply to dataset .synthetic"):
        TrainConfig.from_dict(dict(dataset="synthetic", structure=ALL_THREE))


def test_probe_training_rows_cover_every_class_when_subsampled(monkeypatch):
    # MNIST's split lists rows class by class; a prefix of it would leave classes out of the probes.
    from workbench.data import build_dataset
    from workbench.training import image_text as multimodal

    config = _config()
    dataset = build_dataset(config.dataset, **config.dataset_params)
    dataset.train_index = dataset.train_index[np.argsort(dataset.labels[dataset.train_index], kind="stable")]
    monkeypatch.setattr(multimodal, "EVAL_ROWS", 200)
    trainer = Trainer(config, dataset)
    assert len(trainer.task.train_eval_index) == 200
    labels = dataset.labels[trainer.task.train_eval_index.numpy()]
    assert set(labels.tolist()) == set(range(10))
    assert set(trainer.task.train_eval_index.tolist()) <= set(dataset.train_index.tolist())
