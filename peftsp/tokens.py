"""ESM-2 tokens: fair-esm's alphabet ids and a vectorised batch encoder.

The ids are those of fair-esm's `Alphabet.from_architecture("ESM-1b")`, which every ESM-2 model
uses. Encoding is a 256-entry lookup table applied to the window-truncated sequences joined into
one byte string, instead of fair-esm's per-character Python loop over whole proteins. Imports
numpy only.
"""

from __future__ import annotations

import numpy as np

SPECIALS: tuple[str, ...] = ("<cls>", "<pad>", "<eos>", "<unk>")
AMINO_ACIDS = "LAGVSERTIDPKQNFYMHWC"  # the 20 standard amino acids, ids 4..23
NONSTANDARD = "XBUZO"  # unknown, Asx, selenocysteine, Glx, pyrrolysine: ids 24..28
# Every token in id order; <null_1> pads the vocabulary to a multiple of 8.
ALPHABET: tuple[str, ...] = (*SPECIALS, *AMINO_ACIDS, *NONSTANDARD, ".", "-", "<null_1>", "<mask>")
CLS, PAD, EOS, UNK = range(len(SPECIALS))
MASK = ALPHABET.index("<mask>")
# The residue letters a cleaned protein sequence may hold.
RESIDUES = AMINO_ACIDS + NONSTANDARD
AMINO_ACID_IDS: np.ndarray = np.arange(len(SPECIALS), len(SPECIALS) + len(AMINO_ACIDS))


def _lookup_table() -> np.ndarray:
    table = np.full(256, UNK, dtype=np.int64)
    for index, token in enumerate(ALPHABET):
        if len(token) == 1:
            table[ord(token)] = index
    return table


# Byte value -> token id; anything outside the alphabet (lower case, J, '*') is <unk>.
LOOKUP: np.ndarray = _lookup_table()


def residue_positions(ids):
    """Where token rows (numpy or torch) hold residues: not <cls>, <eos> or padding."""
    return (ids != CLS) & (ids != EOS) & (ids != PAD)


def encode(sequences: list[str], window: int = 70) -> tuple[np.ndarray, np.ndarray]:
    """Token ids (B, T) int64 and residue counts (B,) int64 for a batch of sequences.

    Row b is <cls>, the first `window` residues of sequence b, <eos>, then <pad> up to the
    longest row; its count is min(len, window). Characters outside the alphabet become <unk>.
    """
    kept = [s[:window] for s in sequences]
    lengths = np.array([len(s) for s in kept], dtype=np.int64)
    width = int(lengths.max(initial=0)) + 2
    ids = np.full((len(kept), width), PAD, dtype=np.int64)
    ids[:, 0] = CLS
    # One character per byte: a non-ASCII character becomes '?' (-> <unk>), never several bytes.
    joined = "".join(kept).encode("ascii", errors="replace")
    residues = np.arange(width - 2)[None, :] < lengths[:, None]
    ids[:, 1:-1][residues] = LOOKUP[np.frombuffer(joined, dtype=np.uint8)]
    ids[np.arange(len(kept)), lengths + 1] = EOS
    return ids, lengths
