"""`peftsp predict`: FASTA in, signal-peptide predictions out, on ONNX Runtime (no torch).

The FASTA file is streamed in consecutive batches of proteins, each padded to its longest
protein (at most the model window). A background thread runs the ONNX graph a few batches ahead
while the numpy CRF decodes the batch before (or worker processes decode, with decode_workers),
and predictions come out batch by batch in input order. Memory holds a few batches, never the
proteome.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import re
import sys
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import chain, islice
from pathlib import Path
from typing import TypeVar

import numpy as np
from tqdm import tqdm

from peftsp import __version__, grammar, tokens
from peftsp.bundle import Bundle, load_bundle
from peftsp.decoding import Decoded, Prediction, decode
from peftsp.errors import InputError, PeftSPError
from peftsp.fasta import COMMENT_ID_NOTE, NUCLEOTIDE_NOTE, Protein, read_proteins
from peftsp.plots import PlotWriter
from peftsp.report import Summary
from peftsp.runtime import Session
from peftsp.writers import DEMO_NOTICE, OutputWriter

log = logging.getLogger("peftsp")

# Proteins per model batch. bench/throughput.py, E. coli, 2 threads, batches of 8/16/32/64: CPU
# time per protein fp32 3.40/3.50/3.64/3.84 ms, int8 2.06/1.86/1.90/2.15 ms, peak RSS fp32
# 111/126/156/218 MiB: 16 costs no speed and little memory. (A GPU wants larger batches.)
from peftsp.cli import DEFAULT_BATCH_SIZE  # noqa: E402  (one definition, beside the option)

# Model batches submitted ahead of the one being decoded (one running, one waiting).
MODEL_AHEAD = 2
_T = TypeVar("_T")
# --sample: the runner's sample ids follow the same rule.
SAMPLE_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]*"
# Extensions dropped from the FASTA file name to make the default sample name.
SAMPLE_EXTENSIONS = frozenset(
    ("gz", "bgz", "bz2", "xz", "zst", "fa", "faa", "fasta", "fas", "fsa", "pep", "aa", "prot")
)


def run_information(bundle: Bundle, organism: str, precision: str, prior: str = "proteome") -> dict:
    """What determines the predictions (shards merged together must share it)."""
    graph = bundle.meta["files"][bundle.onnx_path(precision).name]["sha256"]
    return {
        "peftsp_version": __version__,
        "model": bundle.name,
        "model_sha256": graph,
        "demo_model": bundle.is_demo,
        "precision": precision,
        "organism": organism,
        "prior": prior,
        "window": bundle.window,
    }


def batches(proteins: Iterable[Protein], batch_size: int) -> Iterator[list[Protein]]:
    """Consecutive batches of `batch_size` proteins, in input order.

    Not sorted by length: the model sees at most the first `window` residues, which nearly every
    protein fills (on E. coli consecutive batches pad 0.6% more residues than sorted ones), and
    input order lets each batch's predictions go out as soon as it is decoded.
    """
    stream = iter(proteins)
    while batch := list(islice(stream, batch_size)):
        yield batch


def run_model(
    session: Session, proteins: list[Protein], organism: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Emissions (B, T, 37), token ids (B, T + 2) and residue counts (B,) of one batch."""
    bundle = session.bundle
    ids, lengths = tokens.encode([p.sequence for p in proteins], bundle.window)
    kingdom = np.full(len(proteins), bundle.organism_id(organism), dtype=np.int64)
    return session.emissions(ids, kingdom), ids, lengths


@dataclass(frozen=True)
class DecodePlan:
    """How a bundle's emissions are decoded for one run (picklable, for decode processes):
    its calibrated CRF with the organism's type prior, the organism rule and the sequence rules.
    """

    crf: dict[str, np.ndarray]
    temperature: float  # of the type probabilities (calibration)
    state_mask: np.ndarray  # (37,) organism rule
    sequence_rules: bool
    keep_marginals: bool = False

    @classmethod
    def of(
        cls,
        bundle: Bundle,
        organism: str,
        organism_rule: bool = True,
        prior: str = "proteome",
        keep_marginals: bool = False,
    ) -> DecodePlan:
        return cls(
            crf=bundle.decoder_crf(organism, prior),
            temperature=bundle.temperature,
            state_mask=grammar.organism_state_mask(organism if organism_rule else "other"),
            sequence_rules=bundle.sequence_rules,
            keep_marginals=keep_marginals,
        )

    def __call__(self, emissions: np.ndarray, ids: np.ndarray, lengths: np.ndarray) -> Decoded:
        mask = self.state_mask[None, None, :]
        if self.sequence_rules:
            mask = mask & grammar.sequence_mask(ids[:, 1:-1])
        out = decode(emissions, lengths, self.crf, mask, self.keep_marginals)
        out.type_probabilities = tempered(out.type_probabilities, self.temperature)
        return out


