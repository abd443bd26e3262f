#!/usr/bin/env python
"""Speed of model bundles' ONNX graphs alone (no FASTA parsing, decoding or writing), measured
in turns within one run so that a busy or throttled machine slows every bundle alike:

    python bench/graph_speed.py --fasta ../shared/data/proteomes/ecoli_proteins.faa \\
        --models old_bundle models/default --precision int8 --batch-sizes 16,64

Each bundle gets a session with peftsp predict's options (runtime.Session); the first
--limit proteins are cut into predict's batches and encoded once (each batch padded to its
longest protein, as predict does); each round runs every bundle over all batches in turn,
after one warm-up round. Prints proteins/s per bundle and batch size (median of the rounds)
and each bundle's speed as a ratio to the first one's.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from peftsp import tokens
from peftsp.bundle import load_bundle
from peftsp.errors import PeftSPError
from peftsp.fasta import read_proteins
from peftsp.predict import batches
from peftsp.runtime import Session


def proteins_per_second(session: Session, chunks: list[np.ndarray]) -> float:
    start = time.perf_counter()
    for chunk in chunks:
        session.emissions(chunk, np.zeros(len(chunk), dtype=np.int64))
    return sum(len(c) for c in chunks) / (time.perf_counter() - start)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--fasta", required=True)
    ap.add_argument("--models", nargs="+", required=True, help="bundle directories")
    ap.add_argument("--precision", default="int8")
    ap.add_argument("--batch-sizes", default="16,64")
    ap.add_argument("--limit", type=int, default=2000, help="first N proteins")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    try:
        bundles = [load_bundle(m) for m in args.models]
        proteins = list(read_proteins(Path(args.fasta)))[: args.limit]
    except PeftSPError as err:
        raise SystemExit(f"graph_speed.py: {err}") from None
    windows = {b.window for b in bundles}
    if len(windows) != 1:
        raise SystemExit(f"bundles differ in window ({sorted(windows)}): not comparable")
    window = windows.pop()
    print(f"{len(proteins)} proteins of {args.fasta}, {args.precision}, {args.threads} threads")
    print("| batch | bundle | proteins/s | ratio to the first |")
    print("| ---: | --- | ---: | ---: |")
    for size in (int(s) for s in args.batch_sizes.split(",")):
        sessions = [Session(b, "cpu", args.precision, args.threads, size) for b in bundles]
        chunks = [
            tokens.encode([p.sequence for p in batch], window)[0]
            for batch in batches(proteins, size)
        ]
        rates: list[list[float]] = [[] for _ in sessions]
        for round_ in range(args.rounds + 1):
            for n, session in enumerate(sessions):
                rate = proteins_per_second(session, chunks)
                if round_:  # round 0 warms up
                    rates[n].append(rate)
        medians = [statistics.median(r) for r in rates]
        for model, rate in zip(args.models, medians, strict=True):
            print(f"| {size} | {model} | {rate:.0f} | {rate / medians[0]:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
