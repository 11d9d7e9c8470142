"""The ALBEF-style fusion model: shapes, masking, cross-attention, the one-call pre-training pass."""

from __future__ import annotations

import pytest
import torch

import workbench.models as models
from workbench.losses.fusion import sample_hard_negatives
from workbench.models import FusionModel, FusionModelConfig, fusion_size
from workbench.models.fusion import attention_grid

VOCAB, MAX_LEN = 30, 10


def _model(**overrides) -> FusionModel:
    torch.manual_seed(0)
    return FusionModel((1, 8, 8), VOCAB, MAX_LEN, fusion_size("tiny", **overrides))


def _batch(b: int = 6, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, VOCAB - 2, (b, 7), generator=gen)
    ids[:, 0] = VOCAB - 2  # [CLS]
    ids[:, 5:] = 0
    return {
        "img": torch.rand(b, 1, 8, 8, generator=gen),
        "txt": ids,
        "mlm_ids": ids.clone(),
        "neg_u": torch.rand(b, 2, generator=gen),
    }


def test_models_package_keeps_every_name_of_the_old_module():
    old = (
        "MLPConfig MODEL_SIZES MLPEncoder LogitScale SiameseModel TwoTowerModel model_size build_pair_model "
        "TOWER_KINDS TowerConfig SmallCNN TokenEncoder Tower MultimodalModel"
    ).split()
    missing = [name for name in old if not hasattr(models, name)]
    assert not missing


def test_unimodal_shapes_and_grid():
    model = _model()
    assert model.grid == (4, 4)  # 8x8 digits: one stride-2 conv
    out = model.unimodal(_batch()["img"], _batch()["txt"])
    assert out["img"].shape == (6, 32) and out["txt"].shape == (6, 32)
    cnn = FusionModel((1, 28, 28), VOCAB, MAX_LEN, fusion_size("tiny", image_encoder="cnn"))
    assert cnn.grid == (7, 7)  # 28 -> 14 -> 7
    assert cnn.image_encoder(torch.rand(2, 1, 28, 28)).shape == (2, 1 + 7 * 7, 32)
    vit = FusionModel((1, 28, 28), VOCAB, MAX_LEN, fusion_size("tiny", image_encoder="vit"))
    assert vit.grid == (7, 7)  # 4-pixel patches
    assert vit.image_encoder(torch.rand(2, 1, 28, 28)).shape == (2, 1 + 7 * 7, 32)


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_padding_does_not_change_the_outputs(pool):
    model = _model(pool=pool).eval()
    batch = _batch()
    longer = torch.cat([batch["txt"], torch.zeros(6, 3, dtype=torch.long)], dim=1)
    with torch.no_grad():
        a = model.text_encoder(batch["txt"])
        b = model.text_encoder(longer)
        tokens = model.image_encoder(batch["img"])
        fa, _ = model.fuse(batch["txt"], a, tokens)
        fb, _ = model.fuse(longer, b, tokens)
    # the word positions (not the padding) agree
    words = batch["txt"] != 0
    torch.testing.assert_close(a[words], b[:, :7][words], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fa[:, 0], fb[:, 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        model.text_feature(fa, batch["txt"]), model.text_feature(fb, longer), atol=1e-5, rtol=1e-5
    )


def test_cross_attention_maps_are_distributions_over_the_image_tokens():
    model = _model().eval()
    batch = _batch()
    with torch.no_grad():
        text = model.text_encoder(batch["txt"])
        _, maps = model.fuse(batch["txt"], text, model.image_encoder(batch["img"]), need_attention=True)
    assert len(maps) == 1 and maps[0].shape == (6, 7, 17)
    torch.testing.assert_close(maps[0].sum(-1), torch.ones(6, 7))
    grid = attention_grid(maps[0], model.grid)
    assert grid.shape == (6, 7, 4, 4)
    torch.testing.assert_close(grid.sum((-1, -2)), torch.ones(6, 7))


def test_pretraining_pass_samples_true_negatives():
    model = _model()
    batch = _batch()
    batch["txt"][1] = batch["txt"][0]  # rows 0 and 1 share a caption: neither is the other's negative
    batch["group"] = torch.tensor([0, 1, 2, 3, 3, -1])  # rows 3 and 4: one digit, so maybe true captions
    seen = {}

    def sampler(logits, uniforms, exclude):
        index, valid = sample_hard_negatives(logits, uniforms, exclude)
        seen.setdefault("calls", []).append((index, exclude))
        return index, valid

    out = model(batch, {"img", "txt", "itm", "mlm"}, negatives=sampler)
    assert out["itm_logits"].shape == (18, 2)
    assert out["itm_labels"].tolist() == [1] * 6 + [0] * 12
    assert out["mlm_logits"].shape == (6, 7, VOCAB)
    for index, exclude in seen["calls"]:
        assert exclude[0, 1] and exclude[1, 0] and exclude.diagonal().all()
        assert exclude[3, 4] and exclude[4, 3] and not exclude[5, 0] and not exclude[2, 5]
        assert all(index[r] != r for r in range(6))
        assert index[0] != 1 and index[1] != 0 and index[3] != 4 and index[4] != 3


def test_every_trained_parameter_gets_a_gradient():
    model = FusionModel((1, 8, 8), VOCAB, MAX_LEN, fusion_size("tiny"), independent=True, learn_scale=True)
    batch = _batch()
    batch["img_aug"], batch["txt_aug"] = batch["img"].flip(-1), batch["txt"]
    out = model(
        batch,
        {"img", "txt", "img_aug", "txt_aug", "indep_img", "indep_txt", "itm", "mlm"},
        negatives=sample_hard_negatives,
    )
    total = sum(v.float().sum() for k, v in out.items() if k not in ("itm_labels", "itm_valid"))
    total = (
        total + model.logit_scale() + model.pair_tokens(torch.zeros(1, 2, 32), torch.zeros(1, 2, 32)).sum()
    )
    total.backward()
    silent = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not silent


def test_frozen_word_vectors_are_not_trained():
    vectors = torch.randn(VOCAB, 12)
    model = FusionModel((1, 8, 8), VOCAB, MAX_LEN, fusion_size("tiny"), word_vectors=vectors)
    assert not model.text_encoder.embedding.weight.requires_grad
    assert model.text_encoder(_batch()["txt"]).shape == (6, 7, 32)
    with pytest.raises(ValueError, match="word_vectors"):
        FusionModel((1, 8, 8), VOCAB, MAX_LEN, fusion_size("tiny"), word_vectors=torch.randn(VOCAB - 1, 12))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dim": 30, "heads": 4}, "heads must divide dim"),
        ({"fusion_layers": 0}, "fusion_layers"),
        ({"image_encoder": "resnet"}, "image_encoder"),
        ({"dropout": 1.5}, "dropout"),
    ],
)
def test_bad_sizes_name_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FusionModelConfig(**kwargs)


def test_bad_size_name_and_patch():
    with pytest.raises(ValueError, match="model_size"):
        fusion_size("huge")
    with pytest.raises(ValueError, match="unknown fusion model field"):
        fusion_size("tiny", depth=3)
    with pytest.raises(ValueError, match="patch_size"):
        FusionModel((1, 8, 8), VOCAB, MAX_LEN, fusion_size("tiny", image_encoder="vit", patch_size=3))
