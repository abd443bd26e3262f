"""Calibration of a model bundle's type probabilities, and the type prior of real proteomes.

- Temperature: the type probabilities are raised to 1/T and renormalised, T fitted on labelled
  validation records by minimising the negative log-likelihood of the true type (temperature
  scaling, Guo et al. 2017). The predicted type, path and cleavage site do not change. (Scaling
  every CRF score by 1/T instead was tried: it changes which type wins and cost 0.2 MCC2.)
- Proteome prior: SignalP 6.0's data are SP-rich (most bacterial records have an SP) while
  75-85% of a bacterial proteome's proteins have none. For each organism group the type prior
  of whole proteomes is estimated by EM on unlabelled proteomes (Saerens, Latinne & Decaestecker,
  Neural Computation 2002) and stored as log(proteome prior / training prior) per type, which
  the decoder adds to the start scores of each type's block (bundle.Bundle.decoder_crf).
- Reliability: the expected calibration error of the predicted type's probability.

`peftsp calibrate` writes both into model.json (the graphs and their checksums are unchanged).
No torch.
"""

from __future__ import annotations

import csv
import json
import logging
from collections import Counter
from pathlib import Path

import numpy as np

from peftsp import grammar
from peftsp.bundle import ORGANISM_IDS, Bundle, load_bundle
from peftsp.errors import PeftSPError
from peftsp.evaluation import predict_labelled, recorded_run_split
from peftsp.fasta import LabelledRecord, read_labelled_list, read_proteins
from peftsp.files import atomic_write
from peftsp.predict import predict_proteins, tempered
from peftsp.sampling import class_weights

log = logging.getLogger("peftsp")

TEMPERATURE_RANGE = (0.25, 8.0)
MAX_LOG_SHIFT = 10.0  # a type the EM drives to zero keeps a finite, tiny prior
BINS = 10


def reliability(confidence: np.ndarray, correct: np.ndarray, bins: int = BINS) -> list[dict]:
    """Equal-width confidence bins: count, mean confidence and accuracy of each non-empty bin."""
    confidence, correct = np.asarray(confidence, float), np.asarray(correct, bool)
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    rows = []
    for b in range(bins):
        chosen = which == b
        if chosen.any():
            rows.append(
                {
                    "low": b / bins,
                    "high": (b + 1) / bins,
                    "count": int(chosen.sum()),
                    "confidence": float(confidence[chosen].mean()),
                    "accuracy": float(correct[chosen].mean()),
                }
            )
    return rows


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = BINS):
    """ECE: the count-weighted mean |accuracy - confidence| over the reliability bins."""
    rows = reliability(confidence, correct, bins)
    total = sum(r["count"] for r in rows)
    return sum(r["count"] * abs(r["accuracy"] - r["confidence"]) for r in rows) / max(1, total)


