#!/usr/bin/env python
"""End-to-end prediction throughput and peak memory of a model bundle, fp32 vs int8, per batch
size, against the previous prediction loop, in one run.

    python bench/throughput.py --fasta ../shared/data/proteomes/ecoli_proteins.faa --threads 2 \
        [--model DIR | --backbone random:esm2_t6_8M_UR50D] [--precisions fp32,int8] \
        [--batch-sizes 16,32,64,128] [--repeats 3] [--limit N] [--memory ../shared/data/proteomes]

The model is the shipped default bundle unless --model names another, or --backbone builds one
of that shape with random weights and exports it (needs torch); its shape is read from the
bundle's model.json and printed with every figure. Each measurement runs in a fresh child
process (so its peak RSS is its own): `predict_proteins` over the streamed FASTA, as `peftsp
predict` runs it (model thread ahead of the decode). Configurations are interleaved over
--repeats rounds and reported as median [min-max], with the child's CPU time per protein (work
done, which a loaded machine disturbs less than wall time), because this kind of machine's
timings swing; ratios are only meaningful within one run (--repeats 0 skips these rounds).
Also, per precision at the default batch size, in one child, alternating over 3 rounds: the
model alone (its GFLOP/s against a float32 matmul peak measured beside it), the decode alone,
the serial loop (model then decode in one thread) and the pipeline, which shows what the
overlap buys; and "previous": the loop before this change (4,096-protein chunks sorted by
length, batch 64, model then log-space decode in one thread, tests/reference_decoder.py).
With --memory DIR, the peak RSS of `peftsp predict` on --fasta and on all of DIR's proteomes
concatenated.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path

import numpy as np

from peftsp import grammar, tokens
from peftsp.bundle import DEFAULT_MODEL, load_bundle
from peftsp.decoding import decode
from peftsp.fasta import read_proteins
from peftsp.predict import (
    DEFAULT_BATCH_SIZE,
    DecodePlan,
    batches,
    predict_batch,
    predict_proteins,
)
from peftsp.runtime import Session

TESTS = Path(__file__).resolve().parent.parent / "tests"


def model_flops(shape: dict, token_counts: np.ndarray) -> float:
    """Forward FLOPs of the ESM-2 layers + emission layer for rows of `token_counts` tokens."""
    e, layers = shape["embed_dim"], shape["layers"]
    t = token_counts.astype(np.float64)
    per_layer = 2 * t * 12 * e * e + 4 * t * t * e
    return float((layers * per_layer + 2 * t * e * grammar.NUM_STATES).sum())


def padded_tokens(proteins, batch_size: int, window: int) -> np.ndarray:
    """Tokens per row (padding included) of predict's batches."""
    rows = []
    for batch in batches(proteins, batch_size):
        width = max(min(len(p.sequence), window) for p in batch) + 2
        rows += [width] * len(batch)
    return np.array(rows)


def describe(bundle) -> str:
    shape = bundle.meta.get("backbone_shape", {})
    e, layers = shape.get("embed_dim", 0), shape.get("layers", 0)
    return (
        f"{bundle.name} ({bundle.meta.get('backbone')}: {layers} layers, embed {e}, "
        f"{shape.get('heads')} heads, ~{12 * layers * e * e / 1e6:.1f}M layer weights; "
        f"window {bundle.window})"
    )


# ---------------------------------------------------------------------------------------------
# Child process jobs: each prints one JSON line.


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def job_predict(job: dict) -> dict:
    bundle = load_bundle(job["model"])
    session = Session(bundle, "cpu", job["precision"], job["threads"], job["batch_size"])
    proteins = islice(read_proteins(job["fasta"]), job["limit"])
    start, cpu = time.perf_counter(), _cpu_seconds()
    n = sum(1 for _ in predict_proteins(proteins, session, job["organism"], job["batch_size"]))
    seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
    return {"n": n, "seconds": seconds, "cpu": cpu, "rss": _peak_rss_mib()}


