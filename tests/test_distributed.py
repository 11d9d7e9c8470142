"""Multi-process training (workbench.training.distributed): two CPU processes with the gloo backend.

The per-loss checks run in one spawned job (starting processes costs seconds): for every registry loss
the DDP gradient of two processes, each holding half of the batch, must equal the single-process
full-batch gradient, and the per-sample state of the stateful losses must be identical on both
processes and equal to the single-process state after several steps.
"""

from __future__ import annotations

import copy
import datetime
import json
import math
import os
import socket
import subprocess
import sys
import time

import pytest
import torch
import torch.distributed as dist
from fusion_support import tiny_fusion_config
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from workbench.losses import build_loss, loss_names
from workbench.losses._base import anchor_blocks
from workbench.store.runs import load_run
from workbench.training import distributed
from workbench.training.trainer import TrainConfig, Trainer, train

WORLD = 2
NUM_SAMPLES = 40
BATCH = 8
STEPS = 3
TOLERANCE = 1e-10  # float64 throughout: only summation order differs

# (name, parameters): every registry loss, both anchor layouts, the chunked kernels and the queue.
CASES = [
    ("ntxent", {}),
    ("ntxent", {"chunk_size": 3}),
    ("clip", {}),
    ("clip", {"symmetric": False, "chunk_size": 3}),
    ("dcl", {}),
    ("dcl", {"negatives": "cross"}),
    ("dclw", {}),
    ("siglip", {}),
    ("siglip", {"chunk_size": 3}),
    ("moco", {"queue_size": 12}),
    ("sogclr", {"num_samples": NUM_SAMPLES}),
    ("sogclr", {"num_samples": NUM_SAMPLES, "negatives": "views", "chunk_size": 3}),
    ("sogclr", {"num_samples": NUM_SAMPLES, "gamma_schedule": "cosine", "total_steps": 4}),
    ("bayes", {"num_samples": NUM_SAMPLES}),
    ("bayes", {"num_samples": NUM_SAMPLES, "negatives": "views", "include_positive": False}),
    ("bayes", {"num_samples": NUM_SAMPLES, "shape": math.inf, "estimator": "batch"}),
    ("bayes", {"num_samples": NUM_SAMPLES, "estimator": "running"}),
    # the memory bank: a random subset (process 0's) over both views, in chunks
    ("bayes", {"num_samples": NUM_SAMPLES, "negatives": "views", "bank_size": 12, "chunk_size": 3}),
    # the exact oracle: each process refreshes the bank from the whole dataset, every second step
    ("bayes", {"num_samples": NUM_SAMPLES, "estimator": "exact", "refresh_every": 2}),
]


def _gather_rows(x: torch.Tensor) -> torch.Tensor:
    """Every process's ``x`` concatenated along dim 0 in rank order (to compare states across processes)."""
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _join_group(rank: int, port: int) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=datetime.timedelta(seconds=120))


def _leave_group() -> None:
    # A process that tears down its connections while the other still waits on the last collective
    # leaves that one hanging: meet first. Then leave without running destructors: a DDP Reducer freed
    # at the end of the worker destroys the gloo group while holding the GIL, and gloo's worker thread
    # may still need the GIL to free the barrier's tensors, a deadlock seen in about 1 run in 4.
    dist.barrier()
    distributed.exit_process(0)


def _spawn(worker, *args, timeout: float = 300.0) -> None:
    """Run ``worker(rank, port, *args)`` in WORLD processes; fail (not hang) past ``timeout`` seconds."""
    context = torch.multiprocessing.spawn(worker, args=(_free_port(), *args), nprocs=WORLD, join=False)
    deadline = time.monotonic() + timeout
    while not context.join(timeout=1.0):  # raises if a process failed
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"{WORLD} processes did not finish within {timeout:.0f} s")


class _Towers(nn.Module):
    """Two small towers plus a learnable logit scale and bias (used by the loss, outside forward)."""

    def __init__(self) -> None:
        super().__init__()
        self.tower_a = nn.Sequential(nn.Linear(6, 7), nn.Tanh(), nn.Linear(7, 5))
        self.tower_b = nn.Sequential(nn.Linear(6, 7), nn.Tanh(), nn.Linear(7, 5))
        self.log_scale = nn.Parameter(torch.tensor(math.log(4.0)))
        self.bias = nn.Parameter(torch.tensor(-1.5))

    def forward(self, x_a, x_b):
        return self.tower_a(x_a), self.tower_b(x_b)


