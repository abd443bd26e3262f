#!/usr/bin/env python
"""Prediction throughput: ONNX Runtime vs PyTorch eager on the same model, in one run.

    python bench/throughput.py --fasta ../shared/data/proteomes/ecoli_proteins.faa \
        --backbone random:esm2_t6_8M_UR50D --threads 2 [--limit 2000] \
        [--memory ../shared/data/proteomes]

Builds the model (random weights are fine for speed) or loads --checkpoint, exports it to a
temporary bundle, then on the same proteins prints sequences/s end to end (tokenise, model,
CRF decode) for ONNX Runtime (fp32, and int8 with --int8) and for PyTorch eager, the model's
achieved GFLOP/s against a float32 matmul peak measured in the same run, and, with --memory DIR,
the peak RSS of `peftsp predict` on one proteome and on all of DIR's proteomes concatenated.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path

import numpy as np
import torch

from peftsp import grammar, tokens
from peftsp.decoding import decode
from peftsp.fasta import read_proteins
from peftsp.predict import batches, predict_proteins
from peftsp.runtime import Session, load_bundle
from peftsp.train import backbone
from peftsp.train.export import export_bundle
from peftsp.train.model import ModelConfig, SignalPeptideModel, load_checkpoint


def model_flops(shape: dict, lengths: np.ndarray) -> float:
    """Forward FLOPs of ESM-2 layers + emission layer for batches padded to `lengths`."""
    e, layers = shape["embed_dim"], shape["layers"]
    t = lengths.astype(np.float64) + 2
    per_layer = 2 * t * (4 * e * e + 8 * e * e) + 4 * t * t * e
    return float((layers * per_layer + 2 * t * e * grammar.NUM_STATES).sum())


def matmul_peak(threads: int, n: int = 2048, repeats: int = 5) -> float:
    """Measured float32 matmul GFLOP/s (best of `repeats`)."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def eager_predict(model: SignalPeptideModel, proteins, organism: str, batch_size: int) -> float:
    """PyTorch eager over the same batches as predict, with the same decode; seconds."""
    crf = model.crf.numpy_parameters()
    mask = grammar.organism_state_mask(organism)
    kingdom_id = 0
    window = model.config.window
    start = time.perf_counter()
    with torch.no_grad():
        for indices in batches(proteins, batch_size):
            ids, lengths = tokens.encode([proteins[i].sequence for i in indices], window)
            kingdom = torch.full((len(indices),), kingdom_id)
            emissions = model(torch.as_tensor(ids), kingdom).numpy()
            decode(emissions, lengths, crf, mask)
    return time.perf_counter() - start


def padded_lengths(proteins, batch_size: int, window: int) -> np.ndarray:
    """Per-row padded residue counts of predict's batches (what the model computes)."""
    rows = []
    for indices in batches(proteins, batch_size):
        width = max(min(len(proteins[i].sequence), window) for i in indices)
        rows += [width] * len(indices)
    return np.array(rows)


def peak_rss_of_predict(fasta: Path, bundle: Path, threads: int) -> float:
    """Peak RSS (MiB) of a `peftsp predict` process on `fasta`."""
    code = (
        "import resource, sys; from peftsp.cli import main; "
        f"rc = main(['predict', '--fasta', {str(fasta)!r}, '--outdir', sys.argv[1], "
        f"'--model', {str(bundle)!r}, '--threads', '{threads}', '--quiet']); "
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)"
    )
    with tempfile.TemporaryDirectory() as out:
        done = subprocess.run(
            [sys.executable, "-c", code, out], check=True, capture_output=True, text=True
        )
    return int(done.stdout.split()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fasta", required=True)
    parser.add_argument("--backbone", default="random:esm2_t6_8M_UR50D")
    parser.add_argument("--checkpoint", default=None, help="use this trained model instead")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--limit", type=int, default=None, help="first N proteins only")
    parser.add_argument("--int8", action="store_true", help="also time the int8 graph")
    parser.add_argument("--memory", default=None, help="directory of proteomes for the RSS check")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    if args.checkpoint:
        model, _ = load_checkpoint(args.checkpoint)
    else:
        esm = backbone.load_backbone(args.backbone)
        model = SignalPeptideModel(esm, ModelConfig(args.backbone, backbone.backbone_config(esm)))
    model.eval()
    proteins = list(islice(read_proteins(args.fasta), args.limit))
    n = len(proteins)
    with tempfile.TemporaryDirectory() as tmp:
        bundle_dir = Path(tmp) / "bundle"
        export_bundle(model, bundle_dir, int8=args.int8)
        bundle = load_bundle(bundle_dir)
        flops = model_flops(
            model.config.backbone_shape,
            padded_lengths(proteins, args.batch_size, model.config.window),
        )
        results = {}
        precisions = ["fp32", "int8"] if args.int8 else ["fp32"]
        for precision in precisions:
            session = Session(bundle, "cpu", precision, args.threads, args.batch_size)
            start = time.perf_counter()
            for _ in predict_proteins(proteins, session, "other", args.batch_size):
                pass
            results[f"onnxruntime {precision}"] = time.perf_counter() - start
        results["pytorch eager"] = eager_predict(model, proteins, "other", args.batch_size)
        peak = matmul_peak(args.threads)
        print(
            f"{n} proteins of {args.fasta}; model {model.config.backbone} "
            f"({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters); "
            f"{args.threads} threads; batch {args.batch_size}"
        )
        print(f"float32 matmul peak (torch.mm 2048^2, same run): {peak:.1f} GFLOP/s")
        eager = results["pytorch eager"]
        for name, seconds in results.items():
            achieved = flops / seconds / 1e9
            print(
                f"{name:>18}: {n / seconds:8.1f} sequences/s, {achieved:6.1f} GFLOP/s "
                f"({achieved / peak:.0%} of peak), {eager / seconds:.2f}x eager"
            )
        if args.memory:
            files = sorted(Path(args.memory).glob("*.faa"))
            concat = Path(tmp) / "all.faa"
            with open(concat, "wb") as out:
                for f in files:
                    out.write(f.read_bytes())
            one = peak_rss_of_predict(Path(args.fasta), bundle_dir, args.threads)
            every = peak_rss_of_predict(concat, bundle_dir, args.threads)
            print(
                f"peak RSS of peftsp predict: one proteome {one:.0f} MiB; all {len(files)} "
                f"concatenated {every:.0f} MiB; ratio {every / one:.2f}"
            )
        print(json.dumps({k: round(n / v, 2) for k, v in results.items()}))


if __name__ == "__main__":
    main()
