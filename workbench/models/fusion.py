"""An ALBEF-style image-text fusion model, small enough for a CPU (Li et al., NeurIPS 2021).

Three transformers, as in ALBEF ("Align before Fuse"):

* an image encoder: a small ViT over non-overlapping patches (``image_encoder="vit"``) or a two-layer
  CNN whose stride-2 feature map becomes the tokens (``"cnn"``), with a learned [CLS] token in front;
* a text encoder: self-attention over the caption's word tokens, whose first token is [CLS];
* a fusion encoder: each layer self-attends over the text tokens, then cross-attends from the text
  tokens to the image tokens, then applies an MLP. Its [CLS] output feeds the image-text matching
  head and any task head (VQA, entailment, two-image reasoning).

The unimodal [CLS] features are projected to ``embed_dim`` for the image-text contrastive loss (the
"align" before the "fuse"), exactly like the two towers of ``MultimodalModel``, so the same
contrastive losses and modality-structure regularizers apply to them.

One forward call computes every pre-training output a step asks for (``FusionModel.forward``), so a
DistributedDataParallel wrapper sees the whole step. The hard negatives of image-text matching depend
on the contrastive similarities of the same batch, so the forward takes the sampler as an argument
(``workbench.losses.fusion.sample_hard_negatives``) and the randomness as pre-drawn uniforms.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workbench.models.towers import LogitScale

IMAGE_ENCODERS = ("vit", "cnn")
POOLS = ("cls", "mean")
PRETRAIN_KEYS = (
    "img",
    "txt",
    "img_aug",
    "txt_aug",
    "indep_img",
    "indep_txt",
    "indep_img_aug",
    "indep_txt_aug",
    "itm",
    "mlm",
)

#: ``sampler(logits, uniforms, exclude) -> (index, valid)``: one negative column per row of ``logits``
#: (see ``workbench.losses.fusion.sample_hard_negatives``).
NegativeSampler = Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]


class Sharding(Protocol):
    """This process's share of a batch split over processes (``workbench.losses._base.Sharding`` is
    one): its rank, the number of processes, and the differentiable gather along dim 0."""

    rank: int
    world_size: int
    gather: Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class FusionModelConfig:
    """Sizes of the fusion model.

    Attributes:
        dim: token width of every encoder.
        heads: attention heads (must divide ``dim``).
        image_layers, text_layers: self-attention layers of the unimodal encoders (>= 0).
        fusion_layers: layers of the fusion encoder (>= 1), each with cross-attention to the image.
        mlp_ratio: hidden width of each MLP block, in multiples of ``dim``.
        embed_dim: width of the unimodal contrastive embeddings.
        patch_size: ViT patch side in pixels; 0 picks 2 for images up to 8 pixels, 4 up to 32, else
            ``side // 8``. The image side must be a multiple of it.
        image_encoder: "vit" (patches) or "cnn" (a stride-2 conv feature map as tokens).
        dropout: dropout of the attention and MLP blocks.
        pool: the unimodal feature the contrastive embedding projects: "cls" (ALBEF's [CLS] token) or
            "mean" (the mean of the tokens, padding excluded).
    """

    dim: int = 64
    heads: int = 4
    image_layers: int = 2
    text_layers: int = 2
    fusion_layers: int = 2
    mlp_ratio: int = 2
    embed_dim: int = 64
    patch_size: int = 0
    image_encoder: str = "cnn"
    dropout: float = 0.0
    pool: str = "mean"

    def __post_init__(self) -> None:
        for name, low in (
            ("dim", 1),
            ("heads", 1),
            ("image_layers", 0),
            ("text_layers", 0),
            ("fusion_layers", 1),
            ("mlp_ratio", 1),
            ("embed_dim", 1),
            ("patch_size", 0),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if self.dim % self.heads:
            raise ValueError(f"heads must divide dim: dim={self.dim}, heads={self.heads}")
        if self.image_encoder not in IMAGE_ENCODERS:
            raise ValueError(
                f"image_encoder must be one of {', '.join(IMAGE_ENCODERS)}; got {self.image_encoder!r}"
            )
        if self.pool not in POOLS:
            raise ValueError(f"pool must be one of {', '.join(POOLS)}; got {self.pool!r}")
        dropout = self.dropout
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise ValueError(f"dropout must be a number in [0, 1), got {dropout!r}")


FUSION_SIZES: dict[str, FusionModelConfig] = {
    "tiny": FusionModelConfig(dim=32, heads=2, image_layers=1, text_layers=1, fusion_layers=1, embed_dim=32),
    "small": FusionModelConfig(dim=64, heads=4, image_layers=2, text_layers=2, fusion_layers=2, embed_dim=64),
    "base": FusionModelConfig(
        dim=128, heads=4, image_layers=4, text_layers=4, fusion_layers=4, embed_dim=128
    ),
}


def fusion_size(name: str, **overrides) -> FusionModelConfig:
    """The named size (:data:`FUSION_SIZES`) with any field overridden."""
    if name not in FUSION_SIZES:
        raise ValueError(
            f"model_size must be one of {', '.join(FUSION_SIZES)} for the fusion model; got {name!r}"
        )
    known = FusionModelConfig.__dataclass_fields__
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise ValueError(f"unknown fusion model field(s) {unknown}; allowed: {sorted(known)}")
    return FusionModelConfig(**{**FUSION_SIZES[name].__dict__, **overrides})


def auto_patch_size(side: int) -> int:
    """The default patch side for a square-ish image of ``side`` pixels (4x4 to 8x8 patches)."""
    if side <= 8:
        return 2
    if side <= 32:
        return 4
    return max(1, side // 8)


class Attention(nn.Module):
    """Multi-head attention written out: for the short sequences here (tens of tokens) two batched
    matmuls beat the fused CPU kernels, and the head-averaged weights come for free.

    ``pad`` (B, S) marks keys to ignore (True = padding); every query must keep one key."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(dim, dim)
        self.key_value = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x: Tensor, context: Tensor, pad: Tensor | None = None, need_weights: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        b, length, dim = x.shape
        h = self.heads
        q = self.query(x).reshape(b, length, h, dim // h).transpose(1, 2)
        k, v = self.key_value(context).reshape(b, context.shape[1], 2, h, dim // h).permute(2, 0, 3, 1, 4)
        scores = (q @ k.transpose(-1, -2)) * (dim // h) ** -0.5  # (B, H, L, S)
        if pad is not None:
            scores = scores.masked_fill(pad[:, None, None, :], float("-inf"))
        weights = scores.softmax(dim=-1)
        out = (self.dropout(weights) @ v).transpose(1, 2).reshape(b, length, dim)
        return self.out(out), weights.mean(dim=1) if need_weights else None


class Block(nn.Module):
    """A pre-norm transformer block: self-attention, optional cross-attention to a context, MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int, dropout: float, cross: bool) -> None:
        super().__init__()
        self.norm_self = nn.LayerNorm(dim)
        self.self_attn = Attention(dim, heads, dropout)
        self.norm_cross = nn.LayerNorm(dim) if cross else None
        self.cross_attn = Attention(dim, heads, dropout) if cross else None
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(mlp_ratio * dim, dim)
        )

    def forward(
        self,
        x: Tensor,
        pad: Tensor | None = None,
        context: Tensor | None = None,
        context_pad: Tensor | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """``x`` (B, L, D) with ``pad`` (B, L) True at padding; returns (x, head-averaged cross-attention
        weights (B, L, S) when ``need_weights``, else None)."""
        h = self.norm_self(x)
        x = x + self.self_attn(h, h, pad)[0]
        weights = None
        if self.cross_attn is not None:
            if context is None:
                raise ValueError("a fusion block needs the image tokens as context")
            h = self.norm_cross(x)
            out, weights = self.cross_attn(h, context, context_pad, need_weights)
            x = x + out
        return x + self.mlp(self.norm_mlp(x)), weights


class ImageEncoder(nn.Module):
    """Patch (or conv feature-map) tokens with a [CLS] token in front, then self-attention layers."""

    def __init__(self, image_shape: tuple[int, ...], config: FusionModelConfig) -> None:
        super().__init__()
        if len(image_shape) != 3:
            raise ValueError(f"the fusion model needs (C, H, W) images, got shape {tuple(image_shape)}")
        channels, height, width = image_shape
        if config.image_encoder == "vit":
            patch = config.patch_size or auto_patch_size(min(height, width))
            if height % patch or width % patch:
                raise ValueError(f"patch_size {patch} must divide the image size {height}x{width}")
            self.stem: nn.Module = nn.Conv2d(
                channels, config.dim, 2 * patch, stride=patch, padding=patch // 2
            )
            self.grid = (height // patch, width // patch)
        else:
            # the small CNN's feature map as tokens: halve the side until it is at most 7 (8x8 digits: a
            # 4x4 map, 28x28: 7x7), then one more 3x3 conv, so every token sees most of the image
            hidden = max(16, config.dim // 2)
            layers: list[nn.Module] = [nn.Conv2d(channels, hidden, 3, padding=1), nn.GELU()]
            rows, cols, width_in = height, width, hidden
            while True:
                rows, cols = (rows + 1) // 2, (cols + 1) // 2
                layers += [nn.Conv2d(width_in, config.dim, 3, padding=1, stride=2), nn.GELU()]
                width_in = config.dim
                if max(rows, cols) <= 7:
                    break
            layers.append(nn.Conv2d(config.dim, config.dim, 3, padding=1))
            self.stem = nn.Sequential(*layers)
            self.grid = (rows, cols)
        tokens = 1 + self.grid[0] * self.grid[1]
        self.cls = nn.Parameter(torch.zeros(1, 1, config.dim))
        self.position = nn.Parameter(0.02 * torch.randn(1, tokens, config.dim))
        self.blocks = nn.ModuleList(
            Block(config.dim, config.heads, config.mlp_ratio, config.dropout, cross=False)
            for _ in range(config.image_layers)
        )
        self.norm = nn.LayerNorm(config.dim)
        # per-pixel standardisation (set from the training images by the caller; checkpointed): it
        # centres the patch embeddings across images, which a digit's mostly black frame otherwise
        # buries under one shared vector
        self.register_buffer("pixel_mean", torch.zeros(image_shape))
        self.register_buffer("pixel_std", torch.ones(image_shape))

    def set_pixel_statistics(self, images: Tensor) -> None:
        """Standardise inputs with the per-pixel mean and deviation of ``images`` (N, C, H, W)."""
        self.pixel_mean.copy_(images.mean(0))
        # a pixel that is always black would divide by ~0: floor the deviation at a tenth of the mean one
        std = images.std(0)
        self.pixel_std.copy_(std.clamp_min(0.1 * float(std.mean()) + 1e-6))

    def forward(self, images: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, 1 + P, D): [CLS] then the P patch tokens in row-major order."""
        images = (images - self.pixel_mean) / self.pixel_std
        patches = self.stem(images).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(images.shape[0], -1, -1), patches], dim=1) + self.position
        for block in self.blocks:
            x = block(x)[0]
        return self.norm(x)


class TextEncoder(nn.Module):
    """Word embeddings (learned, or frozen given vectors through a learned projection), positions,
    self-attention layers. Token id 0 pads; position 0 holds [CLS]."""

    def __init__(
        self, vocab_size: int, max_len: int, config: FusionModelConfig, word_vectors: Tensor | None = None
    ) -> None:
        super().__init__()
        if word_vectors is None:
            self.embedding = nn.Embedding(vocab_size, config.dim, padding_idx=0)
            self.project: nn.Module = nn.Identity()
        else:
            if word_vectors.ndim != 2 or word_vectors.shape[0] != vocab_size:
                raise ValueError(
                    f"word_vectors must be ({vocab_size}, d) for the vocabulary, "
                    f"got {tuple(word_vectors.shape)}"
                )
            self.embedding = nn.Embedding.from_pretrained(word_vectors.float(), freeze=True, padding_idx=0)
            self.project = nn.Linear(word_vectors.shape[1], config.dim)
        self.position = nn.Parameter(0.02 * torch.randn(1, max_len, config.dim))
        self.blocks = nn.ModuleList(
            Block(config.dim, config.heads, config.mlp_ratio, config.dropout, cross=False)
            for _ in range(config.text_layers)
        )
        self.norm = nn.LayerNorm(config.dim)
        self.max_len = max_len

    def forward(self, ids: Tensor) -> Tensor:
        """(B, L) ids, L <= max_len -> (B, L, D)."""
        if ids.shape[1] > self.max_len:
            raise ValueError(f"token sequences of length {ids.shape[1]} exceed max_len {self.max_len}")
        x = self.project(self.embedding(ids)) + self.position[:, : ids.shape[1]]
        pad = ids == 0
        for block in self.blocks:
            x = block(x, pad)[0]
        return self.norm(x)


class FusionEncoder(nn.Module):
    """Text tokens attend to themselves and cross-attend to the image tokens, layer after layer."""

    def __init__(self, config: FusionModelConfig) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            Block(config.dim, config.heads, config.mlp_ratio, config.dropout, cross=True)
            for _ in range(config.fusion_layers)
        )
        self.norm = nn.LayerNorm(config.dim)

    def forward(
        self, text: Tensor, text_pad: Tensor, image: Tensor, need_attention: bool = False
    ) -> tuple[Tensor, list[Tensor]]:
        """Fused tokens (B, L, D), and per layer the head-averaged cross-attention (B, L, S) when
        ``need_attention`` (else an empty list)."""
        maps = []
        x = text
        for block in self.blocks:
            x, weights = block(x, text_pad, image, None, need_weights=need_attention)
            if need_attention:
                maps.append(weights)
        return self.norm(x), maps


class FusionModel(nn.Module):
    """Image encoder, text encoder and fusion encoder with the ALBEF heads.

    Heads: ``vision_proj`` / ``text_proj`` (unimodal [CLS] -> contrastive embedding), optional
    independent projections for deep feature separation, ``itm_head`` (fused [CLS] -> match / no match),
    ``mlm_head`` (fused tokens -> vocabulary), and ``segment`` embeddings telling the two images of a
    pair apart when both are fused with one statement (two-image reasoning: the image tokens of both are
    concatenated, each with its segment embedding added, a simplification of ALBEF's NLVR2 variant).

    Args:
        image_shape: (C, H, W).
        vocab_size: token vocabulary, 0 = padding.
        max_len: longest token sequence ([CLS] included).
        config: sizes.
        init_temperature: initial contrastive temperature (the logit scale is its inverse).
        learn_scale: learn the logit scale.
        independent: add the independent heads (``indep_img``, ``indep_txt`` outputs).
        word_vectors: optional frozen (vocab_size, d) word vectors for the text encoder.
    """

    def __init__(
        self,
        image_shape: tuple[int, ...],
        vocab_size: int,
        max_len: int,
        config: FusionModelConfig,
        *,
        init_temperature: float = 0.07,
        learn_scale: bool = False,
        independent: bool = False,
        word_vectors: Tensor | None = None,
    ) -> None:
        super().__init__()
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 3:
            raise ValueError(f"vocab_size must be an integer >= 3, got {vocab_size!r}")
        if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 2:
            raise ValueError(f"max_len must be an integer >= 2 ([CLS] and one word), got {max_len!r}")
        self.config = config
        dim = config.dim
        self.image_encoder = ImageEncoder(tuple(image_shape), config)
        self.text_encoder = TextEncoder(vocab_size, max_len, config, word_vectors)
        self.fusion = FusionEncoder(config)
        self.vision_proj = nn.Linear(dim, config.embed_dim)
        self.text_proj = nn.Linear(dim, config.embed_dim)
        self.indep_vision = nn.Linear(dim, config.embed_dim) if independent else None
        self.indep_text = nn.Linear(dim, config.embed_dim) if independent else None
        self.segment = nn.Embedding(2, dim)
        self.itm_head = nn.Linear(dim, 2)
        self.mlm_head = nn.Sequential(
            nn.Linear(dim, dim), nn.GELU(), nn.LayerNorm(dim), nn.Linear(dim, vocab_size)
        )
        self.logit_scale = LogitScale(1.0 / init_temperature, learnable=learn_scale)
        self.vocab_size = vocab_size
        self.apply(_init_weights)

    @property
    def grid(self) -> tuple[int, int]:
        """Rows and columns of the image tokens after [CLS]."""
        return self.image_encoder.grid

    # --- pieces -----------------------------------------------------------------------------------------
    def fuse(
        self, text_ids: Tensor, text_tokens: Tensor, image_tokens: Tensor, need_attention: bool = False
    ) -> tuple[Tensor, list[Tensor]]:
        """Fused text tokens of (text, image) pairs; ``text_ids`` give the padding."""
        return self.fusion(text_tokens, text_ids == 0, image_tokens, need_attention)

    def pair_tokens(self, left: Tensor, right: Tensor) -> Tensor:
        """The image tokens of two images side by side, each tagged with its segment embedding."""
        return torch.cat([left + self.segment.weight[0], right + self.segment.weight[1]], dim=1)

    def image_feature(self, tokens: Tensor) -> Tensor:
        """The unimodal image feature (B, D) of image tokens: [CLS], or the mean of all tokens."""
        return tokens[:, 0] if self.config.pool == "cls" else tokens.mean(dim=1)

    def text_feature(self, tokens: Tensor, ids: Tensor) -> Tensor:
        """The feature (B, D) of text tokens, unimodal or fused: [CLS], or the mean over the non-padding
        tokens. The fused one feeds the matching head and the reasoning tasks' answer classifiers."""
        if self.config.pool == "cls":
            return tokens[:, 0]
        keep = (ids != 0).unsqueeze(-1).to(tokens.dtype)
        return (tokens * keep).sum(dim=1) / keep.sum(dim=1).clamp_min(1.0)

    def unimodal(self, images: Tensor | None = None, texts: Tensor | None = None) -> dict[str, Tensor]:
        """Raw (unnormalised) contrastive embeddings ``img`` / ``txt`` of whichever inputs are given."""
        out = {}
        if images is not None:
            out["img"] = self.vision_proj(self.image_feature(self.image_encoder(images)))
        if texts is not None:
            out["txt"] = self.text_proj(self.text_feature(self.text_encoder(texts), texts))
        return out

    # --- the pre-training pass ---------------------------------------------------------------------------
    def forward(
        self,
        batch: dict[str, Tensor],
        keys: set[str],
        negatives: NegativeSampler | None = None,
        sharding: Sharding | None = None,
    ) -> dict[str, Tensor]:
        """Every output a pre-training step needs, in one call.

        Args:
            batch: ``img`` (B, C, H, W) and ``txt`` (B, L) token ids ([CLS] first); optionally
                ``img_aug``, ``txt_aug`` (augmented views), ``mlm_ids`` (``txt`` with masked tokens),
                ``neg_u`` (B, 2) uniforms in [0, 1) that pick the hard negatives, ``group`` (B,) long:
                rows of one group >= 0 may match each other's texts (see :func:`matching_pairs`).
            keys: outputs to compute, among :data:`PRETRAIN_KEYS`.
            negatives: the hard-negative sampler; required for ``"itm"``.
            sharding: under torch.distributed, this process's share of the global batch (``batch``
                holds its rows). Matching then draws each local row's negatives from the whole
                gathered batch and fuses them with the gathered tokens (gradients flow back to the
                process that encoded them), so the step equals the single-process one.

        Returns:
            The requested unimodal embeddings (raw, by key), and for ``"itm"``: ``itm_logits`` (3B, 2)
            over [positive pairs; image i with its sampled negative text; text j with its sampled
            negative image], ``itm_labels`` (3B,) (1 = match) and ``itm_valid`` (3B,) (a row with no
            possible negative is not valid); for ``"mlm"``: ``mlm_logits`` (B, L, V); always ``scale``,
            the logit scale (a 0-dim tensor).
        """
        unknown = sorted(set(keys) - set(PRETRAIN_KEYS))
        if unknown:
            raise ValueError(f"unknown output key(s) {unknown}; allowed: {', '.join(PRETRAIN_KEYS)}")
        out: dict[str, Tensor] = {}
        image_tokens = self.image_encoder(batch["img"])
        text_ids = batch["txt"]
        text_tokens = self.text_encoder(text_ids)
        image_feature = self.image_feature(image_tokens)
        text_feature = self.text_feature(text_tokens, text_ids)
        out["img"] = self.vision_proj(image_feature)
        out["txt"] = self.text_proj(text_feature)
        if self.indep_vision is not None:
            out["indep_img"] = self.indep_vision(image_feature)
            out["indep_txt"] = self.indep_text(text_feature)
        for stem, proj, indep in (
            ("img", self.vision_proj, self.indep_vision),
            ("txt", self.text_proj, self.indep_text),
        ):
            name = f"{stem}_aug"
            if name in keys or f"indep_{name}" in keys:
                if stem == "img":
                    feature = self.image_feature(self.image_encoder(batch[name]))
                else:
                    feature = self.text_feature(self.text_encoder(batch[name]), batch[name])
                out[name] = proj(feature)
                if indep is not None:
                    out[f"indep_{name}"] = indep(feature)
        if "itm" in keys:
            out.update(
                self._itm(
                    batch, image_tokens, text_ids, text_tokens, out["img"], out["txt"], negatives, sharding
                )
            )
        if "mlm" in keys:
            masked = batch["mlm_ids"]
            fused, _ = self.fuse(masked, self.text_encoder(masked), image_tokens)
            out["mlm_logits"] = self.mlm_head(fused)
        wanted = set(keys) - {"itm", "mlm"}
        out = {key: value for key, value in out.items() if key in wanted or key.startswith(("itm_", "mlm_"))}
        # the logit scale leaves through the forward, so a DDP wrapper sees it used in the step
        out["scale"] = self.logit_scale()
        return out

    def _itm(
        self,
        batch: dict[str, Tensor],
        image_tokens: Tensor,
        text_ids: Tensor,
        text_tokens: Tensor,
        z_img: Tensor,
        z_txt: Tensor,
        negatives: NegativeSampler | None,
        sharding: Sharding | None,
    ) -> dict[str, Tensor]:
        if negatives is None:
            raise ValueError("the 'itm' output needs a negatives sampler")
        size = text_ids.shape[0]
        # the candidates are the whole (gathered) batch; the anchors are this process's rows
        gather = sharding.gather if sharding is not None else (lambda x: x)
        local = (
            slice(sharding.rank * size, (sharding.rank + 1) * size) if sharding is not None else slice(None)
        )
        all_image_tokens, all_text_tokens = gather(image_tokens), gather(text_tokens)
        with torch.no_grad():
            all_ids = gather(text_ids)
            group = batch.get("group")
            all_group = gather(group.to(text_ids.device)) if group is not None else None
            u_img, u_txt = F.normalize(z_img.float(), dim=1), F.normalize(z_txt.float(), dim=1)
            scale = self.logit_scale().float()
            i2t = u_img @ gather(u_txt).T * scale
            t2i = u_txt @ gather(u_img).T * scale
            # a caption identical to the positive one matches the image too: never a negative
            same = matching_pairs(all_ids, all_group)
            neg_text, valid_text = negatives(i2t, batch["neg_u"][:, 0], same[local])
            neg_image, valid_image = negatives(t2i, batch["neg_u"][:, 1], same.T[local])
        images = torch.cat([image_tokens, image_tokens, all_image_tokens[neg_image]])
        ids = torch.cat([text_ids, all_ids[neg_text], text_ids])
        texts = torch.cat([text_tokens, all_text_tokens[neg_text], text_tokens])
        fused, _ = self.fuse(ids, texts, images)
        ones = torch.ones(size, dtype=torch.long, device=ids.device)
        return {
            "itm_logits": self.itm_head(self.text_feature(fused, ids)),
            "itm_labels": torch.cat([ones, 0 * ones, 0 * ones]),
            "itm_valid": torch.cat([ones.bool(), valid_text, valid_image]),
        }


def matching_pairs(text_ids: Tensor, group: Tensor | None = None) -> Tensor:
    """(B, B) bool: whether text j may describe image i, so that it must not be i's negative.

    Identical token sequences always may. ``group`` (B,) adds pairs whose rows share a group >= 0:
    on the digit data sets every caption names its digit, so a caption of another image of the same
    digit may well be true of this one (same digit, same measured strokes), and only a caption of
    another digit is surely false. A group of -1 (unlabelled) matches only itself.
    """
    same = (text_ids[:, None, :] == text_ids[None, :, :]).all(-1)
    same |= torch.eye(len(text_ids), dtype=torch.bool, device=text_ids.device)
    if group is not None:
        group = group.to(text_ids.device)
        same |= (group[:, None] == group[None, :]) & (group[:, None] >= 0)
    return same


def _init_weights(module: nn.Module) -> None:
    """Zero biases (weights keep PyTorch's default scale). PyTorch's uniform default biases add one
    shared vector to every token, which buries the input-dependent part of a small model's features:
    at initialisation every image then embeds to nearly the same point, a saddle of the contrastive
    loss that training leaves only slowly."""
    if isinstance(module, (nn.Linear, nn.Conv2d)) and module.bias is not None:
        nn.init.zeros_(module.bias)


def count_parameters(module: nn.Module) -> int:
    """Trainable parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def attention_grid(weights: Tensor, grid: tuple[int, int]) -> Tensor:
    """Cross-attention (..., 1 + P) over [CLS] and P patches -> (..., rows, cols) over the patches only,
    renormalised to sum to 1 (the [CLS] column dropped)."""
    rows, cols = grid
    if weights.shape[-1] != 1 + rows * cols:
        raise ValueError(
            f"weights has {weights.shape[-1]} columns, the grid {rows}x{cols} needs {1 + rows * cols}"
        )
    patches = weights[..., 1:]
    patches = patches / patches.sum(-1, keepdim=True).clamp_min(1e-12)
    return patches.reshape(*patches.shape[:-1], rows, cols)


__all__ = [
    "FUSION_SIZES",
    "IMAGE_ENCODERS",
    "PRETRAIN_KEYS",
    "FusionModel",
    "FusionModelConfig",
    "attention_grid",
    "auto_patch_size",
    "count_parameters",
    "fusion_size",
    "matching_pairs",
]
