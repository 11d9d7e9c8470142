"""Multi-process training with torch.distributed: the process group, rank shards and gathers.

``torchrun --nproc-per-node N -m workbench.train ...`` starts N processes with ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` set; :func:`init_from_env` joins them into one process group (NCCL
on CUDA, gloo on CPU). Every process draws the same global batch of ``batch_size`` rows and keeps its
shard of ``batch_size / world_size`` rows (:func:`shard_slice`), so the union of the shards is exactly
the single-process batch. The losses then score their local anchors against the columns of the whole
global batch, gathered with :func:`gather_with_grad` (see ``ContrastiveLoss.sharded``).

Outside a process group (``WORLD_SIZE`` unset or 1) every helper here is the single-process identity,
so the same code runs either way.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable, Iterable
from typing import NoReturn, TypeVar

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
from torch import Tensor, nn

from workbench.losses._base import Sharding

T = TypeVar("T")

# torch 2.13 marks all_gather here as deprecated in favour of the private _functional_collectives
# module; the public function is still the documented differentiable gather, so keep it quietly.
warnings.filterwarnings(
    "ignore", message=r"torch\.distributed\.nn\.functional\.all_gather is deprecated", category=FutureWarning
)


# --- the process group --------------------------------------------------------------------------------
def env_world_size() -> int:
    """``WORLD_SIZE`` as torchrun sets it (1 when unset)."""
    value = os.environ.get("WORLD_SIZE", "1")
    try:
        size = int(value)
    except ValueError:
        raise ValueError(f"environment variable WORLD_SIZE must be an integer, got {value!r}") from None
    if size < 1:
        raise ValueError(f"environment variable WORLD_SIZE must be >= 1, got {size}")
    return size


def local_rank() -> int:
    """This process's index on its node (``LOCAL_RANK``; 0 when unset): its GPU under NCCL."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def init_from_env(backend: str | None = None) -> bool:
    """Join the process group that torchrun describes in the environment, if there is one.

    Does nothing when ``WORLD_SIZE`` is unset or 1, or when a group is already initialised (a test
    harness, a notebook). Reads ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` through
    torch's ``env://`` rendezvous.

    Args:
        backend: "nccl", "gloo", or None for NCCL when CUDA is available and gloo otherwise.

    Returns:
        Whether this process now belongs to a group of more than one process.
    """
    if env_world_size() > 1 and not dist.is_initialized():
        if backend is None:
            backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend not in ("nccl", "gloo"):
            raise ValueError(f"backend must be 'nccl', 'gloo' or None; got {backend!r}")
        if backend == "nccl":
            # before the group exists, so NCCL's communicator binds this process's own GPU
            torch.cuda.set_device(local_rank())
        dist.init_process_group(backend)
    return is_distributed()


def cleanup() -> None:
    """Leave the process group (if any); call once at the end of a torchrun entry point."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def exit_process(code: int) -> NoReturn:
    """End a worker process now, after flushing its output, without running Python's destructors.

    Why: a DDP Reducer or process group freed during interpreter shutdown destroys the gloo group while
    holding the GIL, and gloo's worker thread may still need the GIL to release the tensors of the last
    collective: both then wait forever (torch 2.13, gloo). Everything a run writes is on disk by then.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def is_distributed() -> bool:
    """Whether this process belongs to an initialised group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 outside a group)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Processes in the group (1 outside a group)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """True on the process that writes the run store (rank 0, or the only process)."""
    return rank() == 0


def local_device(device: torch.device) -> torch.device:
    """Under a process group, a bare ``cuda`` device becomes this process's ``cuda:LOCAL_RANK``."""
    if is_distributed() and device.type == "cuda" and device.index is None:
        return torch.device("cuda", local_rank())
    return device


def barrier() -> None:
    """Wait for every process (no-op outside a group)."""
    if is_distributed():
        dist.barrier()


# --- shards ---------------------------------------------------------------------------------------------
def shard_size(batch_size: int, world: int | None = None) -> int:
    """Rows of a global batch of ``batch_size`` that each of ``world`` processes holds.

    Raises:
        ValueError: ``batch_size`` is not divisible by the world size.
    """
    world = world_size() if world is None else world
    if batch_size % world != 0:
        raise ValueError(
            f"batch_size={batch_size} (the global batch) is not divisible by the world size {world}; "
            f"choose a batch_size that is a multiple of {world} (e.g. {(batch_size // world + 1) * world})"
        )
    return batch_size // world