def job_previous(job: dict) -> dict:
    """The prediction loop before the pipeline, with the decoder before the scaled one."""
    sys.path.insert(0, str(TESTS))
    from reference_decoder import decode_reference

    bundle = load_bundle(job["model"])
    session = Session(bundle, "cpu", job["precision"], job["threads"], 64)
    mask = grammar.organism_state_mask(job["organism"])
    kingdom = bundle.organism_id(job["organism"])
    stream = islice(read_proteins(job["fasta"]), job["limit"])
    start, cpu = time.perf_counter(), _cpu_seconds()
    n = 0
    while chunk := list(islice(stream, 4096)):
        order = sorted(range(len(chunk)), key=lambda i: -len(chunk[i].sequence))
        for at in range(0, len(order), 64):
            rows = [chunk[i] for i in order[at : at + 64]]
            ids, lengths = tokens.encode([p.sequence for p in rows], bundle.window)
            emissions = session.emissions(ids, np.full(len(rows), kingdom))
            out = decode_reference(emissions, lengths, bundle.crf, mask)
            n += len(rows)
            [grammar.sp_regions(p) for p in out.paths]
    seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
    return {"n": n, "seconds": seconds, "cpu": cpu, "rss": _peak_rss_mib()}


def job_split(job: dict) -> dict:
    """In this process, on the same proteins, alternating over 3 rounds (medians): the model
    alone (with a float32 matmul peak measured just before), the decode alone, the serial loop
    (model then decode, batch after batch, in one thread) and the pipeline."""
    bundle = load_bundle(job["model"])
    session = Session(bundle, "cpu", job["precision"], job["threads"], job["batch_size"])
    proteins = list(islice(read_proteins(job["fasta"]), job["limit"]))
    mask = grammar.organism_state_mask(job["organism"])
    kingdom = bundle.organism_id(job["organism"])
    times: dict[str, list[float]] = {}

    def timed(name, fn):
        start = time.perf_counter()
        out = fn()
        times.setdefault(name, []).append(time.perf_counter() - start)
        return out

    def model():
        emitted = []
        for batch in batches(proteins, job["batch_size"]):
            ids, lengths = tokens.encode([p.sequence for p in batch], bundle.window)
            emitted.append((session.emissions(ids, np.full(len(batch), kingdom)), lengths))
        return emitted

    plan = DecodePlan.of(bundle, job["organism"])

    def serial():
        for batch in batches(proteins, job["batch_size"]):
            predict_batch(batch, session, job["organism"], plan)

    def pipeline():
        for _ in predict_proteins(proteins, session, job["organism"], job["batch_size"]):
            pass

    peak = 0.0
    for _ in range(3):
        peak = max(peak, job_matmul(job)["gflops"])
        emitted = timed("model", model)
        timed("decode", lambda e=emitted: [decode(x, n, bundle.crf, mask) for x, n in e])
        timed("serial", serial)
        timed("pipeline", pipeline)
    out = {name: statistics.median(values) for name, values in times.items()}
    return out | {"n": len(proteins), "peak": peak, "rounds": times}


def job_matmul(job: dict) -> dict:
    """Best-of-5 float32 matmul GFLOP/s (BLAS threads set by the parent's environment)."""
    n = 2048
    rng = np.random.default_rng(0)
    a, b = rng.random((n, n), dtype=np.float32), rng.random((n, n), dtype=np.float32)
    a @ b
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return {"gflops": 2 * n**3 / best / 1e9}


def job_rss(job: dict) -> dict:
    from peftsp.cli import main as cli

    with tempfile.TemporaryDirectory() as out:
        argv = ["predict", "--fasta", job["fasta"], "--outdir", f"{out}/o", "--quiet"]
        argv += ["--model", job["model"], "--threads", str(job["threads"]), "--device", "cpu"]
        argv += ["--batch-size", str(DEFAULT_BATCH_SIZE)]
        assert cli(argv) == 0
    return {"rss": _peak_rss_mib()}


