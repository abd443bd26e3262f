"""The SignalP 6.0 region grammar: 37 CRF states, allowed transitions, region labels.

This module is the single definition of the states, of which transitions are allowed, of how
per-residue letters (S, L, T, P, I, M, O) become sets of allowed states, and of what a cleavage
site and the n/h/c regions are on a state path. Training (the torch CRF) and prediction (the
numpy decoder) both read it. It imports numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from peftsp import tokens

# Type order used everywhere: probabilities, ids, tables.
SP_TYPES: tuple[str, ...] = ("NO_SP", "SP", "LIPO", "TAT", "TATLIPO", "PILIN")
# The names biologists use for the types (SignalP 6.0's), in SP_TYPES order.
TYPE_NAMES: dict[str, str] = {
    "NO_SP": "Other",
    "SP": "Sec/SPI",
    "LIPO": "Sec/SPII",
    "TAT": "Tat/SPI",
    "TATLIPO": "Tat/SPII",
    "PILIN": "Sec/SPIII",
}
# Column names of SignalP 6.0's prediction_results.txt, in SP_TYPES order.
TYPE_COLUMNS: tuple[str, ...] = ("OTHER", *(f"{t}({TYPE_NAMES[t]})" for t in SP_TYPES[1:]))
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
SP_REGION: dict[str, tuple[str, ...]] = {
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
    [state(t, s) for t, names in SP_REGION.items() for s in names], dtype=np.int64
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
    for t, names in SP_REGION.items():
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


def has_allowed_path(bitmap: np.ndarray) -> bool:
    """True when some grammatical path visits only allowed states of `bitmap` (L, 37)."""
    reach = STARTS & bitmap[0]
    for row in bitmap[1:]:
        reach = (reach @ ALLOWED) & row
        if not reach.any():
            return False
    return bool((reach & ENDS).any())


# ---------------------------------------------------------------------------------------------
# Sequence rules: near-invariants of the SignalP 6.0 data, applied identically in training
# (to the emissions before the CRF) and in decoding (to the ONNX emissions), when a model is
# trained with them. Measured on train_set.fasta: all 1,648 Sec/SPII and Tat/SPII records have
# Cys right after the cleavage site; 397 of 398 Tat records carry an [RK]R motif in the SP; no
# SP is shorter than 4 (Sec/SPIII), 7 (Sec/SPI), 11 (Sec/SPII) or 21 (Tat) residues.

# Shortest signal peptide allowed per type, a little below the shortest in the data.
MIN_SP_LENGTH: dict[str, int] = {"SP": 5, "LIPO": 8, "TAT": 15, "TATLIPO": 15, "PILIN": 3}
_CYS, _ARG, _LYS = (tokens.ALPHABET.index(a) for a in "CRK")
# The states of each SP block that lie after the signal peptide (the mature protein).
_MATURE_STATES: dict[str, np.ndarray] = {
    t: np.array([state(t, s) for s in _BLOCKS[t] if s not in SP_REGION[t]]) for t in SP_REGION
}


def sequence_mask(residues: np.ndarray) -> np.ndarray:
    """(B, L, 37) bool: the states each residue may take given the sequence.

    residues (B, L) are ESM-2 token ids of the residues (no <cls>). The rules: a lipoprotein's
    first mature residue (C1) is Cys; the Tat RR state sits only on an [RK]R motif, and a Tat
    h-region starts only after the first such motif, so every Tat SP carries one; and no SP is
    shorter than MIN_SP_LENGTH. Padding positions are left unconstrained.
    """
    residues = np.asarray(residues)
    batch, length = residues.shape
    mask = np.ones((batch, length, NUM_STATES), dtype=bool)
    for sp_type, shortest in MIN_SP_LENGTH.items():
        mask[:, :shortest, _MATURE_STATES[sp_type]] = False
    # starts_motif[b, i]: residues i and i + 1 are [RK]R (never at the last position, so a
    # batch of 1-residue proteins still has a column to search).
    starts_motif = np.zeros((batch, length), dtype=bool)
    starts_motif[:, :-1] = np.isin(residues[:, :-1], (_ARG, _LYS)) & (residues[:, 1:] == _ARG)
    in_motif = starts_motif.copy()
    in_motif[:, 1:] |= starts_motif[:, :-1]
    has_motif = starts_motif.any(axis=1)
    motif_end = np.where(has_motif, starts_motif.argmax(axis=1) + 1, length)
    after_motif = np.arange(length)[None, :] > motif_end[:, None]
    is_cys = residues == _CYS
    for sp_type in ("LIPO", "TATLIPO"):
        mask[:, :, state(sp_type, "C1")] &= is_cys
    for sp_type in ("TAT", "TATLIPO"):
        mask[:, :, state(sp_type, "RR")] &= in_motif
        mask[:, :, state(sp_type, "H")] &= after_motif
    return mask
