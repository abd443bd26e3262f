"""Helpers shared by the workflow tests (tests/test_workflow_*.py)."""

from __future__ import annotations

import random
from pathlib import Path

AMINO = "ACDEFGHIKLMNPQRSTVWY"
SIGNAL = "MKKTAIAIAVALAGFATVAQA"  # a Sec/SPI-like N-terminus


def make_fasta(path: Path, count: int, seed: int = 0, newline: str = "\n") -> Path:
    """`count` random proteins, some with an SP-like start, some lower case, wrapped at 60."""
    rng = random.Random(seed)
    records = []
    for i in range(count):
        body = "".join(rng.choice(AMINO) for _ in range(rng.randint(15, 130)))
        sequence = SIGNAL + body if i % 3 == 0 else "M" + body
        if i % 5 == 4:
            sequence = sequence.lower()
        lines = [f">prot{i} protein {i} of a test proteome"]
        lines += [sequence[j : j + 60] for j in range(0, len(sequence), 60)]
        records.append(newline.join(lines) + newline)
    path.write_bytes("".join(records).encode())
    return path


def tree(root: Path) -> dict[str, bytes]:
    """Every file under root (relative path -> bytes)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}
