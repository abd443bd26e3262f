"""`peftsp predict`: FASTA in, signal-peptide predictions out, on ONNX Runtime (no torch).

The FASTA file is streamed in chunks of CHUNK proteins; each chunk is sorted by length, cut into
batches padded to their longest protein, run through the ONNX graph and decoded by the numpy
CRF, then written back in input order. Memory is bounded by the chunk, not by the proteome.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path

import numpy as np
from tqdm import tqdm

from peftsp import __version__, grammar, tokens
from peftsp.decoding import Prediction, decode
from peftsp.errors import InputError, PeftSPError
from peftsp.fasta import NUCLEOTIDE_NOTE, LabelledRecord, Protein, read_proteins
from peftsp.plots import PlotWriter
from peftsp.report import Summary
from peftsp.runtime import Bundle, Session, load_bundle
from peftsp.writers import DEMO_NOTICE, OutputWriter

log = logging.getLogger("peftsp")

CHUNK = 4096  # proteins read, sorted and predicted together
# --sample: the runner's sample ids follow the same rule.
SAMPLE_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]*"
# Extensions dropped from the FASTA file name to make the default sample name.
SAMPLE_EXTENSIONS = frozenset(
    ("gz", "bgz", "bz2", "xz", "zst", "fa", "faa", "fasta", "fas", "fsa", "pep", "aa", "prot")
)


def run_information(bundle: Bundle, organism: str, precision: str) -> dict:
    """What determines the predictions (shards merged together must share it)."""
    graph = bundle.meta["files"][bundle.onnx_path(precision).name]["sha256"]
    return {
        "peftsp_version": __version__,
        "model": bundle.name,
        "model_sha256": graph,
        "demo_model": is_demo_bundle(bundle),
        "precision": precision,
        "organism": organism,
        "window": bundle.window,
    }


def is_demo_bundle(bundle: Bundle) -> bool:
    """A model trained from random weights (backbone `random:...`), like the embedded one."""
    return str(bundle.meta.get("backbone", "")).startswith("random:")


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
                probabilities=tuple(float(v) for v in out.type_probabilities[row]),
                cs=cs,
                cs_probability=cs_probability,
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


def _warn_notes(counts: Counter[str], examples: dict[str, str]) -> None:
    for note, count in sorted(counts.items()):
        if note == NUCLEOTIDE_NOTE:
            log.warning(
                "%d record(s) look like nucleotide sequences, predicted as proteins (first: %s); "
                "check the input is a protein FASTA",
                count,
                examples[note],
            )
        else:
            log.warning("%d protein(s) normalised: %s (first: %s)", count, note, examples[note])


def predict_into(
    fasta: str,
    outdir: Path,
    session: Session,
    run_info: dict,
    batch_size: int,
    quiet: bool,
    **writer_options,
) -> Summary:
    """Predict every protein of `fasta` into `outdir` (OutputWriter with `writer_options`).

    On any failure no output file is left, and `outdir` is removed if this call created it.
    """
    created = not outdir.exists()
    notes: Counter[str] = Counter()
    examples: dict[str, str] = {}
    plots = writer_options.get("plots")
    extra = {"keep_marginals": True} if plots is not None else {}
    try:
        with OutputWriter(outdir, run_info, **writer_options) as out:
            proteins = read_proteins(fasta)
            bar = tqdm(disable=quiet, desc="peftsp predict", unit=" proteins")
            organism = run_info["organism"]
            for prediction in predict_proteins(proteins, session, organism, batch_size, **extra):
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
    _warn_notes(notes, examples)
    return out.summary


_DEMO_WARNED: set[str] = set()  # bundles already named in this process's log


def warn_demo_model(bundle: Bundle, run_info: dict) -> None:
    """Say in the log, once per process (the local runner predicts shard after shard), that the
    model is a demo model."""
    if run_info["demo_model"] and str(bundle.path) not in _DEMO_WARNED:
        _DEMO_WARNED.add(str(bundle.path))
        log.warning("model %s is %s", bundle.name, DEMO_NOTICE)


def check_outdir(outdir: Path, overwrite: bool, option: str = "--outdir") -> None:
    """Refuse an output directory that holds anything, unless `overwrite`."""
    if outdir.exists() and not outdir.is_dir():
        raise InputError("exists and is not a directory", str(outdir))
    if not overwrite and outdir.is_dir() and any(outdir.iterdir()):
        raise InputError(
            f"{option} is not empty; choose a new directory or pass --overwrite to replace "
            "the files PEFT-SP writes there",
            str(outdir),
        )


def default_sample(fasta: str) -> str:
    """The FASTA file's name without its FASTA and compression extensions, as a sample name."""
    name = Path(fasta).name
    while True:
        stem, dot, ext = name.rpartition(".")
        if not dot or not stem or ext.lower() not in SAMPLE_EXTENSIONS:
            break
        name = stem
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip("._-")
    return cleaned or "sample"


def check_sample(sample: str) -> str:
    if not re.fullmatch(SAMPLE_PATTERN, sample) or len(sample) > 200:
        raise PeftSPError(
            f"--sample {sample!r}: use letters, digits, '.', '_' and '-', starting with a letter "
            "or digit (at most 200 characters)"
        )
    return sample


def predict_command(args) -> None:
    """`peftsp predict`: predict every protein of --fasta into --outdir."""
    if args.batch_size < 1:
        raise PeftSPError(f"--batch-size must be at least 1, not {args.batch_size}")
    sample = check_sample(args.sample) if args.sample is not None else default_sample(args.fasta)
    plots = None if args.plot == "none" else PlotWriter((args.plot,))
    outdir = Path(args.outdir)
    check_outdir(outdir, args.overwrite)
    bundle = load_bundle(args.model)
    run_info = run_information(bundle, args.organism, args.precision)
    if args.sample is not None:  # shards of one sample merge only with each other
        run_info["sample"] = sample
    warn_demo_model(bundle, run_info)
    session = Session(
        bundle,
        device=args.device,
        precision=args.precision,
        threads=args.threads,
        batch_size=args.batch_size,
        trt_cache=args.trt_cache,
    )
    summary = predict_into(
        args.fasta,
        outdir,
        session,
        run_info,
        args.batch_size,
        args.quiet,
        sample=sample,
        source=str(args.fasta),
        plots=plots,
    )
    log.info("%d proteins of sample %s written to %s", summary.total, sample, outdir)
