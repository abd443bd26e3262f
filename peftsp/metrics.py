"""SignalP 6.0 benchmark metrics: per kingdom and SP type MCC1, MCC2 and cleavage-site
recall/precision, their cross-validation average, the 16-cell table and the model-selection
score used during training.

Definitions follow SignalP 6.0 (as used by PEFT-SP). Per kingdom k and SP type s occurring
among the true labels of k (Eukarya: Sec/SPI only):
- MCC2: binary MCC of "type == s" over all sequences of k;
- MCC1: the same over the sequences whose true type is s or NO_SP;
- CS recall / precision at tolerance w: the true CS is dropped where the true type is not s,
  the predicted CS where the predicted type is neither s nor NO_SP; a hit has both CSs and
  |predicted - true| <= w; recall = hits / true CSs, precision = hits / predicted CSs.
  (Keeping NO_SP's predicted CS is SignalP 6.0's rule; our decoder never gives NO_SP a CS,
  so in practice a hit needs the predicted type s.)
An undefined MCC (zero denominator) is 0.0, as in scikit-learn; an undefined ratio is NaN.

numpy only: the MCCs are a few lines each, not worth scikit-learn as a dependency.
"""

from __future__ import annotations

import csv
import io
import math
import os
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from peftsp import grammar
from peftsp.files import atomic_write
from peftsp.grammar import SP_TYPES

# SignalP 6.0 kingdom names in the order of the published table, with the names people read.
KINGDOMS: tuple[str, ...] = ("ARCHAEA", "EUKARYA", "NEGATIVE", "POSITIVE")
KINGDOM_NAMES: dict[str, str] = {
    "ARCHAEA": "Archaea",
    "EUKARYA": "Eukarya",
    "NEGATIVE": "Gram-negative",
    "POSITIVE": "Gram-positive",
}
# The SP types of the reported cells, in the order of the published table.
TYPE_NAMES: dict[str, str] = {
    t: grammar.TYPE_NAMES[t] for t in ("SP", "LIPO", "PILIN", "TAT", "TATLIPO")
}
WINDOWS: tuple[int, ...] = (0, 1, 2, 3)
# Per-cell metric names; a metric key is f"{KINGDOM}_{TYPE}_{metric}".
CELL_METRICS: tuple[str, ...] = (
    "mcc1",
    "mcc2",
    *(f"recall_window_{w}" for w in WINDOWS),
    *(f"precision_window_{w}" for w in WINDOWS),
)
NO_CS = -1


def kingdom_types(kingdom: str) -> tuple[str, ...]:
    """The SP types reported for a kingdom (SignalP 6.0: Eukarya has Sec/SPI only)."""
    return ("SP",) if kingdom == "EUKARYA" else tuple(TYPE_NAMES)


# The 16 reported (kingdom, type) cells, in the order of the published table.
CELLS: tuple[tuple[str, str], ...] = tuple((k, t) for k in KINGDOMS for t in kingdom_types(k))
METRIC_KEYS: tuple[str, ...] = tuple(f"{k}_{t}_{m}" for k, t in CELLS for m in CELL_METRICS)


def _published(values: Sequence[float]) -> dict[str, float]:
    return {f"{k}_{t}_mcc2": v for (k, t), v in zip(CELLS, values, strict=True)}


# MCC2 of Zeng et al., Genome Research 34:1445 (2024), Table 2, ESM2-3B backbone, in CELLS order.
PUBLISHED_MCC2: dict[str, dict[str, float]] = {
    "SignalP 6.0": _published([
        0.793, 0.825, 0.426, 0.563, 0.718, 0.958, 0.804, 0.929,
        0.902, 0.962, 0.486, 0.770, 0.882, 0.902, 0.799, 0.786,
    ]),
    "Fine-tuning": _published([
        0.771, 0.864, 0.724, 0.564, 0.792, 0.948, 0.813, 0.946,
        0.982, 0.902, 0.358, 0.810, 0.908, 1.000, 0.746, 0.603,
    ]),
    "Prompt tuning": _published([
        0.777, 0.509, 0.500, 0.653, 0.182, 0.954, 0.723, 0.886,
        0.970, 0.853, 0.325, 0.746, 0.833, 0.951, 0.590, 0.148,
    ]),
    "Adapter tuning": _published([
        0.825, 0.783, 0.351, 0.538, 0.660, 0.954, 0.820, 0.950,
        0.899, 0.899, 0.405, 0.814, 0.911, 0.969, 0.752, 0.669,
    ]),
    "LoRA": _published([
        0.783, 0.730, 0.798, 0.579, 0.850, 0.960, 0.809, 0.945,
        0.919, 0.961, 0.520, 0.848, 0.939, 1.000, 0.850, 0.783,
    ]),
}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Correlation coefficients


