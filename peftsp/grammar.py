"""The SignalP 6.0 region grammar: 37 CRF states, allowed transitions, region labels.

This module is the single definition of the states, of which transitions are allowed, of how
per-residue letters (S, L, T, P, I, M, O) become sets of allowed states, and of what a cleavage
site and the n/h/c regions are on a state path. Training (the torch CRF) and prediction (the
numpy decoder) both read it. It imports numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Type order used everywhere: probabilities, ids, tables.
SP_TYPES: tuple[str, ...] = ("NO_SP", "SP", "LIPO", "TAT", "TATLIPO", "PILIN")
# Column names of SignalP 6.0's prediction_results.txt, in SP_TYPES order.
TYPE_COLUMNS: tuple[str, ...] = (
    "OTHER",
    "SP(Sec/SPI)",
    "LIPO(Sec/SPII)",
    "TAT(Tat/SPI)",
    "TATLIPO(Tat/SPII)",
    "PILIN(Sec/SPIII)",
)
# The SP residue letter of each type in the SignalP 6.0 label strings.
SP_LETTER: dict[str, str] = {"SP": "S", "LIPO": "L", "TAT": "T", "TATLIPO": "T", "PILIN": "P"}

_BLOCKS: dict[str, tuple[str, ...]] = {
    "NO_SP": ("I", "M", "O"),
    "SP": ("N", "H", "C", "I", "M", "O"),
    "LIPO": ("N", "H", "CS", "C1", "I", "M", "O"),
    "TAT": ("N", "RR", "H", "C", "I", "M", "O"),
    "TATLIPO": ("N", "RR", "H", "CS", "C1", "I", "M", "O"),
    "PILIN": ("P", "CS", "H", "I", "M", "O"),
}
STATES: tuple[str, ...] = tuple(f"{t}_{s}" for t in SP_TYPES for s in _BLOCKS[t])
NUM_STATES = len(STATES)
STATE_INDEX: dict[str, int] = {name: i for i, name in enumerate(STATES)}

# Score given to disallowed transitions, starts and ends, in training and decoding alike.
# Finite so that log-sum-exp never sees -inf - -inf; far below any learned score.
DISALLOWED_SCORE = -1.0e4

# The states that make up the signal peptide itself (the residues before the cleavage site).
_SP_REGION: dict[str, tuple[str, ...]] = {
    "SP": ("N", "H", "C"),
    "LIPO": ("N", "H", "CS"),
    "TAT": ("N", "RR", "H", "C"),
    "TATLIPO": ("N", "RR", "H", "CS"),
    "PILIN": ("P",),
}
# Which region of a GFF3 / JSON report each SP state belongs to. The Tat RR motif lies in
# the n-region; the lipobox (LIPO_CS) is the c-region of a lipoprotein signal peptide.
# The prepilin leader (PILIN_P) has no n/h/c structure, so it reports no regions.
_REGION_OF_STATE: dict[str, str] = {"N": "n", "RR": "n", "H": "h", "C": "c", "CS": "c"}


def state(sp_type: str, name: str) -> int:
    """Index of state `name` (e.g. "H") in the block of `sp_type` (e.g. "LIPO")."""
    return STATE_INDEX[f"{sp_type}_{name}"]


# The SP_TYPES index of each state's block, and each state's short name ("N", "RR", "I", ...).
STATE_TYPE: np.ndarray = np.array(
    [i for i, t in enumerate(SP_TYPES) for _ in _BLOCKS[t]], dtype=np.int64
)
STATE_NAME: tuple[str, ...] = tuple(s for t in SP_TYPES for s in _BLOCKS[t])
SP_REGION_STATES: np.ndarray = np.array(
    [state(t, s) for t, names in _SP_REGION.items() for s in names], dtype=np.int64
)
IS_SP_REGION: np.ndarray = np.isin(np.arange(NUM_STATES), SP_REGION_STATES)


def _edges(sp_type: str) -> list[tuple[str, str]]:
    tail = [("I", "I"), ("M", "M"), ("O", "O"), ("I", "M"), ("M", "I"), ("M", "O"), ("O", "M")]
    head = {
        "NO_SP": [],
        "SP": [("N", "N"), ("N", "H"), ("H", "H"), ("H", "C"), ("C", "C"), ("C", "O")],
        "LIPO": [
            ("N", "N"),
            ("N", "H"),
            ("H", "H"),
            ("H", "CS"),
            ("CS", "CS"),
            ("CS", "C1"),
            ("C1", "O"),
        ],
        "TAT": [
            ("N", "N"),
            ("N", "RR"),
            ("RR", "RR"),
            ("RR", "N"),
            ("N", "H"),
            ("H", "H"),
            ("H", "C"),
            ("C", "C"),
            ("C", "O"),
        ],
        "TATLIPO": [
            ("N", "N"),
            ("N", "RR"),
            ("RR", "RR"),
            ("RR", "N"),
            ("N", "H"),
            ("H", "H"),
            ("H", "CS"),
            ("CS", "CS"),
            ("CS", "C1"),
            ("C1", "O"),
        ],
        "PILIN": [
            ("P", "P"),
            ("P", "CS"),
            ("CS", "CS"),
            ("CS", "H"),
            ("H", "H"),
            ("H", "O"),
            ("H", "I"),
        ],
    }[sp_type]
    return head + tail


def allowed_transitions() -> np.ndarray:
    """Boolean (37, 37): allowed[i, j] is True when state j may follow state i."""
    allowed = np.zeros((NUM_STATES, NUM_STATES), dtype=bool)
    for t in SP_TYPES:
        for a, b in _edges(t):
            allowed[state(t, a), state(t, b)] = True
    return allowed


def allowed_starts() -> np.ndarray:
    """Boolean (37,): states a protein may start in (NO_SP I/O and each SP's first state)."""
    starts = np.zeros(NUM_STATES, dtype=bool)
    starts[[state("NO_SP", "I"), state("NO_SP", "O")]] = True
    for t, names in _SP_REGION.items():
        starts[state(t, names[0])] = True
    return starts


def allowed_ends() -> np.ndarray:
    """Boolean (37,): states a window may end in (the I/M/O states of every block).

    SignalP 6.0 leaves Sec/SPI's I/M/O out of the allowed ends; we allow them, since a Sec/SPI
    protein's mature part ends like any other.
    """
    ends = np.zeros(NUM_STATES, dtype=bool)
    for t in SP_TYPES:
        for s in ("I", "M", "O"):
            ends[state(t, s)] = True
    return ends


ALLOWED = allowed_transitions()
STARTS = allowed_starts()
ENDS = allowed_ends()


def organism_state_mask(organism: str) -> np.ndarray:
    """Boolean (37,): the states possible for an organism group.

    SignalP 6.0's rule: eukaryotes have only NO_SP and Sec/SPI; every other group keeps all.
    """
    if organism not in ORGANISMS:
        raise ValueError(f"unknown organism {organism!r}; expected one of {', '.join(ORGANISMS)}")
    if organism == "eukarya":
        return np.isin(STATE_TYPE, [SP_TYPES.index("NO_SP"), SP_TYPES.index("SP")])
    return np.ones(NUM_STATES, dtype=bool)


ORGANISMS: tuple[str, ...] = ("other", "eukarya", "archaea", "gram_positive", "gram_negative")
# SignalP 6.0 header kingdoms -> our organism names.
KINGDOM_TO_ORGANISM: dict[str, str] = {
    "EUKARYA": "eukarya",
    "ARCHAEA": "archaea",
    "POSITIVE": "gram_positive",
    "NEGATIVE": "gram_negative",
}


# ---------------------------------------------------------------------------------------------
# Paths: cleavage site and regions. One definition, used by training metrics and prediction.


def cleavage_site(path: np.ndarray | list[int]) -> int | None:
    """The cleavage site of a state path: the SP length (1-based index of the last SP residue).

    None when the path does not start in a signal peptide.
    """
    path = np.asarray(path)
    if len(path) == 0 or not IS_SP_REGION[path[0]]:
        return None
    outside = np.flatnonzero(~IS_SP_REGION[path])
    return int(outside[0]) if len(outside) else len(path)


def path_type(path: np.ndarray | list[int]) -> str:
    """The SP type of the block a (grammatical) path runs in."""
    return SP_TYPES[int(STATE_TYPE[np.asarray(path)[0]])] if len(path) else "NO_SP"


@dataclass(frozen=True)
class Region:
    """A region of the signal peptide, 1-based inclusive protein coordinates."""

    name: str  # "n", "h" or "c"
    start: int
    end: int


def sp_regions(path: np.ndarray | list[int]) -> list[Region]:
    """The n/h/c regions of the signal peptide on a path (empty when there is no SP)."""
    cs = cleavage_site(path)
    if cs is None:
        return []
    regions: list[Region] = []
    for pos in range(cs):
        name = _REGION_OF_STATE.get(STATE_NAME[int(path[pos])])
        if name is None:
            continue
        if regions and regions[-1].name == name and regions[-1].end == pos:
            regions[-1] = Region(name, regions[-1].start, pos + 1)
        else:
            regions.append(Region(name, pos + 1, pos + 1))
    return regions


# ---------------------------------------------------------------------------------------------
# Training labels: per-residue letters -> (L, 37) boolean bitmap of allowed states.

# Kyte & Doolittle (1982) hydropathy index.
_KYTE_DOOLITTLE: dict[str, float] = {
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
        sum(_KYTE_DOOLITTLE.get(a, 0.0) for a in sequence[s : s + _HYDRO_WINDOW])
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
    for name in _SP_REGION[sp_type]:
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


def has_allowed_path(bitmap: np.ndarray) -> bool:
    """True when some grammatical path visits only allowed states of `bitmap` (L, 37)."""
    reach = STARTS & bitmap[0]
    for row in bitmap[1:]:
        reach = (reach @ ALLOWED) & row
        if not reach.any():
            return False
    return bool((reach & ENDS).any())


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
    bad = set(labels) - set("SLTPIMO")
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