JOBS = {
    "predict": job_predict,
    "previous": job_previous,
    "split": job_split,
    "matmul": job_matmul,
    "rss": job_rss,
}


def run_child(job: dict) -> dict:
    env = dict(os.environ)
    env["OPENBLAS_NUM_THREADS"] = env["OMP_NUM_THREADS"] = str(job["threads"])
    done = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(job)],
        capture_output=True,
        text=True,
        env=env,
    )
    if done.returncode:
        sys.exit(f"child {job['kind']} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------


def export_random(spec: str, outdir: Path) -> Path:
    """A bundle (fp32 + int8) of a random-weight model of the shape `spec` (needs torch)."""
    from peftsp.train import backbone
    from peftsp.train.export import export_bundle
    from peftsp.train.model import ModelConfig, SignalPeptideModel

    esm = backbone.load_backbone(spec)
    model = SignalPeptideModel(esm, ModelConfig(spec, backbone.backbone_config(esm)))
    export_bundle(model, outdir, name=f"random-{spec.split(':')[-1]}", int8=True)
    return outdir


def cpu_name() -> str:
    info = Path("/proc/cpuinfo")
    if info.exists():
        for line in info.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:,.0f}"
    return f"{statistics.median(values):,.0f} [{min(values):,.0f}-{max(values):,.0f}]"


