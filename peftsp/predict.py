"""`peftsp predict`: FASTA in, signal-peptide predictions out, on ONNX Runtime (no torch).

The FASTA file is streamed in chunks of CHUNK proteins; each chunk is sorted by length, cut into
batches padded to their longest protein, run through the ONNX graph and decoded by the numpy
CRF, then written back in input order. Memory is bounded by the chunk, not by the proteome.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path

import numpy as np
from tqdm import tqdm

from peftsp import __version__, grammar, tokens
from peftsp.decoding import Prediction, decode
from peftsp.errors import PeftSPError
from peftsp.fasta import LabelledRecord, Protein, read_proteins
from peftsp.runtime import Bundle, Session, load_bundle
from peftsp.writers import OutputWriter

log = logging.getLogger("peftsp")

CHUNK = 4096  # proteins read, sorted and predicted together
PROBABILITY_DIGITS = 6  # as printed in prediction_results.txt
CS_PROBABILITY_DIGITS = 4


def run_information(bundle: Bundle, organism: str, precision: str) -> dict:
    """What determines the predictions (shards merged together must share it)."""
    graph = bundle.meta["files"][bundle.onnx_path(precision).name]["sha256"]
    return {
        "peftsp_version": __version__,
        "model": bundle.name,
        "model_sha256": graph,
        "precision": precision,
        "organism": organism,
        "window": bundle.window,
    }


def batches(proteins: list[Protein], batch_size: int) -> Iterator[list[int]]:
    """Indices into `proteins` in batches of similar length (longest first)."""
    order = sorted(range(len(proteins)), key=lambda i: -len(proteins[i].sequence))
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def predict_batch(
    proteins: list[Protein], session: Session, organism: str, state_mask: np.ndarray
) -> list[Prediction]:
    """Predictions for one batch of proteins (same order)."""
    bundle = session.bundle
    ids, lengths = tokens.encode([p.sequence for p in proteins], bundle.window)
    kingdom = np.full(len(proteins), bundle.organism_id(organism), dtype=np.int64)
    emissions = session.emissions(ids, kingdom)
    out = decode(emissions, lengths, bundle.crf, state_mask)
    predictions = []
    for row, protein in enumerate(proteins):
        cs = out.cs[row]
        cs_probability = out.cs_probabilities[row]
        predictions.append(
            Prediction(
                id=protein.id,
                header=protein.header,
                sequence=protein.sequence,
                sp_type=grammar.SP_TYPES[int(out.types[row])],
                probabilities=tuple(
                    round(float(v), PROBABILITY_DIGITS) for v in out.type_probabilities[row]
                ),
                cs=cs,
                cs_probability=None
                if cs_probability is None
                else round(cs_probability, CS_PROBABILITY_DIGITS),
                regions=grammar.sp_regions(out.paths[row]) if cs is not None else [],
                notes=list(protein.notes),
            )
        )
    return predictions


def predict_proteins(
    proteins: Iterable[Protein], session: Session, organism: str, batch_size: int
) -> Iterator[Prediction]:
    """Predictions in input order, computed chunk by chunk."""
    state_mask = grammar.organism_state_mask(organism)
    stream = iter(proteins)
    while chunk := list(islice(stream, CHUNK)):
        results: list[Prediction | None] = [None] * len(chunk)
        for indices in batches(chunk, batch_size):
            batch = predict_batch([chunk[i] for i in indices], session, organism, state_mask)
            for i, prediction in zip(indices, batch, strict=True):
                results[i] = prediction
        yield from results  # type: ignore[misc]


def bundle_predictions(
    session: Session, records: list[LabelledRecord], organism_rule: bool, batch_size: int = 64
) -> tuple[list[str], list[int | None]]:
    """Predicted types and cleavage sites of labelled records through the prediction path
    (ONNX + numpy CRF), each with its kingdom as organism (or `other` without the rule)."""
    types: list[str | None] = [None] * len(records)
    sites: list[int | None] = [None] * len(records)
    groups: dict[str, list[int]] = {}
    for i, record in enumerate(records):
        organism = grammar.KINGDOM_TO_ORGANISM[record.kingdom] if organism_rule else "other"
        groups.setdefault(organism, []).append(i)
    for organism, indices in groups.items():
        proteins = [
            Protein(
                records[i].accession, records[i].accession, records[i].sequence, records[i].line
            )
            for i in indices
        ]
        for i, p in zip(
            indices, predict_proteins(proteins, session, organism, batch_size), strict=True
        ):
            types[i], sites[i] = p.sp_type, p.cs
    return types, sites  # type: ignore[return-value]


def _warn_normalised(counts: Counter[str], examples: dict[str, str]) -> None:
    for note, count in sorted(counts.items()):
        log.warning("%d protein(s) normalised: %s (first: %s)", count, note, examples[note])


def predict_command(args) -> None:
    """`peftsp predict`: predict every protein of --fasta into --outdir."""
    if args.batch_size < 1:
        raise PeftSPError(f"--batch-size must be at least 1, not {args.batch_size}")
    bundle = load_bundle(args.model)
    session = Session(
        bundle,
        device=args.device,
        precision=args.precision,
        threads=args.threads,
        batch_size=args.batch_size,
        trt_cache=args.trt_cache,
    )
    outdir = Path(args.outdir)
    created = not outdir.exists()
    notes: Counter[str] = Counter()
    examples: dict[str, str] = {}
    try:
        with OutputWriter(outdir, run_information(bundle, args.organism, args.precision)) as out:
            proteins = read_proteins(args.fasta)
            bar = tqdm(disable=args.quiet, desc="peftsp predict", unit=" proteins")
            for prediction in predict_proteins(proteins, session, args.organism, args.batch_size):
                out.add(prediction)
                for note in prediction.notes:
                    notes[note] += 1
                    examples.setdefault(note, prediction.id)
                bar.update()
            bar.close()
    except BaseException:
        if created and outdir.is_dir() and not any(outdir.iterdir()):
            outdir.rmdir()
        raise
    _warn_normalised(notes, examples)
    log.info("%d proteins written to %s", out.summary.total, outdir)
