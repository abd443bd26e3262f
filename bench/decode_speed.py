#!/usr/bin/env python
"""CRF decode speed: the previous log-space decoder vs peftsp.decoding, same emissions, same run.

    python bench/decode_speed.py --fasta ../shared/data/proteomes/ecoli_proteins.faa \
        [--limit 2000] [--batch-size 64] [--rounds 3] [--workers 1,2]

Emissions: the embedded default model (fp32, ONNX Runtime) on the first --limit proteins of
--fasta, and synthetic ones (N(0, 3), random lengths 1-70, per-row organism masks). Each round
decodes every batch with the reference (tests/reference_decoder.py, the decoder before the
scaled forward-backward) and with the new decoder, alternating, in this process; the figures
are medians over rounds and the ratio is taken within each round. Every output is compared:
types, Viterbi paths (where a grammatical path exists), cleavage sites, type and CS
probabilities to 1e-9. Then the decode-only throughput of the prediction pipeline itself
(peftsp.predict.predict_batches on a replayed, zero-cost model, like an infinitely fast GPU):
decode in the calling thread (0 workers) and in 1 and 2 worker processes, outputs checked equal.
Prints the machine's CPU count and load, since the figures depend on them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from itertools import islice
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from reference_decoder import decode_reference

from peftsp import grammar, tokens
from peftsp.bundle import DEFAULT_MODEL, load_bundle
from peftsp.decoding import decode
from peftsp.fasta import read_proteins
from peftsp.predict import batches, predict_batches
from peftsp.runtime import Session

Batch = tuple[np.ndarray, np.ndarray, np.ndarray]  # emissions, lengths, state mask


def real_batches(session: Session, proteins, batch_size: int, organism: str) -> list[Batch]:
    mask = grammar.organism_state_mask(organism)
    kingdom = session.bundle.organism_id(organism)
    out = []
    for batch in batches(proteins, batch_size):
        ids, lengths = tokens.encode([p.sequence for p in batch], session.bundle.window)
        emissions = session.emissions(ids, np.full(len(batch), kingdom))
        out.append((emissions, lengths, mask))
    return out


def synthetic_batches(n: int, batch_size: int, seed: int = 0) -> list[Batch]:
    rng = np.random.default_rng(seed)
    out = []
    for start in range(0, n, batch_size):
        size = min(batch_size, n - start)
        lengths = rng.integers(1, 71, size)
        emissions = rng.normal(0, 3, (size, int(lengths.max()), grammar.NUM_STATES))
        organisms = rng.choice(grammar.ORGANISMS, size)
        mask = np.stack([grammar.organism_state_mask(o) for o in organisms])
        out.append((emissions.astype(np.float32), lengths, mask))
    return out


def compare(new, ref) -> list[str]:
    """Differences between one batch's outputs (empty: equal)."""
    problems = []
    if not np.array_equal(new.types, ref.types):
        problems.append("types")
    if np.abs(new.type_probabilities - ref.type_probabilities).max() > 1e-9:
        problems.append("type probabilities")
    if new.cs != ref.cs:
        problems.append("cleavage sites")
    for a, b in zip(new.cs_probabilities, ref.cs_probabilities, strict=True):
        if (a is None) != (b is None) or (a is not None and abs(a - b) > 1e-9):
            problems.append("CS probabilities")
            break
    for row, score in enumerate(ref.scores):
        if score > grammar.DISALLOWED_SCORE / 2 and not np.array_equal(
            new.paths[row], ref.paths[row]
        ):
            problems.append(f"path of row {row}")
            break
    return problems


def race(name: str, data: list[Batch], crf: dict, rounds: int) -> float:
    """Time both decoders on `data`, alternating; print and return the median ratio."""
    n = sum(len(b[1]) for b in data)
    times = {"reference": [], "new": []}
    problems = []
    for r in range(rounds):
        for which in ("reference", "new") if r % 2 == 0 else ("new", "reference"):
            fn = decode_reference if which == "reference" else decode
            start = time.perf_counter()
            outs = [fn(em, lengths, crf, mask) for em, lengths, mask in data]
            times[which].append(time.perf_counter() - start)
            if which == "reference":
                refs = outs
            else:
                news = outs
        if r == 0:
            for i, (a, b) in enumerate(zip(news, refs, strict=True)):
                problems += [f"batch {i}: {p}" for p in compare(a, b)]
    ratios = [o / w for o, w in zip(times["reference"], times["new"], strict=True)]
    ref_speed = n / statistics.median(times["reference"])
    new_speed = n / statistics.median(times["new"])
    print(
        f"{name}: {n} proteins in {len(data)} batches; reference {ref_speed:,.0f} proteins/s, "
        f"new {new_speed:,.0f} proteins/s; ratio {statistics.median(ratios):.1f}x "
        f"(per round {', '.join(f'{x:.1f}' for x in ratios)})"
    )
    print(f"  equal to the reference: {'yes' if not problems else 'NO: ' + '; '.join(problems)}")
    return statistics.median(ratios)


class ReplaySession:
    """A Session stand-in whose 'model' returns recorded emissions, batch after batch."""

    def __init__(self, bundle, data: list[Batch]) -> None:
        self.bundle = bundle
        self._next = iter(data)

    def emissions(self, tokens_: np.ndarray, kingdom: np.ndarray) -> np.ndarray:
        return next(self._next)[0]


def pipeline_decode(bundle, proteins, data: list[Batch], batch_size: int, workers: list[int]):
    """Decode-only throughput of predict_batches with 0 and `workers` decode processes."""
    reference = None
    for count in [0, *workers]:
        session = ReplaySession(bundle, data)
        start = time.perf_counter()
        got = []
        for batch in predict_batches(
            proteins, session, "gram_negative", batch_size, decode_workers=count
        ):
            if not got:
                first, first_size = time.perf_counter(), len(batch)
            got += batch
        end = time.perf_counter()
        fields = [(p.sp_type, p.probabilities, p.cs, p.cs_probability, p.cs_marginal) for p in got]
        reference = reference or fields
        where = "in the calling thread" if count == 0 else f"in {count} worker process(es)"
        print(
            f"  pipeline decode {where}: {(len(got) - first_size) / (end - first):,.0f} "
            f"proteins/s after the first batch ({len(got) / (end - start):,.0f} with start-up, "
            f"first batch after {first - start:.2f} s); outputs "
            f"{'equal' if fields == reference else 'DIFFER'}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fasta", required=True)
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--limit", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", default="1,2", help="decode process counts to time")
    args = parser.parse_args()

    print(
        f"{os.cpu_count()} CPUs, load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}; "
        f"numpy {np.__version__}; decode batch {args.batch_size}"
    )
    bundle = load_bundle(args.model)
    session = Session(bundle, "cpu", "fp32", threads=2)
    proteins = list(islice(read_proteins(args.fasta), args.limit))
    start = time.perf_counter()
    real = real_batches(session, proteins, args.batch_size, "gram_negative")
    print(
        f"emissions of {bundle.name} (fp32) for {len(proteins)} proteins of {args.fasta}: "
        f"{time.perf_counter() - start:.1f} s"
    )
    ratio = race("real emissions", real, bundle.crf, args.rounds)
    race("synthetic emissions", synthetic_batches(args.limit, args.batch_size), bundle.crf, 1)
    print(f"decoder speed-up on real emissions: {ratio:.1f}x (required >= 5x)")
    workers = [int(w) for w in args.workers.split(",") if w]
    pipeline_decode(bundle, proteins, real, args.batch_size, workers)
    print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