def report_rounds(
    results: dict, precisions: list[str], sizes: list[int], no_previous: bool
) -> dict[str, float]:
    """Print the end-to-end table and ratios of the interleaved rounds; median proteins/s."""
    print(f"\nend to end ({len(next(iter(results.values())))} rounds, median [min-max]):")
    print(
        f"{'loop':<10} {'precision':<9} {'batch':>5} {'proteins/s':>24} "
        f"{'CPU ms/protein':>15} {'peak RSS MiB':>13}"
    )
    summary = {}
    for (kind, precision, size), runs in results.items():
        speeds = [run["n"] / run["seconds"] for run in runs]
        cpu = statistics.median(1000 * run["cpu"] / run["n"] for run in runs)
        rss = max(run["rss"] for run in runs)
        label = "pipeline" if kind == "predict" else "previous"
        print(
            f"{label:<10} {precision:<9} {size:>5} {spread(speeds):>24} {cpu:>15.2f} {rss:>13.0f}"
        )
        summary[f"{label} {precision} b{size}"] = round(statistics.median(speeds), 1)
    for precision in precisions:
        if not no_previous and 64 in sizes:
            ratios = [
                old["seconds"] / new["seconds"]
                for old, new in zip(
                    results[("previous", precision, 64)],
                    results[("predict", precision, 64)],
                    strict=True,
                )
            ]
            print(
                f"{precision}: pipeline vs previous at batch 64, per round: "
                f"{', '.join(f'{x:.2f}x' for x in ratios)}"
            )
    if "fp32" in precisions and "int8" in precisions:
        for size in sizes:
            ratios = [
                a["seconds"] / b["seconds"]
                for a, b in zip(
                    results[("predict", "fp32", size)],
                    results[("predict", "int8", size)],
                    strict=True,
                )
            ]
            print(f"int8 vs fp32 at batch {size}: {statistics.median(ratios):.2f}x")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fasta")
    parser.add_argument("--model", default=None, help="bundle directory (default: shipped)")
    parser.add_argument("--backbone", default=None, help="export a random model of this shape")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precisions", default="fp32,int8")
    parser.add_argument("--batch-sizes", default="16,32,64,128")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit", type=int, default=None, help="first N proteins only")
    parser.add_argument("--organism", default="other")
    parser.add_argument("--no-previous", action="store_true", help="skip the previous loop")
    parser.add_argument("--memory", default=None, help="directory of proteomes for the RSS check")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        job = json.loads(args.child)
        print(json.dumps(JOBS[job["kind"]](job)))
        return
    if not args.fasta:
        parser.error("--fasta is required")

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or str(DEFAULT_MODEL)
        if args.backbone:
            model = str(export_random(args.backbone, Path(tmp) / "bundle"))
        bundle = load_bundle(model)
        precisions = [p for p in args.precisions.split(",") if p]
        for precision in precisions:
            bundle.onnx_path(precision)  # refuses a precision the bundle lacks
        sizes = [int(b) for b in args.batch_sizes.split(",")]
        base = {"model": model, "fasta": args.fasta, "threads": args.threads}
        base |= {"limit": args.limit, "organism": args.organism}
        proteins = list(islice(read_proteins(args.fasta), args.limit))
        n = len(proteins)
        cpu = cpu_name()
        print(f"model {describe(bundle)}")
        print(
            f"input {n} proteins of {args.fasta}; {args.threads} threads; {os.cpu_count()} CPUs "
            f"({cpu}); load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}"
        )
        configs = [("predict", p, b) for p in precisions for b in sizes]
        if not args.no_previous:
            configs += [("previous", p, 64) for p in precisions]
        results: dict[tuple, list[dict]] = {c: [] for c in configs}
        for r in range(args.repeats):
            for kind, precision, size in configs if r % 2 == 0 else configs[::-1]:
                job = base | {"kind": kind, "precision": precision, "batch_size": size}
                results[(kind, precision, size)].append(run_child(job))
        summary = {}
        if args.repeats:
            summary = report_rounds(results, precisions, sizes, args.no_previous)
        tokens_per_row = padded_tokens(proteins, DEFAULT_BATCH_SIZE, bundle.window)
        flops = model_flops(bundle.meta["backbone_shape"], tokens_per_row)
        print(
            f"\nwhere the time goes (batch {DEFAULT_BATCH_SIZE}, one child per precision, "
            "3 alternating rounds, medians):"
        )
        for precision in precisions:
            job = base | {"kind": "split", "precision": precision}
            split = run_child(job | {"batch_size": DEFAULT_BATCH_SIZE})
            achieved = flops / split["model"] / 1e9
            versus = (
                f"{achieved / split['peak']:.0%} of a float32 matmul peak of "
                f"{split['peak']:.0f} GFLOP/s measured beside it"
                if precision == "fp32"
                else "int8 arithmetic, not comparable with a float32 peak"
            )
            pipeline = [
                s / p
                for s, p in zip(split["rounds"]["serial"], split["rounds"]["pipeline"], strict=True)
            ]
            print(
                f"{precision}: model alone {n / split['model']:,.0f} proteins/s "
                f"({achieved:.0f} GFLOP/s, {versus}); decode alone {n / split['decode']:,.0f} "
                f"proteins/s; serial loop (model then decode) {n / split['serial']:,.0f}; "
                f"pipeline {n / split['pipeline']:,.0f} proteins/s, per round "
                f"{', '.join(f'{x:.2f}x' for x in pipeline)} the serial loop"
            )
        if args.memory:
            files = sorted(Path(args.memory).glob("*.fa*"))
            concat = Path(tmp) / "all.faa"
            with open(concat, "wb") as out:
                for f in files:
                    out.write(f.read_bytes())
            one = run_child(base | {"kind": "rss"})["rss"]
            every = run_child(base | {"kind": "rss", "fasta": str(concat)})["rss"]
            print(
                f"\npeak RSS of peftsp predict (fp32, default batch {DEFAULT_BATCH_SIZE}): "
                f"{args.fasta} {one:.0f} MiB; all {len(files)} proteomes of {args.memory} "
                f"concatenated {every:.0f} MiB"
            )
        print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
        shape = bundle.meta.get("backbone_shape")
        print(json.dumps({"model": bundle.name, "shape": shape, "proteins/s": summary}))


if __name__ == "__main__":
    main()
