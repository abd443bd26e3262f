"""CRF decoding in numpy: marginals, type probabilities, Viterbi path, cleavage site, regions.

Used by prediction (on ONNX emissions) and by training-time evaluation (on PyTorch emissions),
so both decode the same way. Vectorised over the batch. No torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from peftsp.grammar import Region


@dataclass
class Prediction:
    """Everything reported for one protein."""

    id: str  # first word of the FASTA header
    header: str  # the whole header line without '>'
    sequence: str  # the full cleaned sequence (uppercase), not truncated to the window
    sp_type: str  # one of grammar.SP_TYPES
    probabilities: tuple[float, ...]  # 6 type probabilities in grammar.SP_TYPES order
    cs: int | None  # cleavage site = SP length (cleavage between cs and cs+1); None: no SP
    cs_probability: float | None  # posterior probability of cleavage exactly after residue cs
    regions: list[Region] = field(default_factory=list)  # n/h/c regions, 1-based inclusive
    notes: list[str] = field(default_factory=list)  # input normalisations applied

    @property
    def length(self) -> int:
        return len(self.sequence)

    @property
    def probability(self) -> float:
        """Probability of the predicted type."""
        from peftsp.grammar import SP_TYPES

        return self.probabilities[SP_TYPES.index(self.sp_type)]
