#!/usr/bin/env python
"""Regenerate BENCHMARKS.md from every JSON file in benchmarks/results/.

Only the part between ``<!-- generated:start -->`` and ``<!-- generated:end -->`` is rewritten; the
hand-written text before (and after) the markers is kept. Without markers the whole existing file is
kept as the header and the generated part is appended.

    python benchmarks/render_benchmarks.py
    python benchmarks/render_benchmarks.py --results-dir /tmp/res --output /tmp/BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
START = "<!-- generated:start -->"
END = "<!-- generated:end -->"
IMPLS = ("naive", "chunked", "fused")
PEERS = ("open_clip", "inf_cl")
DEFAULT_HEADER = """# Benchmarks

Forward+backward time and peak memory of the contrastive losses in `workbench.losses`, with the
B x B similarity matrix materialised (`naive`, `chunk_size=None`) and with the exact chunked kernels
(`chunked`, memory linear in B). Method and caveats: [benchmarks/README.md](benchmarks/README.md).
"""
STATUS_SHORT = {"skipped: memory": "skip (memory)", "skipped: too slow": "skip (slow)"}
STATUS_PREFIX_SHORT = {"not measured": "n/m", "skipped": "skip"}
FALLBACK_MARK = "†"
WARMUP_MARK = "‡"


def load_results(results_dir: Path) -> list[tuple[Path, dict]]:
    """Every ``*.json`` under ``results_dir``: CPU files first, then the fuller runs, then by name."""
    loaded = []
    for path in sorted(results_dir.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise SystemExit(f"cannot read benchmark results {path}: {exc}") from exc
        if isinstance(data, dict) and data.get("benchmark") == "app":
            continue  # bench_app.py results: rendered by render_app_section
        if isinstance(data, dict) and data.get("benchmark") in ("one_function_clip", "tile_processes"):
            continue  # experiments (bench_one_function_clip.py, bench_tile_processes.py), cited by hand
        if isinstance(data, dict) and data.get("kind") == "peers":
            continue  # bench_peers.py results: rendered by render_peers_section
        if not isinstance(data, dict) or "results" not in data:
            raise SystemExit(f"{path} is not a bench_losses.py result file (no 'results')")
        loaded.append((path, data))
    loaded.sort(
        key=lambda item: (item[1].get("device_type") != "cpu", -len(item[1]["results"]), item[0].name)
    )
    return loaded


# --- formatting -------------------------------------------------------------------------------------
def fmt_seconds(value: float) -> str:
    return f"{value:.3g}" if value >= 0.001 else f"{value:.1e}"


def fmt_mib(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:.1f}"


def fmt_ratio(num: float | None, den: float | None) -> str:
    if num is None or den is None or den <= 0:
        return "–"
    return f"{num / den:.2f}×"


def cell(record: dict | None, key: str, fmt) -> str:
    if record is None:
        return "–"
    status = record.get("status", "")
    if status != "ok":
        if status in STATUS_SHORT:
            return STATUS_SHORT[status]
        return STATUS_PREFIX_SHORT.get(status.split(":")[0], "error")
    text = fmt(record[key])
    note = record.get("note") or ""
    if record.get("impl") == "chunked" and "same code path" in note:
        text += FALLBACK_MARK
    if key == "seconds_median" and "warm-up alone" in note:
        text += WARMUP_MARK
    return text


def cpu_share(data: dict) -> float | None:
    """Process CPU time over (wall time x threads) of all timed passes: 1.0 = the threads never waited."""
    wall = cpu = 0.0
    for r in data["results"]:
        if r.get("status") == "ok" and r.get("cpu_seconds_all"):
            wall += sum(r["seconds_all"])
            cpu += sum(r["cpu_seconds_all"])
    threads = data.get("threads") or 1
    return cpu / (wall * threads) if wall > 0 else None


def ok_value(record: dict | None, key: str) -> float | None:
    if record is None or record.get("status") != "ok":
        return None
    return record.get(key)


def growth_exponent(records: dict[int, dict]) -> str:
    """log-log slope of peak memory between the two largest B with a measurement."""
    points = sorted(
        (b, r["peak_mem_mb"]) for b, r in records.items() if r.get("status") == "ok" and r["peak_mem_mb"] > 0
    )
    if len(points) < 2:
        return "–"
    (b1, m1), (b2, m2) = points[-2], points[-1]
    return f"{math.log(m2 / m1) / math.log(b2 / b1):.2f} (B {b1}→{b2})"


# --- one result file --------------------------------------------------------------------------------
def render_file(path: Path, data: dict, repo_root: Path) -> list[str]:
    kind = str(data.get("device_type", "?")).upper()
    try:
        shown = path.resolve().relative_to(repo_root)
    except ValueError:
        shown = path.name
    host = data.get("host") or {}
    title = f"### {kind}: {data.get('device', 'unknown device')} (`{shown}`)"
    if data.get("quick"):
        title += " (quick smoke run)"
    lines = [title, ""]
    env = " ".join(f"{k}={v}" for k, v in sorted((host.get("malloc_env") or {}).items()))
    lines.append(f"- Command: `{(env + ' ') if env else ''}{data.get('command', '?')}`")
    device_bits = [str(data.get("device", "?"))]
    if host.get("cpu_count"):
        device_bits.append(f"{host['cpu_count']} logical CPUs")
    device_bits.append(f"torch {data.get('torch', '?')} using {data.get('threads', '?')} threads")
    if host.get("memory_available_gib") is not None:
        device_bits.append(f"{host['memory_available_gib']} GiB memory available at start")
    lines.append(f"- Device: {', '.join(device_bits)}")
    lines.append(
        f"- Setup: d={data.get('dim')}, {data.get('dtype')}, chunk_size={data.get('chunk_size')}, "
        f"up to {data.get('repeats')} timed runs (median), --max-seconds {data.get('max_seconds')}; "
        f"created {data.get('created', '?')}"
        + (f", took {data['total_seconds']:.0f} s" if data.get("total_seconds") is not None else "")
    )
    if data.get("loadavg_start") is not None:
        lines.append(
            f"- Load average (1/5/15 min) at start {data.get('loadavg_start')}, "
            f"at end {data.get('loadavg_end', '?')}"
        )
    if data.get("memory_method"):
        lines.append(f"- Memory method: {data['memory_method']}")
    if env:
        lines.append(f"- Allocator environment: `{env}` (glibc malloc tuning, part of the command)")
    share = cpu_share(data) if data.get("device_type") == "cpu" else None
    if share is not None:
        line = f"- CPU share: the timed passes used {share:.0%} of {data.get('threads')} threads x wall time"
        if share < 0.8:
            line += (
                " — **the machine was busy: the timings are inflated by waiting for a CPU, by a different "
                "factor in each row; memory is not affected**"
            )
        lines.append(line)
    if not data.get("complete", True):
        lines.append("- **Incomplete**: the run was interrupted; only the rows below were measured.")
    lines.append("")

    table: dict[str, dict[int, dict[str, dict]]] = {}
    for record in data["results"]:
        table.setdefault(record["loss"], {}).setdefault(record["batch_size"], {})[record["impl"]] = record
    lines += impl_table(table, data["results"])
    lines += peer_table(table)
    lines += scale_section(data.get("scale"))
    errors = [
        r
        for r in [*data["results"], *((data.get("scale") or {}).get("results") or [])]
        if str(r.get("status", "")).startswith("error")
    ]
    if errors:
        lines += ["", "Errors:", ""]
        lines += [f"- {r['loss']} {r['impl']} B={r['batch_size']}: {r['status']}" for r in errors]
    if data.get("notes"):
        lines += ["", "Notes recorded with this run:", ""]
        lines += [f"- {note}" for note in data["notes"]]
    lines.append("")
    return lines


def impl_table(table: dict[str, dict[int, dict[str, dict]]], results: list[dict]) -> list[str]:
    """Time and memory of every implementation in the file, with ratios against naive."""
    impls = [impl for impl in IMPLS if any(r["impl"] == impl for r in results)]
    others = [impl for impl in impls if impl != "naive"]
    head = ["loss", "B", *(f"{i} s" for i in impls), *(f"time {i}/naive" for i in others)]
    head += [*(f"{i} MiB" for i in impls), *(f"mem {i}/naive" for i in others)]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for loss, by_b in table.items():
        for batch_size in sorted(by_b):
            recs = by_b[batch_size]
            row = [loss, str(batch_size)]
            for key, fmt in (("seconds_median", fmt_seconds), ("peak_mem_mb", fmt_mib)):
                row += [cell(recs.get(i), key, fmt) for i in impls]
                naive = ok_value(recs.get("naive"), key)
                row += [fmt_ratio(ok_value(recs.get(i), key), naive) for i in others]
            # the column order above is times, time ratios, memories, memory ratios
            lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        f"{FALLBACK_MARK} chunk_size >= the anchor rows of a block, so `chunked` ran the same code as "
        f"`naive` (the difference is noise). {WARMUP_MARK} one pass only: the warm-up alone exceeded "
        "--max-seconds and is the reported time. skip (memory): the naive B x B matrices would not fit; "
        "skip (slow): a smaller B of the same loss and impl already exceeded --max-seconds"
        + ("; n/m: not measured on this device (see the notes)." if "fused" in impls else "."),
        "",
        "Memory growth exponent (log-log slope of peak memory between the two largest B measured; "
        "1 = linear, 2 = quadratic):",
        "",
        "| loss | " + " | ".join(impls) + " |",
        "|---|" + "---|" * len(impls),
    ]
    for loss, by_b in table.items():
        per_impl = {impl: {b: recs[impl] for b, recs in by_b.items() if impl in recs} for impl in impls}
        lines.append(f"| {loss} | " + " | ".join(growth_exponent(per_impl[i]) for i in impls) + " |")
    return lines


def peer_table(table: dict[str, dict[int, dict[str, dict]]]) -> list[str]:
    """clip against the other libraries' CLIP losses, where any were measured or tried."""
    by_b = table.get("clip", {})
    peers = [p for p in PEERS if any(p in recs for recs in by_b.values())]
    if not peers:
        return []
    lines = [
        "",
        "clip against other libraries (same features, scale and device; ratio > 1: fused is faster):",
        "",
        "| B | fused s | " + " | ".join(f"{p} s | {p}/fused" for p in peers) + " |",
        "|---:|---:|" + "---:|---:|" * len(peers),
    ]
    for batch_size in sorted(by_b):
        recs = by_b[batch_size]
        fused = ok_value(recs.get("fused"), "seconds_median")
        row = [str(batch_size), cell(recs.get("fused"), "seconds_median", fmt_seconds)]
        for p in peers:
            row += [
                cell(recs.get(p), "seconds_median", fmt_seconds),
                fmt_ratio(ok_value(recs.get(p), "seconds_median"), fused),
            ]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def scale_section(scale: dict | None) -> list[str]:
    """The CUDA scale suite: clip at d=512 bf16, fraction of the tensor-core bound, memory against B."""
    if not scale:
        return []
    peak = scale.get("bf16_peak_tflops")
    dim = scale.get("dim")
    lines = [
        "",
        f"#### Scale: clip, d={dim}, {scale.get('dtype')}, forward+backward",
        "",
        "Model FLOPs 6 B^2 d; bound = model FLOPs at the dense bf16 peak "
        + (f"({peak:g} TFLOP/s for this device)." if peak else "(device not in the peak table: no bound)."),
        "",
        "| impl | B | s | time / fused | model TFLOP/s | fraction of bound | bound s | peak extra MiB "
        "| MiB per 1k rows |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    by_impl: dict[str, dict[int, dict]] = {}
    for r in scale.get("results", []):
        by_impl.setdefault(r["impl"], {})[r["batch_size"]] = r
    fused = by_impl.get("fused", {})
    for r in scale.get("results", []):
        ok = r.get("status") == "ok"
        tflops = f"{r['model_tflops']:g}" if ok and r.get("model_tflops") else "–"
        fraction = f"{r['bound_fraction']:.1%}" if ok and r.get("bound_fraction") else "–"
        bound = fmt_seconds(r["bound_seconds"]) if ok and r.get("bound_seconds") else "–"
        per_k = f"{1000 * r['peak_mem_mb'] / r['batch_size']:.1f}" if ok else "–"
        fused_s = ok_value(fused.get(r["batch_size"]), "seconds_median")
        versus = fmt_ratio(ok_value(r, "seconds_median"), fused_s)
        lines.append(
            f"| {r['impl']} | {r['batch_size']:,} | {cell(r, 'seconds_median', fmt_seconds)} | {versus} "
            f"| {tflops} | {fraction} | {bound} | {cell(r, 'peak_mem_mb', fmt_mib)} | {per_k} |"
        )
    lines += [
        "",
        "Memory growth exponent of the scale suite: "
        + ", ".join(f"{impl} {growth_exponent(recs)}" for impl, recs in by_impl.items())
        + ".",
    ]
    return lines


def gpu_not_measured() -> list[str]:
    """The GPU section when no CUDA result file exists: what was not measured, and why."""
    rows = [
        "every loss x naive / chunked / fused x B (time, peak memory)",
        "clip forward+backward at B=65,536, d=512, bf16: time and fraction of the tensor-core bound",
        "clip at B=1,048,576 (fused)",
        "peak extra memory against B (fused; linear growth)",
        "clip against open_clip ClipLoss and inf-cl",
    ]
    return [
        "### GPU",
        "",
        "GPU: not measured in this session (no GPU lent). The fused Triton kernels "
        '(`implementation="fused"`) were built and checked on CPU only: against the naive path through '
        "the Triton interpreter, and compiled for sm_90 (H100) without running "
        "(`tests/losses/test_fused.py`). The interpreter is not a timing, so no fused time or memory is "
        "reported; running `benchmarks/bench_losses.py` on a CUDA machine fills this section.",
        "",
        "| measurement | status |",
        "|---|---|",
        *(f"| {row} | not measured (no GPU) |" for row in rows),
        "",
    ]


def render_generated(results: list[tuple[Path, dict]], repo_root: Path) -> str:
    lines = [
        START,
        "<!-- Written by benchmarks/render_benchmarks.py from benchmarks/results/*.json: edits between "
        "these markers are overwritten. -->",
        "",
        "## Results",
        "",
    ]
    if not any(data.get("device_type") == "cuda" for _, data in results):
        lines += gpu_not_measured()
    if not results:
        lines += ["No result files yet: run `benchmarks/bench_losses.py` (see below).", ""]
    for path, data in results:
        lines += render_file(path, data, repo_root)
    lines += [
        "### How to regenerate",
        "",
        "Run the benchmark, then re-render this file (the hand-written text above the generated "
        "markers is kept):",
        "",
        "```bash",
        ".venv/bin/python benchmarks/bench_losses.py       # -> benchmarks/results/losses-<device>.json",
        ".venv/bin/python benchmarks/render_benchmarks.py  # rewrites the generated part of BENCHMARKS.md",
        "```",
        "",
        "`--device cuda` (default where CUDA is available) adds B=65536; `--help` lists the options "
        "(`--losses`, `--batch-sizes`, `--repeats`, `--max-seconds`, ...). Every JSON file in "
        "`benchmarks/results/` gets its own section; delete a file to drop its section. Timings depend "
        "on other load on the machine: compare numbers only within one section.",
        END,
    ]
    return "\n".join(lines) + "\n"


def splice(existing: str | None, generated: str) -> str:
    """Replace the generated block of ``existing`` (or append one), keeping everything else."""
    if existing is None:
        return DEFAULT_HEADER + "\n" + generated
    start, end = existing.find(START), existing.find(END)
    if start == -1 or end == -1 or end < start:
        return existing.rstrip("\n") + "\n\n" + generated
    tail = existing[end + len(END) :]
    return existing[:start] + generated.rstrip("\n") + tail if tail.strip() else existing[:start] + generated


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual mode
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --- dashboard timings (benchmarks/bench_app.py) -------------------------------------------------------
def render_app_section(results_dir: Path, repo_root: Path) -> list[str]:
    """Markdown for every ``bench_app.py`` result file (``"benchmark": "app"``) in ``results_dir``."""
    lines: list[str] = []
    for path in sorted(results_dir.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise SystemExit(f"cannot read benchmark results {path}: {exc}") from exc
        if not isinstance(data, dict) or data.get("benchmark") != "app":
            continue
        try:
            shown = path.resolve().relative_to(repo_root)
        except ValueError:
            shown = path.name
        setup, target = data.get("setup", {}), data.get("target_seconds", 2.0)
        upload_target = data.get("upload_target_seconds")
        if not lines:
            lines += ["## Dashboard", ""]
        goal = f"every page drawn within {target:g} s after its first visit"
        if upload_target is not None:
            goal += f", the upload page within {upload_target:g} s of the upload"
        lines += [
            f"### Page render times, {setup.get('points')} pairs x {setup.get('checkpoints')} checkpoints "
            f"(`{shown}`)",
            "",
            f"- Command: `{data.get('command', '?')}`",
            f"- Device: {data.get('device', '?')}, {data.get('host', {}).get('cpu_count', '?')} logical "
            f"CPUs; d={setup.get('dim')}, median of {setup.get('repeats')} runs; "
            f"created {data.get('created', '?')}",
            f"- Load average (1/5/15 min) at start {data.get('loadavg_start')}, "
            f"at end {data.get('loadavg_end')}" + (f"; {data['note']}" if data.get("note") else ""),
            f"- Figure JSON sent to the browser: {setup.get('figure_single_json_mb', '?')} MB for one "
            f"checkpoint (the default), {setup.get('figure_json_mb', '?')} MB animated (all checkpoints, "
            "only when the user turns on 'Animate (play)')"
            + (f"; upload file {setup['upload_mb']} MB" if "upload_mb" in setup else ""),
            "- Pages run under Streamlit's AppTest (the page script as the server runs it, no browser "
            "drawing); the `browser_*` rows are `streamlit run` in headless chromium (software rendering, "
            "no GPU), until every plot and table in view has drawn: `browser_<page>` opens the page's "
            "address (the whole app loads), `browser_link_<page>` clicks its sidebar link from the runs "
            "page (the app stays loaded), `browser_tab_<page>_<tab>` clicks a tab (only the open tab is "
            "drawn); with the CPU seconds the server and chromium spent per visit (medians; they hardly "
            "depend on what else runs on the machine). "
            f"Target: {goal}; ✗ marks a timed row over its target.",
        ]
        if setup.get("browser_skipped"):
            lines.append(f"- Browser timings skipped: {setup['browser_skipped']}")
        lines += ["", "| measurement | what | target s | median s | all runs s | CPU s server + browser |",
                  "|---|---|---:|---:|---|---|"]  # fmt: skip
        for record in data.get("results", []):
            median = record.get("seconds_median")
            goal_s = record.get("target_seconds")
            if goal_s is None and "upload_target_seconds" not in data:  # results of the earlier bench
                goal_s = target if record["name"].startswith(("render", "browser")) else None
            flag = " ✗" if goal_s is not None and median is not None and median > goal_s else ""
            runs = ", ".join(f"{v:.3f}" for v in record.get("seconds_all", []))
            shown_goal = "" if goal_s is None else f"{goal_s:g}"
            cpu = ""
            if "cpu_server_median" in record:
                cpu = f"{record['cpu_server_median']:.2f} + {record['cpu_browser_median']:.2f}"
            lines.append(
                f"| {record['name']} | {record.get('what', '')} | {shown_goal} | {median:.3f}{flag} | {runs} "
                f"| {cpu} |"
            )
        lines += ["", "Regenerate: `.venv/bin/python benchmarks/bench_app.py`, then this renderer.", ""]
    return lines


def _ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}×"


def _mib(value: float | None) -> str:
    return "–" if value is None else fmt_mib(value)


def _env_note(env: dict | None) -> str:
    if not env:
        return ""
    return "; environment " + ", ".join(f"`{key}={value}`" for key, value in sorted(env.items()))


def render_peers_section(results_dir: Path, repo_root: Path) -> list[str]:
    """The bench_peers.py files: each loss against the peers that implement it, and training throughput."""
    lines: list[str] = []
    for path in sorted(results_dir.glob("peers-*.json")):
        data = json.loads(path.read_text())
        if data.get("kind") != "peers":
            continue
        where = path.relative_to(repo_root) if path.is_relative_to(repo_root) else path.name
        tiny = " — tiny smoke run, not a measurement" if data.get("tiny") else ""
        lines += [
            f"### Against other libraries: {data['device']} (`{where}`){tiny}",
            "",
            f"- Command: `{data['command']}`",
            f"- Setup: d={data['dim']}, {data['dtype']}, torch {data['torch']} using {data['threads']} "
            f"threads, chunk_size={data['chunk_size']}, up to {data['repeats']} interleaved rounds; "
            f"created {data['created']}; load average at start {data.get('loadavg_start')}, at end "
            f"{data.get('loadavg_end')}" + _env_note(data.get("host", {}).get("env")),
            "- Ratios are medians over rounds of per-round time ratios (every contender runs once per "
            "round, in rotating order). `bound`: the three (M x N x d) matrix products of the loss's "
            "similarity matrix, timed in the same rounds"
            + (
                " (for bayes, also the two forward (B x N x d) products of its E-step against the bank of "
                "N = B samples)"
                if any(r.get("bound_extra_products") for r in data["results"])
                else ""
            )
            + "; `floor` (where measured): the bound plus one "
            "in-place exponential over the matrix and its row sums, the least elementwise work of a "
            "softmax loss without a fused kernel. Peers: "
            + ", ".join(f"`{k}` from {v}" for k, v in data.get("peer_sources", {}).items())
            + " (loss source files only) and pytorch-metric-learning.",
            "",
            "| loss | B | fastest peer | peer s | default s | default / peer | chunked / peer "
            "| default / bound | chunked / bound | floor / bound | default MiB | chunked MiB | peer MiB |",
            "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for record in data["results"]:
            head = f"| {record['loss']} | {record['batch_size']} |"
            if record["status"] != "ok":
                lines.append(f"{head} {record['status']} |" + " |" * 10)
                continue
            rows, peer = record["contenders"], record.get("fastest_peer")
            default, chunked = rows["default"], rows["chunked"]
            peer_row = rows.get(peer) if peer else None
            floor = rows.get("floor", {}).get("ratio_to_bound")
            lines.append(
                f"{head} {peer or 'none'} | "
                f"{'–' if peer_row is None else fmt_seconds(peer_row['seconds_median'])} | "
                f"{fmt_seconds(default['seconds_median'])} | "
                f"{_ratio(default.get('ratio_to_fastest_peer'))} | "
                f"{_ratio(chunked.get('ratio_to_fastest_peer'))} | "
                f"{_ratio(default['ratio_to_bound'])} | {_ratio(chunked['ratio_to_bound'])} | "
                f"{_ratio(floor)} | {_mib(default['peak_mem_mb'])} | {_mib(chunked['peak_mem_mb'])} | "
                f"{_mib(None if peer_row is None else peer_row['peak_mem_mb'])} |"
            )
        skipped = {(r["loss"], p): why for r in data["results"] for p, why in r.get("skipped", {}).items()}
        if skipped:
            lines += [
                "",
                "Peers not run: " + "; ".join(f"{p} for {loss}: {why}" for (loss, p), why in skipped.items()),
            ]
        if data.get("training"):
            lines += [
                "",
                "Training throughput (`Trainer.train_step` of the default run, the loss swapped):",
                "",
                "| loss | dataset | batch | steps | samples/s |",
                "|---|---|---:|---:|---:|",
            ]
            lines += [
                f"| {t['loss']} | {t['dataset']} | {t['batch_size']} | {t['steps']} | "
                f"{t['samples_per_second']:.0f} |"
                for t in data["training"]
            ]
        lines.append("")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--results-dir",
        type=Path,
        default=REPO_ROOT / "benchmarks" / "results",
        help="folder of bench_losses.py JSON files (default: benchmarks/results)",
    )
    parser.add_argument(
        "--output", type=Path, default=REPO_ROOT / "BENCHMARKS.md", help="Markdown file to (re)write"
    )
    args = parser.parse_args(argv)
    results = load_results(args.results_dir)
    existing = args.output.read_text() if args.output.exists() else None
    generated = render_generated(results, REPO_ROOT)
    app_lines = render_app_section(args.results_dir, REPO_ROOT)
    peer_lines = render_peers_section(args.results_dir, REPO_ROOT)
    if peer_lines:
        generated = generated.replace(END, "\n".join(peer_lines) + "\n" + END)
    if app_lines:  # the dashboard section goes last inside the generated block
        generated = generated.replace(END, "\n" + "\n".join(app_lines) + "\n" + END)
    write_atomic(args.output, splice(existing, generated))
    print(f"wrote {args.output} from {len(results)} result file(s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
