"""Small encoders and the two ways of pairing them: one shared encoder (two views) or two towers.

Every pair model maps a batch of paired inputs to a pair of embeddings, ``model(x_a, x_b) -> (z_a, z_b)``,
so the trainer, GradCache and the gradient-bias lab treat unimodal and two-tower models alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class MLPConfig:
    """An MLP encoder: ``depth`` hidden layers of width ``hidden`` (0 gives a linear map)."""

    hidden: int = 256
    depth: int = 2
    out_dim: int = 64

    def __post_init__(self) -> None:
        for name in ("hidden", "out_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(self.depth, bool) or not isinstance(self.depth, int) or self.depth < 0:
            raise ValueError(f"depth must be an integer >= 0, got {self.depth!r}")


MODEL_SIZES = {
    "linear": MLPConfig(hidden=1, depth=0, out_dim=16),
    "tiny": MLPConfig(hidden=64, depth=1, out_dim=32),
    "small": MLPConfig(hidden=256, depth=2, out_dim=64),
    "base": MLPConfig(hidden=512, depth=3, out_dim=128),
}


class MLPEncoder(nn.Module):
    """Flatten, then ``depth`` x (Linear, LayerNorm, GELU), then a linear projection."""

    def __init__(self, in_dim: int, config: MLPConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_dim
        for _ in range(config.depth):
            layers += [nn.Linear(width, config.hidden), nn.LayerNorm(config.hidden), nn.GELU()]
            width = config.hidden
        layers.append(nn.Linear(width, config.out_dim))
        self.net = nn.Sequential(*layers)
        self.out_dim = config.out_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class LogitScale(nn.Module):
    """A learnable inverse temperature kept in log space, as CLIP does (init 1/0.07)."""

    def __init__(self, init_scale: float = 1 / 0.07, learnable: bool = True) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(math.log(init_scale)), requires_grad=learnable)

    def forward(self) -> Tensor:
        return self.log_scale.exp()


class SiameseModel(nn.Module):
    """One encoder applied to both views (SimCLR-style)."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x_a: Tensor, x_b: Tensor) -> tuple[Tensor, Tensor]:
        return self.encoder(x_a), self.encoder(x_b)


class TwoTowerModel(nn.Module):
    """Separate towers for the two modalities (CLIP-style)."""

    def __init__(self, tower_a: nn.Module, tower_b: nn.Module) -> None:
        super().__init__()
        self.tower_a = tower_a
        self.tower_b = tower_b

    def forward(self, x_a: Tensor, x_b: Tensor) -> tuple[Tensor, Tensor]:
        return self.tower_a(x_a), self.tower_b(x_b)


def model_size(name: str) -> MLPConfig:
    if name not in MODEL_SIZES:
        raise ValueError(f"model size must be one of {', '.join(MODEL_SIZES)}; got {name!r}")
    return MODEL_SIZES[name]


def build_pair_model(kind: str, in_dim_a: int, in_dim_b: int, config: MLPConfig) -> nn.Module:
    """``kind="siamese"`` (one shared MLP; needs equal input sizes) or ``"two_tower"`` (two MLPs)."""
    if kind == "siamese":
        if in_dim_a != in_dim_b:
            raise ValueError(f"a siamese model needs equal input sizes, got {in_dim_a} and {in_dim_b}")
        return SiameseModel(MLPEncoder(in_dim_a, config))
    if kind == "two_tower":
        return TwoTowerModel(MLPEncoder(in_dim_a, config), MLPEncoder(in_dim_b, config))
    raise ValueError(f"model kind must be 'siamese' or 'two_tower'; got {kind!r}")


# --- multimodal towers ------------------------------------------------------------------------------
TOWER_KINDS = ("mlp", "cnn", "tokens")


@dataclass(frozen=True)
class TowerConfig:
    """One tower: a trunk (``mlp`` on flat inputs, ``cnn`` on images, ``tokens`` on token ids) and a
    linear head to the shared embedding. ``independent=True`` adds a second head for the
    modality-specific features that deep feature separation needs."""

    kind: str = "mlp"
    hidden: int = 256
    depth: int = 2
    out_dim: int = 64
    vocab_size: int = 0
    independent: bool = False

    def __post_init__(self) -> None:
        if self.kind not in TOWER_KINDS:
            raise ValueError(f"tower kind must be one of {', '.join(TOWER_KINDS)}; got {self.kind!r}")
        MLPConfig(self.hidden, self.depth, self.out_dim)
        if self.kind == "tokens" and self.vocab_size < 3:
            raise ValueError(f"a tokens tower needs vocab_size >= 3, got {self.vocab_size}")


