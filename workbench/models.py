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