def fit_temperature(session, records: list[LabelledRecord], batch_size: int = 64) -> float:
    """The temperature minimising the type NLL of labelled records (golden-section on log T).

    The records are decoded once (each with its kingdom, the organism rule on, the labelled
    data's prior, temperature 1); the temperature then only reshapes their type probabilities.
    """
    predictions = predict_labelled(session, records, batch_size=batch_size)
    probabilities = np.array([p.probabilities for p in predictions])
    truth = np.array([grammar.SP_TYPES.index(r.sp_type) for r in records])

    def nll(log_t: float) -> float:
        scaled = tempered(probabilities, float(np.exp(log_t)))
        return float(-np.log(np.clip(scaled[np.arange(len(truth)), truth], 1e-12, 1)).sum())

    lo, hi = np.log(TEMPERATURE_RANGE[0]), np.log(TEMPERATURE_RANGE[1])
    ratio = (np.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = nll(a), nll(b)
    for _ in range(40):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = nll(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = nll(b)
    return float(np.exp((lo + hi) / 2))


def _calibrated(bundle: Bundle, temperature: float, shifts: dict | None = None) -> Bundle:
    """The bundle with another temperature (and prior shifts)."""
    meta = dict(bundle.meta)
    calibration = {**meta.get("calibration", {}), "temperature": temperature}
    if shifts is not None:
        calibration["log_prior_shift"] = shifts
    meta["calibration"] = calibration
    return Bundle(bundle.path, meta, bundle.crf)


def log_ratio(new: np.ndarray, old: np.ndarray) -> list[float]:
    """log(new / old) per type, rounded and clipped for model.json: a type the EM drives to
    zero keeps a tiny prior; a type absent from the training prior is left alone (0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(old > 0, np.log(np.maximum(new, 1e-300) / old), 0.0)
    return [round(float(v), 6) for v in np.clip(ratio, -MAX_LOG_SHIFT, MAX_LOG_SHIFT)]


def training_prior(
    records: list[LabelledRecord],
    organism: str,
    majority_fraction: float = 1.0,
    balance: float = 1.0,
):
    """(6,) the type prior a model saw in training for an organism group: the type shares of
    its kingdom's training records ('other': of all of them, since the kingdom is hidden at
    random), each (kingdom, type) class weighted as training drew it (sampling.class_weights)."""
    classes = Counter((r.kingdom, r.sp_type) for r in records)
    weights = class_weights(classes, majority_fraction, balance)
    counts = np.zeros(len(grammar.SP_TYPES))
    for (kingdom, sp_type), n in classes.items():
        if organism != "other" and grammar.KINGDOM_TO_ORGANISM[kingdom] != organism:
            continue
        counts[grammar.SP_TYPES.index(sp_type)] += n * weights[(kingdom, sp_type)]
    if counts.sum() == 0:
        raise PeftSPError(f"no training records for organism group {organism!r}")
    return counts / counts.sum()


def training_shifts(train: list[LabelledRecord], options: dict) -> dict[str, list[float]]:
    """Per organism group, log(labelled-data prior / prior the model saw in training): the
    "training" prior shift that undoes a run's recorded --majority-fraction and
    --class-balance (`options`, as train records them)."""
    fraction = float(options.get("majority_fraction", 1.0))
    balance = float(options.get("class_balance", 1.0))
    groups = sorted({grammar.KINGDOM_TO_ORGANISM[r.kingdom] for r in train} | {"other"})
    return {
        o: log_ratio(training_prior(train, o), training_prior(train, o, fraction, balance))
        for o in groups
    }


def estimate_prior(posteriors: np.ndarray, prior: np.ndarray, steps: int = 200) -> np.ndarray:
    """EM estimate of the type prior of unlabelled proteins (Saerens et al. 2002).

    posteriors (N, 6) are the model's type probabilities under the training `prior`; each step
    reweights them by new/old prior, renormalises, and takes their mean as the new prior.
    """
    current = prior.copy()
    known = prior > 0  # a type the training prior lacks stays at zero
    for _ in range(steps):
        weighted = posteriors * np.divide(current, prior, out=np.zeros_like(prior), where=known)
        weighted /= weighted.sum(axis=1, keepdims=True)
        updated = weighted.mean(axis=0)
        if np.abs(updated - current).max() < 1e-7:
            return updated
        current = updated
    return current


def proteome_posteriors(session, fasta: str, organism: str, batch_size: int = 64):
    """(N, 6) calibrated type probabilities of a proteome under the training prior."""
    proteins = read_proteins(fasta)
    predictions = predict_proteins(
        proteins, session, organism, batch_size, prior="training", decode_workers=0
    )
    return np.array([p.probabilities for p in predictions])


def read_proteome_sheet(path: str) -> list[tuple[str, str]]:
    """(fasta, organism) rows of a CSV with columns fasta,organism (paths relative to it)."""
    rows = []
    with open(path, newline="", encoding="utf-8") as handle:
        for line, row in enumerate(csv.DictReader(handle), start=2):
            fasta, organism = (row.get("fasta") or "").strip(), (row.get("organism") or "").strip()
            if not fasta or organism not in ORGANISM_IDS:
                raise PeftSPError(f"{path}, line {line}: need a fasta path and an organism group")
            resolved = (Path(path).parent / fasta).resolve()
            if not resolved.is_file():
                raise PeftSPError(f"{path}, line {line}: {resolved}: no such FASTA file")
            rows.append((str(resolved), organism))
    return rows


def calibrate_command(args) -> None:
    """`peftsp calibrate`: fit the temperature and the proteome type priors into model.json."""
    from peftsp.runtime import Session

    bundle = load_bundle(args.model)
    training = bundle.meta.get("training") or {}
    options = training.get("options") or {}
    records = read_labelled_list(args.data)
    try:
        train, val, _ = recorded_run_split(records, training)
    except PeftSPError as err:  # calibrate fits on the records the model was selected on
        raise PeftSPError(f"{args.model}: {err}") from err
    sheet = read_proteome_sheet(args.proteomes)
    shifts: dict[str, dict[str, list[float]]] = {
        "training": training_shifts(train, options),
        "proteome": {},
    }
    session = Session(bundle, "cpu", "fp32", args.threads)
    session.bundle = _calibrated(bundle, 1.0, shifts)
    temperature = fit_temperature(session, val)
    log.info("temperature %.3f (fitted on %d validation records)", temperature, len(val))
    session.bundle = _calibrated(bundle, temperature, shifts)
    for organism in sorted({o for _, o in sheet}):
        posteriors = np.concatenate(
            [proteome_posteriors(session, f, organism) for f, o in sheet if o == organism]
        )
        natural = training_prior(train, organism)
        estimated = estimate_prior(posteriors, natural)
        shifts["proteome"][organism] = log_ratio(estimated, natural)
        log.info(
            "%s: %d proteins; labelled-data prior %s -> proteome prior %s",
            organism,
            len(posteriors),
            np.round(natural, 4).tolist(),
            np.round(estimated, 4).tolist(),
        )
    meta = dict(bundle.meta)
    meta["format_version"] = 2
    meta["calibration"] = {
        "temperature": round(temperature, 6),
        "log_prior_shift": shifts,
        "fitted_on": {
            "validation_records": len(val),
            "proteomes": [{"fasta": Path(f).name, "organism": o} for f, o in sheet],
        },
    }
    with atomic_write(Path(args.model) / "model.json") as handle:
        handle.write(json.dumps(meta, indent=1) + "\n")
    print(f"wrote the calibration into {Path(args.model) / 'model.json'}")