class SmallCNN(nn.Module):
    """Two conv blocks then global average pooling: enough for 8x8 and 28x28 digits on a CPU."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        width = max(16, hidden // 4)
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(width, 2 * width, 3, padding=1, stride=2),
            nn.GELU(),
            nn.Conv2d(2 * width, hidden, 3, padding=1),
            nn.GELU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class TokenEncoder(nn.Module):
    """Mean of learned token embeddings over non-padding tokens (id 0 pads), then an MLP."""

    def __init__(self, vocab_size: int, hidden: int, depth: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, hidden, padding_idx=0)
        self.mlp = MLPEncoder(hidden, MLPConfig(hidden, max(depth - 1, 0), hidden))

    def forward(self, tokens: Tensor) -> Tensor:
        mask = (tokens != 0).unsqueeze(-1).float()
        pooled = (self.embedding(tokens) * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)
        return self.mlp(pooled)


class Tower(nn.Module):
    """Trunk plus heads: ``forward(x) -> (shared, independent or None)``."""

    def __init__(self, input_shape: tuple[int, ...], config: TowerConfig) -> None:
        super().__init__()
        if config.kind == "cnn":
            if len(input_shape) != 3:
                raise ValueError(f"a cnn tower needs (C, H, W) inputs, got shape {input_shape}")
            self.trunk: nn.Module = SmallCNN(input_shape[0], config.hidden)
        elif config.kind == "tokens":
            self.trunk = TokenEncoder(config.vocab_size, config.hidden, config.depth)
        else:
            flat = int(torch.tensor(input_shape).prod())
            self.trunk = MLPEncoder(flat, MLPConfig(config.hidden, max(config.depth - 1, 0), config.hidden))
        self.head = nn.Linear(config.hidden, config.out_dim)
        self.independent_head = nn.Linear(config.hidden, config.out_dim) if config.independent else None

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        features = nn.functional.gelu(self.trunk(x))
        independent = None if self.independent_head is None else self.independent_head(features)
        return self.head(features), independent


class MultimodalModel(nn.Module):
    """CLIP-style two towers with a learnable logit scale.

    ``forward(batch, keys)`` embeds the inputs that ``keys`` asks for: "img", "txt", "img_aug",
    "txt_aug" and the independent features "indep_img", "indep_txt", "indep_img_aug", "indep_txt_aug".
    """

    def __init__(
        self,
        image_shape: tuple[int, ...],
        text_shape: tuple[int, ...],
        image: TowerConfig,
        text: TowerConfig,
        init_temperature: float = 0.07,
        learn_scale: bool = True,
    ) -> None:
        super().__init__()
        if image.out_dim != text.out_dim:
            raise ValueError(f"towers must share out_dim, got {image.out_dim} and {text.out_dim}")
        self.image_tower = Tower(image_shape, image)
        self.text_tower = Tower(text_shape, text)
        self.logit_scale = LogitScale(1.0 / init_temperature, learnable=learn_scale)

    def forward(self, batch: dict[str, Tensor], keys: set[str]) -> dict[str, Tensor]:
        outputs: dict[str, Tensor] = {}
        for source, tower, stem in (("img", self.image_tower, "img"), ("txt", self.text_tower, "txt")):
            for suffix in ("", "_aug"):
                name = stem + suffix
                if name not in keys and f"indep_{name}" not in keys:
                    continue
                shared, independent = tower(batch[source + suffix])
                outputs[name] = shared
                if independent is not None:
                    outputs[f"indep_{name}"] = independent
        return {key: value for key, value in outputs.items() if key in keys}

    def embed_images(self, images: Tensor) -> Tensor:
        return self.image_tower(images)[0]

    def embed_texts(self, texts: Tensor) -> Tensor:
        return self.text_tower(texts)[0]
