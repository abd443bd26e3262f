"""Training labels: SignalP 6.0 per-residue letters -> the CRF states each residue may take.

The data label only S/L/T/P (signal peptide of each type), I, M and O; the region states of
the grammar (n, h, c, the Tat RR motif, the lipobox, the pilin motif) are derived here.
"""

from __future__ import annotations

import numpy as np

from peftsp.grammar import (
    NUM_STATES,
    SP_LETTER,
    SP_REGION,
    SP_TYPES,
    has_allowed_path,
    state,
)

# The letters of SignalP 6.0 label strings: SP residue of each type, inside, membrane, outside.
LABEL_LETTERS = "SLTPIMO"

# Training labels: per-residue letters -> (L, 37) boolean bitmap of allowed states.

# Kyte & Doolittle (1982) hydropathy index.
KYTE_DOOLITTLE: dict[str, float] = {
    "A": 1.8, "R": -4.5, "N": -3.5, "D": -3.5, "C": 2.5, "Q": -3.5, "E": -3.5, "G": -0.4,
    "H": -3.2, "I": 4.5, "L": 3.8, "K": -3.9, "M": 1.9, "F": 2.8, "P": -1.6, "S": -0.8,
    "T": -0.7, "W": -0.9, "Y": -1.3, "V": 4.2,
}  # fmt: skip
_HYDRO_WINDOW = 7


class LabelError(ValueError):
    """A label string that no path of the grammar can explain."""


def sp_length(labels: str, sp_type: str) -> int:
    """Number of leading SP letters of a SignalP 6.0 label string (0 for NO_SP)."""
    if sp_type == "NO_SP":
        return 0
    letter = SP_LETTER[sp_type]
    n = len(labels) - len(labels.lstrip(letter))
    return n


def true_cleavage_site(labels: str, sp_type: str) -> int | None:
    """The labelled cleavage site (SP length), or None for NO_SP."""
    n = sp_length(labels, sp_type)
    return n if n > 0 else None


def _most_hydrophobic(sequence: str, lo: int, hi: int) -> int:
    """Centre of the most hydrophobic 7-residue window inside [lo, hi) (first maximum wins)."""
    if hi - lo <= _HYDRO_WINDOW:
        return (lo + hi - 1) // 2
    scores = [
        sum(KYTE_DOOLITTLE.get(a, 0.0) for a in sequence[s : s + _HYDRO_WINDOW])
        for s in range(lo, hi - _HYDRO_WINDOW + 1)
    ]
    return lo + int(np.argmax(scores)) + _HYDRO_WINDOW // 2


def _twin_arginine(sequence: str, n: int) -> int | None:
    """Start of the Tat motif inside the SP: the last RR, else the last KR, else None."""
    for motif in ("RR", "KR"):
        at = sequence.rfind(motif, 0, n)
        if at >= 0:
            return at
    return None


def _allow(bitmap: np.ndarray, lo: int, hi: int, sp_type: str, name: str) -> None:
    lo, hi = max(lo, 0), min(hi, bitmap.shape[0])
    if lo < hi:
        bitmap[lo:hi, state(sp_type, name)] = True


def _tail(bitmap: np.ndarray, labels: str, start: int, sp_type: str) -> None:
    for pos in range(start, len(labels)):
        letter = labels[pos]
        if letter not in "IMO":
            raise LabelError(f"position {pos + 1}: letter {letter!r} after the signal peptide")
        bitmap[pos, state(sp_type, letter)] = True


def _heuristic_regions(bitmap: np.ndarray, sequence: str, sp_type: str, n: int) -> None:
    """Allowed n/h/c (and RR, lipobox) states inside an SP of length n, with overlaps."""
    last = n - 1
    lipo = sp_type in ("LIPO", "TATLIPO")
    tat = sp_type in ("TAT", "TATLIPO")
    c_name = "CS" if lipo else "C"
    # The lipobox is the last two SP residues; a Sec/Tat c-region ends at the CS.
    c_end = n
    h_end = last - 1 if lipo else last - 2
    n_lo = 0
    if tat:
        rr = _twin_arginine(sequence, n)
        if rr is not None:
            _allow(bitmap, rr, rr + 2, sp_type, "RR")
            _allow(bitmap, 0, max(rr, 1), sp_type, "N")
            _allow(bitmap, rr + 2, rr + 3, sp_type, "N")
            n_lo = rr + 3
    hp = _most_hydrophobic(sequence, n_lo, n)
    if not (tat and n_lo):
        _allow(bitmap, 0, max(hp, 1), sp_type, "N")
    _allow(bitmap, max(2, n_lo), max(h_end, hp + 1), sp_type, "H")
    if lipo:
        _allow(bitmap, last - 1, c_end, sp_type, "CS")
    else:
        _allow(bitmap, hp + 1, c_end, sp_type, c_name)


