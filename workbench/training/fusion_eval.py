"""Evaluation of a fusion model: matching accuracy, re-ranked retrieval, zero-/few-shot through the
matching head, reasoning tasks probed or fine-tuned on the fused [CLS], cross-attention maps.

Every function takes the plain ``FusionModel`` (never a DDP wrapper), runs without gradients unless it
fine-tunes a copy, and works in chunks so memory stays bounded on a CPU.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workbench.data.reasoning import ReasoningTask, TaskSplit
from workbench.models.fusion import FusionModel, matching_pairs

CHUNK = 1024  # pairs per fusion pass


@torch.no_grad()
def _encode_in_chunks(encoder: nn.Module, inputs: Tensor, device: torch.device, autocast) -> Tensor:
    out = []
    for start in range(0, len(inputs), CHUNK):
        with autocast:
            out.append(encoder(inputs[start : start + CHUNK].to(device)).float())
    return torch.cat(out)


def image_tokens(model: FusionModel, images: Tensor, device: torch.device, autocast) -> Tensor:
    """Image-encoder tokens (n, 1 + P, D) of ``images``, float32 on ``device``."""
    return _encode_in_chunks(model.image_encoder, images, device, autocast)


def text_tokens(model: FusionModel, ids: Tensor, device: torch.device, autocast) -> Tensor:
    """Text-encoder tokens (n, L, D) of token ids (n, L), float32 on ``device``."""
    return _encode_in_chunks(model.text_encoder, ids, device, autocast)


@torch.no_grad()
def fused_features(
    model: FusionModel,
    images: Tensor,
    ids: Tensor,
    autocast,
    texts: Tensor | None = None,
) -> Tensor:
    """Fused features (n, D) of n (image tokens, text ids) pairs (``model.text_feature`` of the fused
    tokens: the [CLS] or the mean, as the model pools).

    Args:
        images: (n, S, D) image tokens (one image, or two side by side via ``model.pair_tokens``).
        ids: (n, L) token ids of the texts.
        texts: (n, L, D) text-encoder tokens of ``ids`` if already computed.
    """
    out = []
    for start in range(0, len(ids), CHUNK):
        part = ids[start : start + CHUNK].to(images.device)
        with autocast:
            encoded = model.text_encoder(part) if texts is None else texts[start : start + CHUNK]
            fused, _ = model.fuse(part, encoded, images[start : start + CHUNK])
        out.append(model.text_feature(fused, part).float())
    return torch.cat(out) if out else images.new_zeros(0, images.shape[-1])


@torch.no_grad()
def match_scores(
    model: FusionModel, images: Tensor, ids: Tensor, autocast, texts: Tensor | None = None
) -> Tensor:
    """ITM match logit minus no-match logit of each pair (n,): > 0 means "matches"."""
    logits = model.itm_head(fused_features(model, images, ids, autocast, texts))
    return logits[:, 1] - logits[:, 0]


# --- image-text matching ----------------------------------------------------------------------------------
def hardest_negatives(sims: Tensor, same: Tensor) -> Tensor:
    """Per row, the most similar column that is not a match (``same`` True marks the matches)."""
    return sims.masked_fill(same, -torch.inf).argmax(dim=1)


@torch.no_grad()
def itm_accuracy(
    model: FusionModel,
    img_tokens: Tensor,
    ids: Tensor,
    txt_tokens: Tensor,
    z_img: Tensor,
    z_txt: Tensor,
    autocast,
    group: Tensor | None = None,
) -> float:
    """Balanced accuracy of the matching head on the positives and the hardest in-split negatives.

    Every image is paired with its caption (label 1), with the most similar caption that surely does
    not describe it, and every caption with the most similar such image (label 0); "surely" as in
    training (``matching_pairs``: identical captions and, with ``group``, captions of the same digit are
    never negatives). The score is ``(accuracy on positives + accuracy on negatives) / 2`` (chance 0.5).
    """
    sims = z_img @ z_txt.T
    same = matching_pairs(ids, group).to(sims.device)
    usable = ~same.all(1)
    neg_txt = hardest_negatives(sims, same)
    neg_img = hardest_negatives(sims.T, same)
    pos = match_scores(model, img_tokens, ids, autocast, txt_tokens) > 0
    neg_t = match_scores(model, img_tokens, ids[neg_txt.cpu()], autocast, txt_tokens[neg_txt]) <= 0
    neg_i = match_scores(model, img_tokens[neg_img], ids, autocast, txt_tokens) <= 0
    negatives = torch.cat([neg_t[usable], neg_i[usable]]).float().mean()
    return float((pos.float().mean() + negatives) / 2)


@torch.no_grad()
def reranked_retrieval(
    model: FusionModel,
    img_tokens: Tensor,
    ids: Tensor,
    txt_tokens: Tensor,
    z_img: Tensor,
    z_txt: Tensor,
    autocast,
    k: int = 16,
    ks: tuple[int, ...] = (1, 5, 10),
) -> dict[str, float]:
    """Recall@K after re-ranking the contrastive top-``k`` by the matching head (ALBEF's inference).

    The contrastive rank of the positive counts the candidates strictly more similar (ties go to the
    positive, as in ``retrieval_recall``). A positive outside the top ``k`` keeps that rank; inside, its
    rank is the number of top-``k`` candidates the matching head scores strictly higher.

    Returns:
        ``itm_i2t_R@K``, ``itm_t2i_R@K`` for K in ``ks`` (K <= k), and ``itm_mean_R``.
    """
    n = len(ids)
    k = min(k, n)
    out: dict[str, float] = {}
    sims = z_img @ z_txt.T
    for direction, s in (("i2t", sims), ("t2i", sims.T)):
        positive = torch.arange(n, device=s.device)
        contrastive = (s > s.diagonal()[:, None]).sum(1)
        top = s.topk(k, dim=1).indices
        # ties can leave the positive out of a top k it belongs to: it takes the last slot
        missing = ~(top == positive[:, None]).any(1) & (contrastive < k)
        top[missing, -1] = positive[missing]
        queries = positive.repeat_interleave(k)
        candidates = top.reshape(-1)
        if direction == "i2t":
            images, cand_ids, texts = img_tokens[queries], ids[candidates.cpu()], txt_tokens[candidates]
        else:
            images, cand_ids, texts = img_tokens[candidates], ids[queries.cpu()], txt_tokens[queries]
        scores = match_scores(model, images, cand_ids, autocast, texts).reshape(n, k)
        pos_score = torch.where(top == positive[:, None], scores, -torch.inf).max(1).values
        rank = torch.where(contrastive < k, (scores > pos_score[:, None]).sum(1), contrastive)
        for cutoff in ks:
            out[f"itm_{direction}_R@{cutoff}"] = float((rank < cutoff).float().mean())
    out["itm_mean_R"] = float(np.mean(list(out.values())))
    return out


@torch.no_grad()
def class_match_scores(
    model: FusionModel,
    img_tokens: Tensor,
    prompt_ids: Tensor,
    autocast,
    prompts: int = 2,
    chunk_images: int = 64,
) -> Tensor:
    """(n, C): per image and class, the mean match score over the class's first ``prompts`` prompts
    (a few: each costs a fusion pass per image and class)."""
    prompt_ids = prompt_ids[:, :prompts]
    c, p, length = prompt_ids.shape
    flat = prompt_ids.reshape(c * p, length)
    texts = text_tokens(model, flat, img_tokens.device, autocast)
    out = []
    for start in range(0, len(img_tokens), chunk_images):
        block = img_tokens[start : start + chunk_images]
        m = len(block)
        images = block.repeat_interleave(c * p, dim=0)
        scores = match_scores(model, images, flat.repeat(m, 1), autocast, texts.repeat(m, 1, 1))
        out.append(scores.reshape(m, c, p).mean(-1))
    return torch.cat(out)


# --- reasoning tasks --------------------------------------------------------------------------------------
def split_features(
    model: FusionModel, split: TaskSplit, ids: Tensor, tokens: Tensor, row_position: np.ndarray, autocast
) -> Tensor:
    """Fused [CLS] of a task split: ``tokens`` holds image tokens of data-set rows at ``row_position``."""
    pos = torch.as_tensor(row_position[split.images], device=tokens.device)
    images = (
        tokens[pos[:, 0]]
        if split.images.shape[1] == 1
        else model.pair_tokens(tokens[pos[:, 0]], tokens[pos[:, 1]])
    )
    return fused_features(model, images, ids, autocast)


def probe_predictions(
    train_x: Tensor,
    train_y: np.ndarray,
    test_x: Tensor,
    num_classes: int,
    weight_decay: float = 1e-3,
    max_iter: int = 100,
) -> np.ndarray:
    """Answers (indices) a multinomial logistic-regression classifier on frozen features gives the test rows.

    Features are standardised with the training split's mean and deviation; the classifier minimises
    the mean cross-entropy plus ``weight_decay / 2 * ||W||^2`` by full-batch L-BFGS from zero, in
    float64 (deterministic). Torch rather than scikit-learn: on the nearly collinear features of a
    barely trained model lbfgs needs hundreds of iterations, which scikit-learn takes a minute for.
    """
    xtr, xte = train_x.detach().double().cpu(), test_x.detach().double().cpu()
    mean, std = xtr.mean(0), xtr.std(0).clamp_min(1e-6)
    xtr, xte = (xtr - mean) / std, (xte - mean) / std
    ytr = torch.as_tensor(train_y, dtype=torch.long)
    weight = torch.zeros(xtr.shape[1], num_classes, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weight, bias], lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe"
    )

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(xtr @ weight + bias, ytr) + weight_decay / 2 * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    with torch.no_grad():
        return (xte @ weight + bias).argmax(1).numpy()


def probe_task(
    train_x: Tensor,
    train_y: np.ndarray,
    test_x: Tensor,
    test_y: np.ndarray,
    num_classes: int,
    weight_decay: float = 1e-3,
    max_iter: int = 100,
) -> float:
    """Test accuracy of :func:`probe_predictions`' answer classifier on frozen features."""
    predicted = probe_predictions(train_x, train_y, test_x, num_classes, weight_decay, max_iter)
    return float(np.mean(predicted == np.asarray(test_y)))


def task_metrics(name: str, task: ReasoningTask, predicted: np.ndarray) -> dict[str, float]:
    """Accuracy of answers ``predicted`` for ``task``'s test split, in total and per kind of question,
    with the chance level of each.

    Returns:
        ``<name>_acc`` (all test questions), ``<name>_acc/<kind>`` (the questions of one kind),
        ``<name>_chance`` and ``<name>_chance/<kind>`` (uniform guessing among the answers a kind
        allows: the reference line of each accuracy), kinds in the task's order. The total is the mean
        of the kinds' accuracies weighted by their numbers of test questions.
    """
    test = task.test
    predicted = np.asarray(predicted)
    if predicted.shape != (len(test),):
        raise ValueError(
            f"predicted must hold one answer per test question ({len(test)}), got shape {predicted.shape}"
        )
    correct = predicted == test.answers
    allowed = task.info["answers_per_kind"]
    out = {f"{name}_acc": float(np.mean(correct)) if len(test) else float("nan")}
    if len(test):
        out[f"{name}_chance"] = task.chance
    for kind in dict.fromkeys(test.kinds.tolist()):
        mine = test.kinds == kind
        out[f"{name}_acc/{kind}"] = float(np.mean(correct[mine]))
        out[f"{name}_chance/{kind}"] = 1.0 / allowed[kind]
    return out


def finetune_task(
    model: FusionModel,
    task: ReasoningTask,
    ids: dict[str, Tensor],
    images: Tensor,
    steps: int,
    seed: int,
    device: torch.device,
    autocast,
    batch_size: int = 64,
    lr: float = 1e-4,
) -> float:
    """Test accuracy after fine-tuning a copy of the model plus an answer head on the task's train split.

    The training model is untouched, and the global RNG too (``fork_rng``), so fine-tuning at a
    snapshot does not change the rest of the run. ``images`` are the data set's raw images.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        tuned = copy.deepcopy(model).to(device).train()
        head = nn.Linear(tuned.config.dim, len(task.answer_names)).to(device)
        params = [p for p in tuned.parameters() if p.requires_grad] + list(head.parameters())
        optimizer = torch.optim.AdamW(params, lr=lr)
        train = task.train
        for _ in range(steps):
            pick = torch.randint(0, len(train), (min(batch_size, len(train)),), generator=generator)
            logits = head(_task_cls(tuned, train, ids["train"], images, pick.numpy(), device, autocast))
            loss = F.cross_entropy(
                logits.float(), torch.as_tensor(train.answers[pick.numpy()], device=device)
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        tuned.eval()
        correct = 0
        with torch.no_grad():
            for start in range(0, len(task.test), CHUNK):
                pick = np.arange(start, min(start + CHUNK, len(task.test)))
                logits = head(_task_cls(tuned, task.test, ids["test"], images, pick, device, autocast))
                correct += int((logits.argmax(1).cpu().numpy() == task.test.answers[pick]).sum())
    return correct / max(len(task.test), 1)


def _task_cls(
    model: FusionModel, split: TaskSplit, ids: Tensor, images: Tensor, pick: np.ndarray, device, autocast
) -> Tensor:
    rows = split.images[pick]
    with autocast:
        first = model.image_encoder(images[torch.as_tensor(rows[:, 0])].to(device))
        if rows.shape[1] == 2:
            second = model.image_encoder(images[torch.as_tensor(rows[:, 1])].to(device))
            first = model.pair_tokens(first, second)
        part = ids[torch.as_tensor(pick)].to(device)
        fused, _ = model.fuse(part, model.text_encoder(part), first)
    return model.text_feature(fused, part).float()


# --- looking inside ---------------------------------------------------------------------------------------
@torch.no_grad()
def cross_attention(model: FusionModel, img_tokens: Tensor, ids: Tensor, autocast) -> Tensor:
    """Head-averaged cross-attention of every fusion layer: (n, layers, L, 1 + P), float32."""
    texts = text_tokens(model, ids, img_tokens.device, autocast)
    with autocast:
        _, maps = model.fuse(ids.to(img_tokens.device), texts, img_tokens, need_attention=True)
    return torch.stack([m.float() for m in maps], dim=1)


__all__ = [
    "class_match_scores",
    "cross_attention",
    "finetune_task",
    "fused_features",
    "hardest_negatives",
    "image_tokens",
    "itm_accuracy",
    "match_scores",
    "probe_predictions",
    "probe_task",
    "reranked_retrieval",
    "split_features",
    "task_metrics",
    "text_tokens",
]