def shard_slice(batch_size: int, rank_: int | None = None, world: int | None = None) -> slice:
    """The rows of the global batch that process ``rank_`` (default: this one) trains on."""
    rank_ = rank() if rank_ is None else rank_
    size = shard_size(batch_size, world)
    return slice(rank_ * size, (rank_ + 1) * size)


# --- collectives ----------------------------------------------------------------------------------------
def gather_with_grad(x: Tensor) -> Tensor:
    """Every process's ``x`` concatenated along dim 0 in rank order, differentiably.

    The backward pass sums, over processes, the gradients that reach each process's rows
    (``torch.distributed.nn.functional.all_gather``), which is what makes local-row losses exact under
    DDP's gradient averaging. All processes must pass tensors of one shape.
    """
    if not is_distributed():
        return x
    return torch.cat(dist_nn.all_gather(x), dim=0)


@torch.no_grad()
def loss_sharding() -> Sharding | None:
    """The :class:`~workbench.losses._base.Sharding` of this process (None outside a group)."""
    if not is_distributed():
        return None
    return Sharding(rank=rank(), world_size=world_size(), gather=gather_with_grad)


def average(value: float) -> float:
    """The mean of ``value`` over processes (the value itself outside a group)."""
    return average_values([value])[0]


def average_values(values: list[float]) -> list[float]:
    """The mean of each value over processes, in one collective (the values themselves outside a group)."""
    if not is_distributed() or not values:
        return list(values)
    backend = dist.get_backend()
    device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
    total = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return (total / world_size()).tolist()


@torch.no_grad()
def average_tensor(x: Tensor) -> Tensor:
    """The mean of ``x`` over processes (``x`` itself outside a group), without reading it on the host."""
    if not is_distributed():
        return x
    total = x.detach().clone()
    dist.all_reduce(total)
    return total / world_size()


@torch.no_grad()
def average_gradients(parameters: Iterable[nn.Parameter]) -> None:
    """Replace each parameter's ``.grad`` by its mean over processes, as DDP does for its module.

    For gradients that DDP does not reduce: parameters outside the wrapped module (a learnable logit
    scale), or a module whose backward ran in several passes (GradCache).
    """
    if not is_distributed():
        return
    world = world_size()
    for p in parameters:
        if p.requires_grad:
            if p.grad is None:
                # every process must take part in the reduction, even one whose rows gave no gradient
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad)
            p.grad /= world


def run_on_main(fn: Callable[[], T], share: bool = True) -> T | None:
    """Call ``fn`` on process 0 only; every process returns its result or raises its ValueError.

    A ValueError raised on process 0 (a bad config, a run that cannot be resumed) is raised again on
    every process, so none of them waits forever for a process that gave up.

    Args:
        fn: the work (file-system reads and writes that must happen once).
        share: send the result to every process (it must pickle); False returns None elsewhere.
    """
    if not is_distributed():
        return fn()
    payload: list[object] = [None]
    result = None
    if rank() == 0:
        try:
            result = fn()
            payload = [("ok", result if share else None)]
        except ValueError as err:
            payload = [("error", str(err))]
    dist.broadcast_object_list(payload, src=0)
    status, value = payload[0]
    if status == "error":
        raise ValueError(value)
    return result if rank() == 0 else value


def sync_rng_state() -> None:
    """Give every process the torch random state of process 0 (CPU and this process's GPU).

    Evaluation runs on process 0 alone and may draw random numbers; syncing afterwards keeps every
    process's stream equal to the single-process one, so random steps (Bayesian Gamma draws, random
    bridge times) agree everywhere.
    """
    if not is_distributed():
        return
    cuda = torch.cuda.is_available() and dist.get_backend() == "nccl"
    state = [(torch.get_rng_state(), torch.cuda.get_rng_state() if cuda else None)]
    dist.broadcast_object_list(state, src=0)
    cpu_state, cuda_state = state[0]
    torch.set_rng_state(cpu_state.cpu())
    if cuda and cuda_state is not None:
        torch.cuda.set_rng_state(cuda_state.cpu())