def _pilin_regions(bitmap: np.ndarray, labels: str, n: int) -> int:
    """Leader = P; then the conserved motif (CS) and the hydrophobic helix (H) of the mature
    pilin, taken from the first M segment after the leader. Returns where the tail starts."""
    _allow(bitmap, 0, n, "PILIN", "P")
    seg_end = n
    while seg_end < len(labels) and labels[seg_end] == "M":
        seg_end += 1
    if seg_end - n < 2:  # no helix labelled: CS then H over the next residues, best effort
        seg_end = min(len(labels), n + 6)
    cs_end = n + min(5, max(1, seg_end - n - 1))
    _allow(bitmap, n, cs_end, "PILIN", "CS")
    _allow(bitmap, cs_end, seg_end, "PILIN", "H")
    return seg_end


def _relaxed(sp_type: str, labels: str, n: int) -> np.ndarray:
    """Every SP-region state of the type on every SP residue: letters only, no heuristics."""
    bitmap = np.zeros((len(labels), NUM_STATES), dtype=bool)
    for name in SP_REGION[sp_type]:
        bitmap[:n, state(sp_type, name)] = True
    tail_start = n
    if sp_type in ("LIPO", "TATLIPO") and n < len(labels):
        bitmap[n, state(sp_type, "C1")] = True
        tail_start = n + 1
    if sp_type == "PILIN":
        for name in ("CS", "H"):
            bitmap[n:, state(sp_type, name)] = True
    for pos in range(tail_start, len(labels)):
        bitmap[pos, state(sp_type, labels[pos])] = True
    return bitmap


def region_bitmap(sequence: str, labels: str, sp_type: str) -> np.ndarray:
    """(L, 37) boolean: the states each residue may take, from SignalP 6.0 letters.

    Region states are not labelled in the data, so they are derived: the most hydrophobic
    7-residue window places the n/h and h/c borders (with overlaps left ambiguous), the last
    RR (else KR) is the Tat motif, the last two SP residues are the lipobox, the residue after a
    lipoprotein SP is C1. The CRF numerator sums over every path through the allowed states
    (partial-label likelihood). When the heuristics leave no grammatical path (very short or
    odd SPs), every SP state of the type is allowed on the SP residues instead.
    """
    if len(sequence) != len(labels):
        raise LabelError(f"sequence has {len(sequence)} residues but labels have {len(labels)}")
    if sp_type not in SP_TYPES:
        raise LabelError(f"unknown SP type {sp_type!r}")
    if not labels:
        raise LabelError("empty label string")
    bad = set(labels) - set(LABEL_LETTERS)
    if bad:
        raise LabelError(f"unknown label letters {''.join(sorted(bad))!r}")
    n = sp_length(labels, sp_type)
    if sp_type != "NO_SP" and n == 0:
        raise LabelError(f"type {sp_type} but the labels do not start with {SP_LETTER[sp_type]!r}")
    bitmap = np.zeros((len(labels), NUM_STATES), dtype=bool)
    if sp_type == "NO_SP":
        _tail(bitmap, labels, 0, "NO_SP")
    elif sp_type == "PILIN":
        _tail(bitmap, labels, _pilin_regions(bitmap, labels, n), "PILIN")
    else:
        _heuristic_regions(bitmap, sequence, sp_type, n)
        tail_start = n
        if sp_type in ("LIPO", "TATLIPO") and n < len(labels):
            bitmap[n, state(sp_type, "C1")] = True
            tail_start = n + 1
        _tail(bitmap, labels, tail_start, sp_type)
    if has_allowed_path(bitmap):
        return bitmap
    if sp_type != "NO_SP":
        bitmap = _relaxed(sp_type, labels, n)
        if has_allowed_path(bitmap):
            return bitmap
    raise LabelError(f"no {sp_type} path of the region grammar fits labels {labels!r}")