def binary_mcc(truth: np.ndarray, pred: np.ndarray) -> float:
    """Matthews correlation of two boolean arrays; 0.0 when undefined."""
    truth, pred = np.asarray(truth, dtype=bool), np.asarray(pred, dtype=bool)
    tp = float(np.sum(truth & pred))
    tn = float(np.sum(~truth & ~pred))
    fp = float(np.sum(~truth & pred))
    fn = float(np.sum(truth & ~pred))
    denominator = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return (tp * tn - fp * fn) / denominator if denominator else 0.0


def multiclass_mcc(truth: np.ndarray, pred: np.ndarray) -> float:
    """Gorodkin's multiclass Matthews correlation (R_K) of two label arrays; 0.0 when undefined."""
    truth, pred = np.asarray(truth), np.asarray(pred)
    _, index = np.unique(np.concatenate([truth, pred]), return_inverse=True)
    n = len(truth)
    k = int(index.max()) + 1 if n else 0
    confusion = np.zeros((k, k))
    np.add.at(confusion, (index[:n], index[n:]), 1.0)
    t, p = confusion.sum(axis=1), confusion.sum(axis=0)  # true and predicted counts per class
    covariance = np.trace(confusion) * n - t @ p
    denominator = math.sqrt((n * n - p @ p) * (n * n - t @ t))
    return float(covariance / denominator) if denominator else 0.0


# ---------------------------------------------------------------------------------------------
# Benchmark metrics


def _arrays(
    kingdoms: Sequence[str],
    true_types: Sequence[str],
    pred_types: Sequence[str],
    true_cs: Sequence[int | None],
    pred_cs: Sequence[int | None],
) -> tuple[np.ndarray, ...]:
    """Validated numpy arrays; a missing CS (None or -1) becomes NO_CS."""
    columns = (kingdoms, true_types, pred_types, true_cs, pred_cs)
    if len({len(c) for c in columns}) > 1:
        raise ValueError(f"inputs differ in length: {[len(c) for c in columns]}")
    unknown = set(kingdoms) - set(KINGDOMS)
    if unknown:
        raise ValueError(f"unknown kingdoms {sorted(unknown)}; expected one of {KINGDOMS}")
    unknown = (set(true_types) | set(pred_types)) - set(SP_TYPES)
    if unknown:
        raise ValueError(f"unknown SP types {sorted(unknown)}; expected one of {SP_TYPES}")

    def sites(values: Sequence[int | None]) -> np.ndarray:
        return np.array([NO_CS if v is None else int(v) for v in values], dtype=np.int64)

    return (
        np.asarray(kingdoms, dtype=str),
        np.asarray(true_types, dtype=str),
        np.asarray(pred_types, dtype=str),
        sites(true_cs),
        sites(pred_cs),
    )


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else math.nan


def _cell_metrics(
    sp_type: str,
    true_types: np.ndarray,
    pred_types: np.ndarray,
    true_cs: np.ndarray,
    pred_cs: np.ndarray,
) -> dict[str, float]:
    """CELL_METRICS of one SP type over the sequences of one kingdom."""
    is_true = true_types == sp_type
    is_pred = pred_types == sp_type
    versus_no_sp = is_true | (true_types == "NO_SP")
    out = {
        "mcc1": binary_mcc(is_true[versus_no_sp], is_pred[versus_no_sp]),
        "mcc2": binary_mcc(is_true, is_pred),
    }
    true_site = np.where(is_true, true_cs, NO_CS)
    pred_site = np.where(is_pred | (pred_types == "NO_SP"), pred_cs, NO_CS)
    both = (true_site != NO_CS) & (pred_site != NO_CS)
    hits = [int(np.sum(both & (np.abs(pred_site - true_site) <= w))) for w in WINDOWS]
    n_true, n_pred = int(np.sum(true_site != NO_CS)), int(np.sum(pred_site != NO_CS))
    out |= {f"recall_window_{w}": _ratio(h, n_true) for w, h in zip(WINDOWS, hits, strict=True)}
    out |= {f"precision_window_{w}": _ratio(h, n_pred) for w, h in zip(WINDOWS, hits, strict=True)}
    return out


