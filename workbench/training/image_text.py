"""Training two-tower image/text models with modality-structure regularizers (Jiang et al., CVPR 2023).

:class:`ImageTextTask` plugs into the trainer (``workbench.training.trainer``) for image-text datasets: the
same run store, checkpoints, resumption and config, with a step that embeds every view the structured loss
needs (images, captions, their augmentations, the independent features of deep feature separation)
and an evaluation that measures what the article cares about: zero-shot and linear-probe accuracy,
retrieval, and the geometry of the embedding space (modality gap and friends) at every snapshot.

Under torchrun the regularizers couple the rows of the batch too, so each process gathers every
process's features (with their gradients) and computes the whole structured loss on the global batch:
the same value on every process, and under DDP's averaging the single-process gradient.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from workbench.data import epoch_batch, step_generator
from workbench.data.multimodal import MultimodalDataset
from workbench.losses import loss_parameters
from workbench.losses.structures import StructuredLoss
from workbench.metrics.downstream import (
    few_shot_accuracy,
    linear_probe_accuracy,
    retrieval_recall,
    zero_shot_accuracy,
)
from workbench.metrics.geometry import geometry_report
from workbench.models import MultimodalModel, TowerConfig
from workbench.training import distributed
from workbench.training.config import TrainConfig
from workbench.training.tasks import Task

EVAL_ROWS = 2000  # rows of each split used for evaluation: bounds its cost on a CPU


def _tower_config(values: dict, inputs: Tensor, text: bool, vocab: list[str] | None) -> TowerConfig:
    values = dict(values)
    if "kind" not in values:
        if text and inputs.dtype == torch.long:
            values["kind"] = "tokens"
        else:
            # a CNN pays off on MNIST-sized images; on 8x8 digits an MLP is as good and much cheaper
            values["kind"] = "cnn" if inputs.ndim == 4 and inputs.shape[-1] >= 16 else "mlp"
    if values["kind"] == "tokens":
        if vocab is None:
            raise ValueError("a tokens text tower needs a dataset with text_encoder='tokens'")
        values.setdefault("vocab_size", len(vocab))
    return TowerConfig(**values)


class ImageTextTask(Task):
    """Two towers on :class:`MultimodalDataset`: a structured loss and downstream evaluation."""

    supports_gradcache = False  # the regularizers couple rows beyond per-row features

    def __init__(self, config: TrainConfig, dataset: MultimodalDataset, device, autocast) -> None:
        super().__init__(config, dataset, device, autocast)
        task = config.task
        self.train_rows = torch.as_tensor(dataset.train_index, dtype=torch.long)
        base_params = dict(config.loss_params)
        base_params.setdefault("validate", False)  # the trainer checks the loss once per interval
        if config.loss in ("sogclr", "bayes"):
            base_params.setdefault("num_samples", len(dataset))
        temperature = base_params.get("temperature", loss_parameters(config.loss).get("temperature", 0.07))
        temperature = temperature if isinstance(temperature, float) else 0.07
        self.loss = StructuredLoss(
            base=config.loss,
            base_params=base_params,
            mode=task.structure.get("mode", "clip"),
            weights=task.structure.get("weights"),
            bridge_t=task.structure.get("bridge_t", 0.25),
            bridge_random_t=task.structure.get("bridge_random_t", False),
            temperature=temperature,
        ).to(device)
        needs_independent = any(key.startswith("indep_") for key in self.loss.requires)
        image = _tower_config(task.image_tower, dataset.images, False, None)
        text = _tower_config(task.text_tower, dataset.texts[:, 0], True, dataset.vocab)
        if needs_independent:
            image = TowerConfig(**{**image.__dict__, "independent": True})
            text = TowerConfig(**{**text.__dict__, "independent": True})
        self.model = MultimodalModel(
            tuple(dataset.images.shape[1:]),
            tuple(dataset.texts.shape[2:]),
            image,
            text,
            init_temperature=temperature,
            learn_scale=config.learn_scale,
        ).to(device)
        test = torch.as_tensor(dataset.test_index, dtype=torch.long)
        self.probe_index = test[: min(config.probe_size, len(test))]
        # A random subset: split indices may be ordered by class, and a prefix would miss classes.
        order = torch.randperm(len(self.train_rows), generator=step_generator(config.seed, 0, stream=4))
        self.train_eval_index = self.train_rows[order[:EVAL_ROWS]].sort().values
        self.parts: list[dict[str, Tensor | float]] = []

    def num_train_rows(self) -> int:
        return len(self.train_rows)

    def loss_kwargs(self) -> dict:
        return {"scale": self.model.logit_scale()} if self.config.learn_scale else {}

    def batch(self, step: int) -> tuple[dict[str, Tensor], Tensor]:
        c = self.config
        index = self.train_rows[epoch_batch(step, c.batch_size, len(self.train_rows), c.seed)]
        batch = self.dataset.batch(index, step_generator(c.seed, step, stream=0), augment=True)
        return batch, index

    def forward(self, model: nn.Module, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        return model(inputs, self.loss.requires | self.loss.optional)

    def batch_loss(self, features: dict[str, Tensor], index: Tensor, shard: slice) -> Tensor:
        # identity in one process; in several, every process holds the whole batch's features
        features = {key: distributed.gather_with_grad(features[key].float()) for key in sorted(features)}
        total, parts = self.loss(features, index=index, **self.loss_kwargs())
        if distributed.is_main():  # only process 0 evaluates, and so reads these
            self.parts.append(parts)
        return total

    # --- evaluation -----------------------------------------------------------------------------
    @torch.no_grad()
    def _embed(self, index: Tensor, augment: bool = False) -> dict[str, Tensor]:
        self.model.eval()
        batch = self.dataset.batch(index, step_generator(self.config.seed, 0, stream=2), augment=augment)
        keys = {"img", "txt", "img_aug"} if augment else {"img", "txt"}
        out: dict[str, list[Tensor]] = {key: [] for key in keys}
        for start in range(0, len(index), 1024):
            part = {key: value[start : start + 1024].to(self.device) for key, value in batch.items()}
            with self.autocast:
                emb = self.model(part, keys)
            for key in keys:
                out[key].append(nn.functional.normalize(emb[key].float(), dim=1).cpu())
        return {key: torch.cat(value) for key, value in out.items()}

    @torch.no_grad()
    def class_embeddings(self) -> Tensor | None:
        prompts = self.dataset.prompts
        if prompts is None:
            return None
        self.model.eval()
        flat = prompts.reshape(-1, *prompts.shape[2:]).to(self.device)
        with self.autocast:
            emb = self.model.embed_texts(flat).float()
        return nn.functional.normalize(emb, dim=1).reshape(prompts.shape[0], prompts.shape[1], -1).cpu()

    def probe(self) -> dict[str, Tensor]:
        return self._embed(self.probe_index, augment=True)

    @torch.no_grad()
    def evaluate(self, probe: dict[str, Tensor]) -> dict[str, float]:
        z_a, z_b = probe["img"], probe["txt"]
        labels = self.dataset.labels[self.probe_index.numpy()]
        metrics: dict[str, float] = {}
        if self.parts:
            for key in self.parts[0]:
                # read on the host here, once per evaluation, not at every step
                metrics[f"loss_{key}"] = float(np.mean([float(p[key]) for p in self.parts]))
            self.parts = []
        class_emb = self.class_embeddings()
        if class_emb is not None:
            metrics["zero_shot_acc"] = zero_shot_accuracy(z_a.numpy(), class_emb.numpy(), labels)
        metrics.update(retrieval_recall(z_a.numpy(), z_b.numpy()))
        metrics["scale"] = float(self.model.logit_scale())
        return metrics

    def downstream(self, probe: dict[str, Tensor]) -> dict[str, float]:
        """Linear probes and geometry: run at snapshot steps (they cost more than the eval metrics)."""
        z_a, z_b = probe["img"], probe["txt"]
        train = self._embed(self.train_eval_index)
        train_y = self.dataset.labels[self.train_eval_index.numpy()]
        test_y = self.dataset.labels[self.probe_index.numpy()]
        seed = self.config.seed
        if (train_y < 0).all() or len(np.unique(train_y)) < 2:
            return geometry_report(z_a.numpy(), z_b.numpy(), seed=seed)  # unlabelled data: geometry only
        metrics = {
            "linear_probe_acc": linear_probe_accuracy(
                train["img"].numpy(), train_y, z_a.numpy(), test_y, seed=seed
            ),
            "text_probe_acc": linear_probe_accuracy(
                train["txt"].numpy(), train_y, z_b.numpy(), test_y, seed=seed
            ),
            "concat_probe_acc": linear_probe_accuracy(
                torch.cat([train["img"], train["txt"]], 1).numpy(),
                train_y,
                torch.cat([z_a, z_b], 1).numpy(),
                test_y,
                seed=seed,
            ),
        }
        smallest = int(np.bincount(train_y[train_y >= 0]).min()) if (train_y >= 0).any() else 0
        shots = tuple(k for k in (1, 5, 10) if k <= smallest)
        if shots:
            few = few_shot_accuracy(
                train["img"].numpy(), train_y, z_a.numpy(), test_y, shots, trials=3, seed=seed
            )
            metrics.update({f"fewshot_{k}_acc": value["mean"] for k, value in few.items()})
        metrics.update(geometry_report(z_a.numpy(), z_b.numpy(), seed=seed))
        return metrics

    def snapshot(self, probe: dict[str, Tensor]) -> dict[str, np.ndarray]:
        rows = self.probe_index.numpy()
        arrays = {
            "a": probe["img"].numpy(),
            "b": probe["txt"].numpy(),
            "a_aug": probe["img_aug"].numpy(),
            "ids": self.dataset.ids[rows],
            "labels": self.dataset.labels[rows],
        }
        if self.dataset.captions and self.dataset.captions[0]:
            arrays["captions"] = np.array([self.dataset.captions[i][0] for i in rows])
        class_emb = self.class_embeddings()
        if class_emb is not None:
            arrays["class_emb"] = class_emb.numpy()
        return arrays
