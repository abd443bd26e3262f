"""Small synthetic SignalP 6.0-style labelled records (no real data in tests).

Each type gets a caricature of its signal: Sec/SPI = charged n-region, leucine-rich h-region,
AxA c-region; lipoproteins end in the lipobox LAGC; Tat SPs carry an RR motif; prepilins a
short leader ending in G then a hydrophobic helix (labelled M); NO_SP proteins are soluble or
start with a transmembrane segment. Deterministic for a given seed.
"""

from __future__ import annotations

import random
from pathlib import Path

KINGDOMS = ("EUKARYA", "NEGATIVE", "POSITIVE", "ARCHAEA")
_MATURE = "DEKNQSTGPRHY"
_HYDRO = "LLLAVIFLLAIV"


def _pick(rng: random.Random, letters: str, n: int) -> str:
    return "".join(rng.choice(letters) for _ in range(n))


def make_record(rng: random.Random, sp_type: str, length: int = 40) -> tuple[str, str]:
    """(sequence, labels) of one synthetic protein of the given type."""
    if sp_type == "NO_SP":
        if rng.random() < 0.3:
            head = _pick(rng, "KRDE", 4) + _pick(rng, _HYDRO, 18)
            seq = head + _pick(rng, _MATURE, length - len(head))
            return seq, "I" * 4 + "M" * 18 + "O" * (length - 22)
        seq = "M" + _pick(rng, _MATURE, length - 1)
        return seq, "I" * length
    if sp_type == "SP":
        sp = "M" + _pick(rng, "KR", 3) + _pick(rng, _HYDRO, 10) + "SGA" + "Q" + "A"
    elif sp_type == "LIPO":
        sp = "M" + _pick(rng, "KR", 3) + _pick(rng, _HYDRO, 10) + "LA" + "G"
    elif sp_type in ("TAT", "TATLIPO"):
        sp = "MS" + "RR" + _pick(rng, "FLT", 3) + _pick(rng, "AGLV", 12)
        sp += "LAG" if sp_type == "TATLIPO" else "AHA"
    elif sp_type == "PILIN":
        sp = "MKAKG"
    else:
        raise ValueError(sp_type)
    letter = {"SP": "S", "LIPO": "L", "TAT": "T", "TATLIPO": "T", "PILIN": "P"}[sp_type]
    if sp_type in ("LIPO", "TATLIPO"):
        rest = "C" + _pick(rng, _MATURE, length - len(sp) - 1)
        return sp + rest, letter * len(sp) + "O" * len(rest)
    if sp_type == "PILIN":
        helix = "FTLIEL" + _pick(rng, _HYDRO, 14)
        rest = helix + _pick(rng, _MATURE, length - len(sp) - len(helix))
        return sp + rest, letter * len(sp) + "M" * len(helix) + "O" * (len(rest) - len(helix))
    rest = _pick(rng, _MATURE, length - len(sp))
    return sp + rest, letter * len(sp) + "O" * len(rest)


def make_dataset(per_type: int = 5, seed: int = 0, partitions: int = 3) -> list[str]:
    """Three-line records (header, sequence, labels) covering every type and kingdom."""
    rng = random.Random(seed)
    lines = []
    index = 0
    for sp_type in ("NO_SP", "SP", "LIPO", "TAT", "TATLIPO", "PILIN"):
        for i in range(per_type):
            kingdom = (
                "EUKARYA" if sp_type in ("NO_SP", "SP") and i % 2 == 0 else (KINGDOMS[1 + i % 3])
            )
            seq, labels = make_record(rng, sp_type, length=rng.choice((36, 40, 48)))
            lines += [f">SYN{index:04d}|{kingdom}|{sp_type}|{index % partitions}", seq, labels]
            index += 1
    return lines


def write_dataset(path: Path, per_type: int = 5, seed: int = 0, partitions: int = 3) -> Path:
    path.write_text("\n".join(make_dataset(per_type, seed, partitions)) + "\n")
    return path