def compute_metrics(
    kingdoms: Sequence[str],
    true_types: Sequence[str],
    pred_types: Sequence[str],
    true_cs: Sequence[int | None],
    pred_cs: Sequence[int | None],
) -> dict[str, float]:
    """SignalP 6.0 metrics of one model on one test set, one entry per sequence in each input.

    Kingdoms are SignalP names (EUKARYA, ARCHAEA, POSITIVE, NEGATIVE), types from
    grammar.SP_TYPES, CSs the SP length or None/-1. Returns {f"{KINGDOM}_{TYPE}_{metric}": value}
    for every reported cell whose type occurs among the true labels of that kingdom.
    """
    kingdom, true_type, pred_type, true_site, pred_site = _arrays(
        kingdoms, true_types, pred_types, true_cs, pred_cs
    )
    out: dict[str, float] = {}
    for k in KINGDOMS:
        rows = kingdom == k
        for t in kingdom_types(k):
            if not np.any(true_type[rows] == t):
                continue
            cell = _cell_metrics(
                t, true_type[rows], pred_type[rows], true_site[rows], pred_site[rows]
            )
            out.update({f"{k}_{t}_{name}": value for name, value in cell.items()})
    return out


def detection_and_cs_mcc(
    kingdoms: Sequence[str],
    true_types: Sequence[str],
    pred_types: Sequence[str],
    true_cs: Sequence[int | None],
    pred_cs: Sequence[int | None],
) -> float:
    """Model-selection score: detection MCC + CS MCC, each averaged over kingdoms present.

    Detection MCC: multiclass MCC of the 6-way type within a kingdom. CS MCC: multiclass MCC of
    the CS position over the kingdom's sequences with a true CS (predicted -1 when absent);
    kingdoms without a true CS are left out of its average (0.0 when none has one).
    """
    kingdom, true_type, pred_type, true_site, pred_site = _arrays(
        kingdoms, true_types, pred_types, true_cs, pred_cs
    )
    detection: list[float] = []
    cleavage: list[float] = []
    for k in KINGDOMS:
        rows = kingdom == k
        if not rows.any():
            continue
        detection.append(multiclass_mcc(true_type[rows], pred_type[rows]))
        with_cs = rows & (true_site != NO_CS)
        if with_cs.any():
            cleavage.append(multiclass_mcc(true_site[with_cs], pred_site[with_cs]))
    return (float(np.mean(detection)) if detection else 0.0) + (
        float(np.mean(cleavage)) if cleavage else 0.0
    )


# ---------------------------------------------------------------------------------------------
# Averaging and the 16-cell table


