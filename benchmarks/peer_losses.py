"""Other libraries' implementations of the workbench losses, loaded for the benchmark only.

open_clip and lightly import torchvision (and much else) at package level, and LibAUC pins old
dependencies, so none of them is installed: the single source files that define their losses are
taken from the published wheels (``pip download --no-deps``, as a user of this benchmark would) into
a cache directory and imported by path. lightly's loss modules import two small lightly modules,
loaded the same way; its ``lightly.models.utils`` (torchvision) is replaced by a stub that only the
multi-process memory bank would call. pytorch-metric-learning is a dev dependency and is imported
normally.

Every peer is wrapped as ``fn(a, b, index)`` on raw (B, d) features with the workbench loss's default
hyper-parameters, L2-normalising where the peer expects normalised features (the workbench losses
normalise inside), so the two sides do the same work.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import subprocess
import sys
import tempfile
import types
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = REPO_ROOT / "data" / "cache" / "peers"

# distribution (pinned) -> the files of its wheel the benchmark needs
SOURCES = {
    "open_clip": ("open_clip_torch==3.3.0", ("open_clip/loss.py",)),
    "lightly": (
        "lightly==1.6.0",
        (
            "lightly/utils/dist.py",
            "lightly/models/modules/memory_bank.py",
            "lightly/loss/ntx_ent_loss.py",
            "lightly/loss/dcl_loss.py",
        ),
    ),
    "libauc": ("libauc==2.0.1", ("libauc/losses/contrastive.py",)),
}

# workbench loss -> [(peer label, library, builder)]; the builders are below
PeerFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class PeerUnavailable(RuntimeError):
    """A peer's source could not be fetched or imported (the message says why)."""


def fetch(library: str, cache: Path = DEFAULT_CACHE) -> Path:
    """The directory holding ``library``'s loss sources, downloading its wheel once if needed."""
    spec, members = SOURCES[library]
    root = cache / spec.replace("==", "-")
    if all((root / member).is_file() for member in members):
        return root
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "-q",
            "-d",
            tmp,
            spec,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise PeerUnavailable(f"pip download {spec} failed: {tail[:200]}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            for member in members:
                target = root / member
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(wheel.read(member))
    return root


def _load(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _package(name: str) -> types.ModuleType:
    module = sys.modules.get(name)
    if module is None:
        module = types.ModuleType(name)
        module.__path__ = []  # a namespace for the modules loaded by path below
        sys.modules[name] = module
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(_package(parent), child, module)
    return module


def load(library: str, cache: Path = DEFAULT_CACHE) -> dict[str, types.ModuleType]:
    """The loss modules of ``library``, imported by path from the cache."""
    try:
        root = fetch(library, cache)
        if library == "open_clip":
            return {"loss": _load("_peer_open_clip_loss", root / "open_clip/loss.py")}
        if library == "libauc":
            return {"contrastive": _load("_peer_libauc_contrastive", root / "libauc/losses/contrastive.py")}
        # lightly: the loss modules import lightly.utils.dist and lightly.models.modules.memory_bank
        for name in ("lightly.utils", "lightly.models.modules", "lightly.loss"):
            _package(name)
        utils = types.ModuleType("lightly.models.utils")

        def concat_all_gather(tensor):  # only the multi-process memory bank calls it
            raise NotImplementedError("lightly.models.utils is not loaded by the benchmark")

        utils.concat_all_gather = concat_all_gather
        sys.modules["lightly.models.utils"] = _package("lightly.models").utils = utils
        _package("lightly.utils").dist = _load("lightly.utils.dist", root / "lightly/utils/dist.py")
        memory_bank = _load(
            "lightly.models.modules.memory_bank", root / "lightly/models/modules/memory_bank.py"
        )
        _package("lightly.models.modules").memory_bank = memory_bank
        return {
            "ntx_ent_loss": _load("lightly.loss.ntx_ent_loss", root / "lightly/loss/ntx_ent_loss.py"),
            "dcl_loss": _load("lightly.loss.dcl_loss", root / "lightly/loss/dcl_loss.py"),
        }
    except PeerUnavailable:
        raise
    except Exception as error:  # an import error in a peer's source: report it, do not stop the run
        raise PeerUnavailable(f"{library}: {type(error).__name__}: {error}") from error


def _normalized(a, b):
    return F.normalize(a, dim=1), F.normalize(b, dim=1)


def build(peer: str, batch_size: int, device: str, cache: Path = DEFAULT_CACHE) -> PeerFn:
    """The peer ``peer`` (a key of ``PEERS``) as ``fn(a, b, index)`` at the workbench defaults."""
    if peer == "open_clip.ClipLoss":
        loss, scale = load("open_clip", cache)["loss"].ClipLoss(), torch.tensor(1 / 0.07, device=device)
        return lambda a, b, index: loss(*_normalized(a, b), scale)
    if peer == "open_clip.SigLipLoss":
        loss = load("open_clip", cache)["loss"].SigLipLoss()
        scale, bias = torch.tensor(10.0, device=device), torch.tensor(-10.0, device=device)
        return lambda a, b, index: loss(*_normalized(a, b), scale, bias)
    if peer == "lightly.NTXentLoss":
        loss = load("lightly", cache)["ntx_ent_loss"].NTXentLoss(temperature=0.5)
        return lambda a, b, index: loss(a, b)
    if peer == "lightly.DCLLoss":
        loss = load("lightly", cache)["dcl_loss"].DCLLoss(temperature=0.1)
        return lambda a, b, index: loss(a, b)
    if peer == "lightly.DCLWLoss":
        loss = load("lightly", cache)["dcl_loss"].DCLWLoss(temperature=0.1, sigma=0.5)
        return lambda a, b, index: loss(a, b)
    if peer == "pytorch_metric_learning.NTXentLoss":
        try:
            from pytorch_metric_learning.losses import NTXentLoss, SelfSupervisedLoss
        except ImportError as error:
            raise PeerUnavailable(f"pytorch-metric-learning is not installed: {error}") from error
        loss = SelfSupervisedLoss(NTXentLoss(temperature=0.5))
        return lambda a, b, index: loss(a, b)
    if peer == "libauc.GCLoss_v2":
        module = load("libauc", cache)["contrastive"]
        with contextlib.redirect_stdout(io.StringIO()):  # it prints its gamma schedule
            loss = module.GCLoss_v2(N=batch_size, tau=0.1, gamma=0.9, device=device)
        return lambda a, b, index: loss(*_normalized(a, b), index)[0]  # (loss, temperatures)
    raise ValueError(f"unknown peer {peer!r}; known: {sorted(k for v in PEERS.values() for k in v)}")


# The peers of each workbench loss, at that loss's defaults. Not the same number in every case:
# LibAUC's GCLoss_v2 leaves the positive out of the denominator (the workbench's sogclr keeps it by
# default) and reports a different surrogate value with the same kind of gradient; the work per
# step (one B x B similarity matrix, both directions) is the same.
PEERS: dict[str, tuple[str, ...]] = {
    "clip": ("open_clip.ClipLoss",),
    "siglip": ("open_clip.SigLipLoss",),
    "ntxent": ("lightly.NTXentLoss", "pytorch_metric_learning.NTXentLoss"),
    "dcl": ("lightly.DCLLoss",),
    "dclw": ("lightly.DCLWLoss",),
    "sogclr": ("libauc.GCLoss_v2",),
    "moco": (),
    "bayes": (),
}