def _loss_kwargs(name: str, net: _Towers) -> dict:
    kwargs = {"scale": net.log_scale.exp()}
    if name == "siglip":
        kwargs["bias"] = net.bias
    return kwargs


def _flat_grad(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.requires_grad])


def _flat_state(loss: nn.Module) -> torch.Tensor:
    state = loss.state_dict()
    return torch.cat([state[k].double().reshape(-1) for k in sorted(state)]) if state else torch.zeros(0)


@torch.no_grad()
def _embed_all(net: nn.Module, x_a: torch.Tensor, x_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole dataset's embeddings at the current parameters (the exact Bayes E-step's population)."""
    return net(x_a, x_b)


def _loss_worker(rank: int, port: int, out_dir: str) -> None:
    _join_group(rank, port)
    sharding = distributed.loss_sharding()
    shard = distributed.shard_slice(BATCH)
    data = torch.Generator().manual_seed(0)
    x_a = torch.randn(NUM_SAMPLES, 6, generator=data, dtype=torch.float64)
    x_b = x_a + 0.3 * torch.randn(NUM_SAMPLES, 6, generator=data, dtype=torch.float64)
    # overlapping batches, so running estimates blend old and new values
    batches = [torch.randperm(NUM_SAMPLES, generator=data)[:BATCH] for _ in range(STEPS)]
    results = {}
    for case, (name, params) in enumerate(CASES):
        torch.manual_seed(case)
        reference = _Towers().double()
        if name != "siglip":
            reference.bias.requires_grad_(False)
        model = copy.deepcopy(reference)
        ddp = DistributedDataParallel(model)
        ref_loss, ddp_loss = build_loss(name, **params), build_loss(name, **params)
        for loss, net in ((ref_loss, reference), (ddp_loss, model)):
            if getattr(loss, "needs_population", False):
                loss.set_population_source(lambda net=net: _embed_all(net, x_a, x_b))
        grad_diff = value_diff = state_diff = rank_diff = 0.0
        for step, index in enumerate(batches):
            reference.zero_grad()
            torch.manual_seed(100 + step)  # the same Gamma draws for the Bayesian loss
            want = ref_loss(*reference(x_a[index], x_b[index]), index=index, **_loss_kwargs(name, reference))
            want.backward()
            model.zero_grad()
            torch.manual_seed(100 + step)
            mine = index[shard]
            with ddp_loss.sharded(sharding):
                got = ddp_loss(*ddp(x_a[mine], x_b[mine]), index=mine, **_loss_kwargs(name, model))
            got.backward()
            grad_diff = max(grad_diff, float((_flat_grad(model) - _flat_grad(reference)).abs().max()))
            value_diff = max(value_diff, abs(distributed.average(got.item()) - want.item()))
            state = _flat_state(ddp_loss)
            if state.numel():
                state_diff = max(state_diff, float((state - _flat_state(ref_loss)).abs().max()))
                both = _gather_rows(state[None])
                rank_diff = max(rank_diff, float((both[0] - both[1]).abs().max()))
        results[f"{case}:{name}"] = {
            "grad": grad_diff,
            "value": value_diff,
            "state": state_diff,
            "state_ranks": rank_diff,
            "state_size": int(_flat_state(ddp_loss).numel()),
        }
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(results, f)
    _leave_group()


def test_every_loss_matches_the_single_process_gradient_and_state(tmp_path):
    assert {name for name, _ in CASES} == set(loss_names())
    _spawn(_loss_worker, str(tmp_path))
    for rank in range(WORLD):
        results = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert len(results) == len(CASES)
        for case, r in results.items():
            assert r["grad"] < TOLERANCE, (rank, case, r)
            assert r["value"] < TOLERANCE, (rank, case, r)
            assert r["state"] < TOLERANCE, (rank, case, r)
            assert r["state_ranks"] == 0.0, (rank, case, r)
            if case.split(":")[1] in ("sogclr", "bayes", "moco"):
                assert r["state_size"] > 0, case


# --- single-process pieces -----------------------------------------------------------------------------
def test_shards_split_the_global_batch_and_refuse_a_remainder():
    assert distributed.shard_slice(8, rank_=1, world=2) == slice(4, 8)
    assert distributed.shard_slice(8) == slice(0, 8)  # no process group: the whole batch
    with pytest.raises(ValueError, match=r"batch_size=10 .* not divisible by the world size 4"):
        distributed.shard_size(10, 4)


def test_outside_a_process_group_the_helpers_are_the_identity():
    x = torch.randn(3, 2, requires_grad=True)
    assert distributed.gather_with_grad(x) is x
    assert distributed.loss_sharding() is None and not distributed.is_distributed()
    assert distributed.average(1.5) == 1.5 and distributed.run_on_main(lambda: 7) == 7


@pytest.mark.parametrize("negatives", ["views", "cross"])
@pytest.mark.parametrize("include_positive", [True, False])
def test_local_anchor_blocks_are_rows_of_the_full_blocks(negatives, include_positive):
    a, b = torch.randn(6, 3), torch.randn(6, 3)
    full = anchor_blocks(a, b, negatives, include_positive)
    halves = [anchor_blocks(a, b, negatives, include_positive, local=slice(s, s + 3)) for s in (0, 3)]
    for number, block in enumerate(full):
        parts = [blocks[number] for blocks in halves]
        rows = torch.cat([part.rows for part in parts])
        assert sorted(rows.tolist()) == list(range(block.q.shape[0]))
        for part in parts:
            assert torch.equal(part.k, block.k)
            assert torch.equal(part.q, block.q[part.rows])
            assert torch.equal(part.pos_col, block.pos_col[part.rows])
            assert (part.exclude is None) == (block.exclude is None)
            if part.exclude is not None:
                assert torch.equal(part.exclude, block.exclude[part.rows])
            slot = torch.as_tensor(block.slot).expand(block.q.shape[0])[part.rows]
            assert torch.equal(torch.as_tensor(part.slot).expand(part.q.shape[0]), slot)
    with pytest.raises(ValueError, match="local must be a non-empty slice"):
        anchor_blocks(a, b, negatives, include_positive, local=slice(4, 8))


# --- the trainer ----------------------------------------------------------------------------------------
def _config(**overrides) -> TrainConfig:
    fields = dict(
        dataset="synthetic",
        dataset_params={"num_samples": 64},
        model_size="tiny",
        loss="sogclr",
        learn_scale=True,
        batch_size=16,
        steps=6,
        eval_every=3,
        snapshot_every=6,
        checkpoint_every=3,
        probe_size=64,
    )
    fields.update(overrides)
    if fields["dataset"] == "digits_captions":
        del fields["model_size"]  # an image-text run sizes its towers instead
    return TrainConfig.from_dict(fields)


def _multimodal_config() -> TrainConfig:
    structure = {"mode": "four_term", "weights": {"separation": 1.0, "bridge": 0.5, "consistency": 0.5}}
    tower = {"hidden": 32, "depth": 1, "out_dim": 16}
    return _config(
        dataset="digits_captions",
        dataset_params={"text_encoder": "tokens", "variants": 3},
        loss="clip",
        image_tower=tower,
        text_tower=tower,
        batch_size=32,
        structure=structure,
    )


def _fusion_config() -> TrainConfig:
    """The fusion model with every objective, a stateful contrastive loss and all three structures."""
    structure = {"mode": "four_term", "weights": {"separation": 1.0, "bridge": 0.5, "consistency": 0.5}}
    return tiny_fusion_config(
        2,
        task={"per_kind_train": 10, "per_kind_test": 5, "structure": structure},
        loss="sogclr",
        learn_scale=True,
        # SGD, not Adam: the key projection's bias has a gradient of exactly 0 in exact arithmetic
        # (softmax ignores a shift shared by every key), and Adam's m / sqrt(v) would blow the
        # round-off left in it (~1e-9, differing with the summation order) up to full-size steps
        optimizer="sgd",
        batch_size=16,
        probe_size=32,
    )


def _two_steps(trainer: Trainer) -> dict[str, torch.Tensor]:
    """Parameters after two steps and the gradient of the second (a GradCache step with micro_batch)."""
    trainer.train_step(0)
    trainer.train_step(1)
    params = trainer.task.parameters()
    return {
        "params": torch.cat([p.detach().reshape(-1) for p in params]),
        # a parameter the step does not use (the fusion model's segment embeddings) has no gradient
        "grad": torch.cat(
            [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params]
        ),
    }


def _trainer_worker(rank: int, port: int, root: str) -> None:
    _join_group(rank, port)
    # interrupted after 3 steps and resumed from the checkpoint, as a killed job would be
    train(_config(), run_id="ddp", root=root, progress=False, stop_at_step=3)
    run = train(_config(), run_id="ddp", root=root, progress=False)
    assert run.is_complete
    steps = {
        "gradcache": _two_steps(Trainer(_config(micro_batch=3))),
        "multimodal": _two_steps(Trainer(_multimodal_config())),
        "fusion": _two_steps(Trainer(_fusion_config())),
    }
    fusion = train(_fusion_config(), run_id="fusion", root=root, progress=False)
    assert fusion.is_complete
    if rank == 0:
        torch.save(steps, os.path.join(root, "steps.pt"))
    with pytest.raises(ValueError, match=r"batch_size=15 .* not divisible by the world size 2"):
        Trainer(_config(batch_size=15))
    _leave_group()


@pytest.mark.slow
def test_trainer_under_two_processes_matches_one_process(tmp_path):
    _spawn(_trainer_worker, str(tmp_path / "ddp"))
    got = torch.load(tmp_path / "ddp" / "steps.pt", weights_only=True)
    want = {
        "gradcache": _two_steps(Trainer(_config())),
        "multimodal": _two_steps(Trainer(_multimodal_config())),
        "fusion": _two_steps(Trainer(_fusion_config())),
    }
    for case in want:
        for key in ("params", "grad"):
            # float32: the two processes only sum in another order (measured differences ~4e-7; up to
            # ~5e-6 in the deeper fusion model, whose gradients reach 5.6)
            atol = 2e-5 if case == "fusion" else 2e-6
            torch.testing.assert_close(
                got[case][key], want[case][key], rtol=1e-5, atol=atol, msg=f"{case} {key}"
            )

    single = train(_config(), run_id="single", root=tmp_path / "single", progress=False)
    run = load_run(tmp_path / "ddp" / "ddp")
    assert run.is_complete and run.config == single.config
    got, want = run.metrics, single.metrics
    assert list(got["step"]) == list(want["step"]) == [0, 3, 6]
    for column in ("train_loss", "global_loss", "pos_cos", "scale"):
        expected = pytest.approx(want[column].to_numpy(), rel=1e-5, abs=1e-6, nan_ok=True)
        assert got[column].to_numpy() == expected, column
    fusion = load_run(tmp_path / "ddp" / "fusion")
    single_fusion = train(_fusion_config(), run_id="fusion", root=tmp_path / "single", progress=False)
    for column in ("loss_itc", "loss_itm", "loss_mlm", "itm_acc", "vqa_acc", "i2t_R@1"):
        got_values, want_values = fusion.metrics[column].to_numpy(), single_fusion.metrics[column].to_numpy()
        assert got_values == pytest.approx(want_values, rel=1e-4, abs=1e-5, nan_ok=True), column
    state = torch.load(run.path / "checkpoint.pt", weights_only=True)
    single_state = torch.load(single.path / "checkpoint.pt", weights_only=True)
    for key, value in single_state["loss"].items():
        assert torch.allclose(state["loss"][key].double(), value.double(), atol=1e-5), key


@pytest.mark.slow
def test_torchrun_command_line_writes_one_run(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    command += ["-m", "workbench.train", "--dataset", "synthetic", "--dataset-params", '{"num_samples": 64}']
    command += "--model-size tiny --loss clip --batch-size 16 --steps 4 --eval-every 2".split()
    command += "--snapshot-every 4 --checkpoint-every 2 --probe-size 64 --run-id cli --root".split()
    command.append(str(tmp_path))
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("run cli: complete") == 1, done.stdout
    assert [p.name for p in tmp_path.iterdir()] == ["cli"]
    run = load_run(tmp_path / "cli")
    assert run.is_complete
    assert list(run.metrics["step"]) == [0, 2, 4]
    assert run.metrics["train_loss"].iloc[1:].notna().all()