def tempered(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """Type probabilities (B, 6) raised to 1/temperature and renormalised (temperature scaling
    of the type posterior: the most probable type, the path and the cleavage site stay)."""
    if temperature == 1.0:
        return probabilities
    with np.errstate(divide="ignore"):
        logits = np.log(probabilities) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    scaled = np.exp(logits)
    return scaled / scaled.sum(axis=1, keepdims=True)


def _predictions(proteins: list[Protein], out: Decoded) -> list[Prediction]:
    """One batch's Predictions from its decoder output."""
    marginals = out.marginals or [None] * len(proteins)
    return [
        Prediction(
            id=protein.id,
            header=protein.header,
            sequence=protein.sequence,
            sp_type=grammar.SP_TYPES[int(out.types[row])],
            probabilities=tuple(float(v) for v in out.type_probabilities[row]),
            cs=out.cs[row],
            cs_probability=out.cs_probabilities[row],
            regions=out.regions[row],
            notes=list(protein.notes),
            cs_marginal=out.cs_marginals[row],
            marginals=marginals[row],
        )
        for row, protein in enumerate(proteins)
    ]


def predict_batch(
    proteins: list[Protein], session: Session, organism: str, plan: DecodePlan
) -> list[Prediction]:
    """Predictions for one batch of proteins (same order), model and decode in this thread."""
    return _predictions(proteins, plan(*run_model(session, proteins, organism)))


def _ahead(items: Iterator[_T], count: int) -> Iterator[_T]:
    """`items`, each taken from `items` `count` steps before it is handed on."""
    window: deque[_T] = deque()
    for item in items:
        window.append(item)
        if len(window) > count:
            yield window.popleft()
    yield from window


def auto_decode_workers(providers: list[str], cpus: int | None = None) -> int:
    """Decode processes when none are asked for: none when the model runs on the CPU (the
    decode overlaps with it in the calling thread, and the cores are the model's); with a GPU,
    whose model outruns one numpy core, up to 4, leaving a core to the calling thread."""
    if all(p == "CPUExecutionProvider" for p in providers):
        return 0
    return max(0, min(4, (cpus or os.cpu_count() or 1) - 2))


def _decode_pool(workers: int) -> ProcessPoolExecutor | None:
    """Processes for the CRF decode (none: it runs in the calling thread)."""
    if workers < 1:
        return None
    main = sys.modules.get("__main__")
    script = getattr(main, "__file__", None)
    if script and getattr(main, "__spec__", None) is None and not Path(script).is_file():
        # A new process re-imports the main script, which a program read from stdin lacks.
        log.warning(
            "decode processes need the main script as a file (not %s): decoding in this thread",
            script,
        )
        return None
    methods = multiprocessing.get_all_start_methods()
    # Not fork: the parent runs ONNX Runtime threads, whose locks a forked child could inherit.
    context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    if context.get_start_method() == "forkserver":
        context.set_forkserver_preload(["peftsp.predict"])
    return ProcessPoolExecutor(workers, mp_context=context)


def predict_batches(
    proteins: Iterable[Protein],
    session: Session,
    organism: str,
    batch_size: int = DEFAULT_BATCH_SIZE,
    keep_marginals: bool = False,
    decode_workers: int | None = 0,
    organism_rule: bool = True,
    prior: str = "proteome",
) -> Iterator[list[Prediction]]:
    """Predictions batch by batch, in input order.

    The model is given `organism` (kingdom-conditioned models); the decode follows
    DecodePlan.of(bundle, organism, organism_rule, prior). The model runs in a background
    thread (ONNX Runtime releases the GIL) MODEL_AHEAD batches ahead of the decode, so model
    and decode overlap. The decode runs in this thread, or with decode_workers > 0 in that many
    processes, each with at most 2 batches in flight (None: auto_decode_workers). Like any
    multiprocessing program, a script that asks for decode processes needs the
    `if __name__ == "__main__":` guard. Memory holds a few batches, never the proteome.
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, not {batch_size}")
    if decode_workers is None:
        decode_workers = auto_decode_workers(session.providers)
    plan = DecodePlan.of(session.bundle, organism, organism_rule, prior, keep_marginals)
    model = ThreadPoolExecutor(1, thread_name_prefix="peftsp-model")
    pool = _decode_pool(decode_workers)
    try:
        emitted = _ahead(
            (
                (batch, model.submit(run_model, session, batch, organism))
                for batch in batches(proteins, batch_size)
            ),
            MODEL_AHEAD,
        )
        if pool is None:
            for batch, job in emitted:
                yield _predictions(batch, plan(*job.result()))
        else:
            decoding = ((batch, pool.submit(plan, *job.result())) for batch, job in emitted)
            for batch, job in _ahead(decoding, 2 * decode_workers):
                yield _predictions(batch, job.result())
    finally:
        model.shutdown(wait=True, cancel_futures=True)
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def predict_proteins(*args, **options) -> Iterator[Prediction]:
    """Predictions one by one in input order: predict_batches(*args, **options), flattened."""
    return chain.from_iterable(predict_batches(*args, **options))


def _warn_notes(counts: Counter[str], examples: dict[str, str]) -> None:
    for note, count in sorted(counts.items()):
        if note == COMMENT_ID_NOTE:
            log.warning("%d protein(s): %s (first: %s)", count, note, examples[note])
        elif note == NUCLEOTIDE_NOTE:
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
            prior = run_info.get("prior", "proteome")
            predictions = predict_proteins(
                proteins, session, organism, batch_size, prior=prior, **extra
            )
            for prediction in predictions:
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
    session = Session(
        bundle,
        device=args.device,
        precision=args.precision,
        threads=args.threads,
        batch_size=args.batch_size,
        trt_cache=args.trt_cache,
    )
    run_info = run_information(bundle, args.organism, session.precision, args.prior)
    if args.sample is not None:  # shards of one sample merge only with each other
        run_info["sample"] = sample
    warn_demo_model(bundle, run_info)
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