def _mean_skipping_nan(values: Iterable[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


def average_metrics(per_model: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Mean of each metric over models, skipping models where it is NaN or absent
    (cross-validation reporting: model averaging, not an ensemble)."""
    values: dict[str, list[float]] = {}
    for metrics in per_model:
        for key, value in metrics.items():
            values.setdefault(key, []).append(value)
    return {key: _mean_skipping_nan(v) for key, v in values.items()}


def cell_table(metrics: Mapping[str, float], metric: str = "mcc2") -> list[tuple[str, str, float]]:
    """(kingdom name, SP type name, value) for the 16 cells; NaN where the cell is absent."""
    return [
        (KINGDOM_NAMES[k], TYPE_NAMES[t], metrics.get(f"{k}_{t}_{metric}", math.nan))
        for k, t in CELLS
    ]


def mean_of_cells(metrics: Mapping[str, float], metric: str = "mcc2") -> float:
    """Unweighted mean of a metric over the 16 cells, skipping absent (or NaN) cells."""
    return _mean_skipping_nan(value for _, _, value in cell_table(metrics, metric))


# A table column: (title, metrics, metric name), e.g. ("MCC2", averaged, "mcc2").
Column = tuple[str, Mapping[str, float], str]


def _cell_rows(columns: list[Column]) -> list[tuple[str, str, list[float]]]:
    """(kingdom name, type name, values) of the 16 cells, then ("Mean", "", means over cells)."""
    values = [cell_table(source, metric) for _, source, metric in columns]
    rows = [
        (KINGDOM_NAMES[k], TYPE_NAMES[t], [column[i][2] for column in values])
        for i, (k, t) in enumerate(CELLS)
    ]
    rows.append(("Mean", "", [mean_of_cells(source, m) for _, source, m in columns]))
    return rows


def _markdown_table(columns: list[Column]) -> str:
    """A Markdown table padded to aligned columns, numbers right-aligned; the mean row has 4
    decimals (the published SignalP 6.0 mean is 0.7816, printed 0.781 in the paper)."""

    def shown(value: float, digits: int) -> str:
        return "n/a" if math.isnan(value) else f"{value:.{digits}f}"

    header = ["Kingdom", "SP type", *(title for title, _, _ in columns)]
    rows = [
        [kingdom, sp_type, *(shown(v, 4 if kingdom == "Mean" else 3) for v in values)]
        for kingdom, sp_type, values in _cell_rows(columns)
    ]
    rows[-1][0] = "**Mean**"
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        padded = [
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = ["-" * w if i < 2 else "-" * (w - 1) + ":" for i, w in enumerate(widths)]
    return "\n".join([line(header), line(rule), *(line(r) for r in rows)])


def format_cell_table(metrics: Mapping[str, float]) -> str:
    """Markdown: the 16 cells' MCCs beside the published MCC2 columns, then CS recall/precision."""
    present = sum(not math.isnan(v) for _, _, v in cell_table(metrics, "mcc2"))
    detection: list[Column] = [("MCC1", metrics, "mcc1"), ("MCC2", metrics, "mcc2")]
    detection += [(name, column, "mcc2") for name, column in PUBLISHED_MCC2.items()]
    cleavage: list[Column] = [(f"Recall w={w}", metrics, f"recall_window_{w}") for w in WINDOWS]
    cleavage += [(f"Precision w={w}", metrics, f"precision_window_{w}") for w in WINDOWS]
    detection_note = (
        "MCC1: the SP type against sequences without an SP; MCC2: against all other sequences. "
        "The last five columns are published MCC2 values (ESM2-3B backbone; Zeng et al., "
        "Genome Research 2024, Table 2). Means are unweighted over the cells present"
        + ("." if present == len(CELLS) else f" ({present} of our {len(CELLS)} cells).")
    )
    cleavage_note = (
        "A hit is a predicted cleavage site within w residues of the true one on a sequence "
        "predicted as that SP type. Recall: hits per true SP of the type; precision: hits per "
        "predicted cleavage site of the type."
    )
    parts = [
        "## Detection (Matthews correlation coefficient)",
        textwrap.fill(detection_note, 100),
        _markdown_table(detection),
        "## Cleavage site",
        textwrap.fill(cleavage_note, 100),
        _markdown_table(cleavage),
    ]
    return "\n\n".join(parts) + "\n"


# ---------------------------------------------------------------------------------------------
# Files


def _number(value: float | None) -> str:
    """A CSV cell: empty for absent or NaN."""
    return "" if value is None or math.isnan(value) else f"{value:.6g}"


def _write_atomic(path: Path, text: str) -> None:
    with atomic_write(path, newline="") as handle:
        handle.write(text)


def _csv_text(rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def write_metrics_csv(
    path: str | os.PathLike, per_model: Mapping[str, Mapping[str, float]]
) -> None:
    """CSV with one row per metric key and one column per model (empty where absent or NaN).

    Rows follow the published cell order; keys outside it come last, in order of appearance.
    """
    seen = dict.fromkeys(key for metrics in per_model.values() for key in metrics)
    keys = [k for k in METRIC_KEYS if k in seen] + [k for k in seen if k not in METRIC_KEYS]
    rows = [["metric", *per_model]]
    rows += [[key, *(_number(m.get(key)) for m in per_model.values())] for key in keys]
    _write_atomic(Path(path), _csv_text(rows))


def write_cell_table(
    path_csv: str | os.PathLike, path_md: str | os.PathLike, averaged: Mapping[str, float]
) -> None:
    """The 16-cell table of (averaged) metrics with the published MCC2 columns and a row of
    means over the cells, as CSV (empty where absent) and as Markdown."""
    columns: list[Column] = [(m, averaged, m) for m in CELL_METRICS]
    columns += [(f"{name} mcc2 (published)", v, "mcc2") for name, v in PUBLISHED_MCC2.items()]
    rows = [["kingdom", "sp_type", *(title for title, _, _ in columns)]]
    rows += [[k, t, *map(_number, values)] for k, t, values in _cell_rows(columns)]
    csv_text = _csv_text(rows)
    markdown = "# Signal-peptide benchmark per kingdom and SP type\n\n" + format_cell_table(
        averaged
    )
    _write_atomic(Path(path_csv), csv_text)
    _write_atomic(Path(path_md), markdown)
