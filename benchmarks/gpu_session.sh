#!/usr/bin/env bash
# Everything the performance issue asks of a GPU, as one prepared run (no GPU has been lent so far).
#
#   bash benchmarks/gpu_session.sh prepare   # here, with PyPI: peer wheels into .whl/, peer sources cached
#   bash benchmarks/gpu_session.sh run       # on the GPU machine (nothing can be fetched there), with
#                                            # .whl and data/cache/peers carried along
#
# The run takes about 9 minutes at most (each step has its own time limit, in order of importance) and
# writes into $OUT (or benchmarks/results/gpu-session/): env.txt, fused-tests.log, losses-cuda.json (the
# clip scale suite: d = 512, bf16, B up to 1,048,576, fused against naive, chunked, open_clip and inf_cl,
# with the fraction of the card's tensor-core bound), peers-cuda.json (losses against their peers).
# Copy the JSON files into benchmarks/results/ and run benchmarks/render_benchmarks.py.
set -uo pipefail
cd "$(dirname "$0")/.."
WHEELS=(inf-cl==1.2.1 open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4)  # the rest is on the machine

case "${1:-}" in
prepare)
  mkdir -p .whl
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >>.git/info/exclude
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "${WHEELS[@]}" || exit 1
  # the peers' loss sources (bench_peers.py imports them by path from data/cache/peers)
  .venv/bin/python -c "
import sys; sys.path.insert(0, 'benchmarks')
import peer_losses
for library in ('open_clip', 'lightly', 'libauc'):
    print('cached', peer_losses.fetch(library))" || exit 1
  echo "prepared: carry .whl and data/cache/peers, then run: bash benchmarks/gpu_session.sh run"
  ;;
run)
  OUT=${OUT:-benchmarks/results/gpu-session}
  mkdir -p "$OUT"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl || exit 1
  export PYTHONPATH="$PWD:/tmp/site" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
  {
    nvidia-smi
    python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
  } >"$OUT/env.txt" 2>&1
  # 1. correctness first: the fused kernels against the torch paths, compiled for this card
  WORKBENCH_FUSED_TEST_DEVICE=cuda timeout 150 python3 -m pytest -q -p no:cacheprovider -m "not gpu" \
    tests/losses/test_fused.py >"$OUT/fused-tests.log" 2>&1
  echo "fused tests: exit $?" >>"$OUT/env.txt"
  # 2. the issue's headline: clip at B = 65,536, d = 512, bf16 against the tensor-core bound, inf_cl and
  #    open_clip, and memory up to B = 1,048,576 (partial results are kept if the limit cuts it short)
  timeout 270 python3 benchmarks/bench_losses.py --device cuda --scale only --repeats 5 --max-seconds 20 \
    --out "$OUT/losses-cuda.json" >"$OUT/scale.log" 2>&1
  echo "scale suite: exit $?" >>"$OUT/env.txt"
  # 3. the losses against their peers on the GPU, interleaved
  timeout 120 python3 benchmarks/bench_peers.py --device cuda --losses clip,siglip,sogclr,dcl \
    --batch-sizes 4096,16384 --dim 512 --dtype bfloat16 --repeats 5 --max-seconds 15 \
    --out "$OUT/peers-cuda.json" >"$OUT/peers.log" 2>&1
  echo "peers: exit $?" >>"$OUT/env.txt"
  cat "$OUT/env.txt"
  ;;
*)
  echo "usage: bash benchmarks/gpu_session.sh prepare|run" >&2
  exit 2
  ;;
esac
