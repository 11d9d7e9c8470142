"""Encoders and pair models: small MLP/CNN/token towers (``towers``) and the ALBEF-style fusion model
(``fusion``).

Every pair model maps a batch of paired inputs to a pair of embeddings, ``model(x_a, x_b) -> (z_a, z_b)``,
so the trainer, GradCache and the gradient-bias lab treat unimodal and two-tower models alike; the
fusion model adds a cross-attention encoder over both modalities (see :mod:`workbench.models.fusion`).
"""

from workbench.models.fusion import FUSION_SIZES, FusionModel, FusionModelConfig, fusion_size
from workbench.models.towers import (
    MODEL_SIZES,
    TOWER_KINDS,
    LogitScale,
    MLPConfig,
    MLPEncoder,
    MultimodalModel,
    SiameseModel,
    SmallCNN,
    TokenEncoder,
    Tower,
    TowerConfig,
    TwoTowerModel,
    build_pair_model,
    model_size,
)

__all__ = [
    "FUSION_SIZES",
    "MODEL_SIZES",
    "TOWER_KINDS",
    "FusionModel",
    "FusionModelConfig",
    "LogitScale",
    "MLPConfig",
    "MLPEncoder",
    "MultimodalModel",
    "SiameseModel",
    "SmallCNN",
    "TokenEncoder",
    "Tower",
    "TowerConfig",
    "TwoTowerModel",
    "build_pair_model",
    "fusion_size",
    "model_size",
]
