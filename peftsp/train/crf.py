"""The region CRF for training: pytorch-crf with the grammar's constraints built in.

Disallowed transitions, starts and ends are masked through a parametrization, so every
pytorch-crf routine (log-partition, Viterbi) and every exported parameter sees the same
constrained scores as the numpy decoder, and the masked entries never receive gradient.
The numerator of the loss is a partial-label likelihood: the log-sum over all grammatical
paths that stay inside each residue's allowed states (labels.region_bitmap).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize
from torchcrf import CRF

from peftsp import grammar, tokens


class _Masked(nn.Module):
    """Parametrization: entries outside `allowed` read as grammar.DISALLOWED_SCORE."""

    def __init__(self, allowed: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("allowed", torch.as_tensor(allowed, dtype=torch.bool))

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        return scores.masked_fill(~self.allowed, grammar.DISALLOWED_SCORE)


class RegionCRF(CRF):
    """A 37-state linear-chain CRF constrained by the SignalP 6.0 region grammar."""

    def __init__(self) -> None:
        super().__init__(grammar.NUM_STATES, batch_first=True)
        parametrize.register_parametrization(self, "transitions", _Masked(grammar.ALLOWED))
        parametrize.register_parametrization(self, "start_transitions", _Masked(grammar.STARTS))
        parametrize.register_parametrization(self, "end_transitions", _Masked(grammar.ENDS))

    def log_partition(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """log Z per sequence. emissions (B, L, K), mask (B, L) bool with mask[:, 0] true."""
        return self._compute_normalizer(emissions.transpose(0, 1), mask.transpose(0, 1))

    def partial_log_likelihood(
        self, emissions: torch.Tensor, allowed: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """log P(path stays in `allowed` (B, L, K)) per sequence."""
        log_z = self.log_partition(emissions, mask)
        inside = emissions.masked_fill(~allowed, grammar.DISALLOWED_SCORE)
        return self.log_partition(inside, mask) - log_z

    def marginals(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Posterior state probabilities (B, L, K), differentiable (d log Z / d emissions)."""
        with torch.enable_grad():
            if not emissions.requires_grad:
                emissions = emissions.detach().requires_grad_(True)
            log_z = self.log_partition(emissions, mask)
            (grad,) = torch.autograd.grad(log_z.sum(), emissions, create_graph=True)
        return grad

    def numpy_parameters(self) -> dict[str, np.ndarray]:
        """The constrained scores as float32 arrays, as the numpy decoder and model.json use."""
        with torch.no_grad():
            return {
                "transitions": self.transitions.detach().cpu().numpy().astype(np.float32),
                "start": self.start_transitions.detach().cpu().numpy().astype(np.float32),
                "end": self.end_transitions.detach().cpu().numpy().astype(np.float32),
            }


# Region groups of the composition regulariser (SignalP 6.0): n, h and c states of all types.
_N_STATES = [grammar.state(t, "N") for t in ("SP", "LIPO", "TAT", "TATLIPO")]
_H_STATES = [grammar.state(t, "H") for t in ("SP", "LIPO", "TAT", "TATLIPO", "PILIN")]
_C_STATES = [grammar.state(t, "C") for t in ("SP", "TAT")]
_NH_TYPES = [grammar.SP_TYPES.index(t) for t in ("SP", "LIPO")]
_HC_TYPES = [grammar.SP_TYPES.index(t) for t in ("SP", "TAT")]
# ESM-2 token ids of the 20 standard amino acids (L=4 ... C=23), all of them.
_AMINO_ACID_IDS = torch.as_tensor(tokens.AMINO_ACID_IDS)


def region_composition_penalty(
    marginals: torch.Tensor, residue_tokens: torch.Tensor, mask: torch.Tensor, types: torch.Tensor
) -> torch.Tensor:
    """Mean cosine similarity of n/h and h/c amino-acid compositions (lower = distinct regions).

    marginals (B, L, K); residue_tokens (B, L) ESM-2 ids of the residues; mask (B, L);
    types (B,) true SP type ids. cos(n, h) counts for Sec/SPI and Sec/SPII sequences,
    cos(h, c) for Sec/SPI and Tat/SPI; other sequences contribute zero (batch mean).
    """
    onehot = (residue_tokens.unsqueeze(-1) == _AMINO_ACID_IDS.to(residue_tokens.device)).to(
        marginals.dtype
    ) * mask.unsqueeze(-1)

    def composition(states: list[int]) -> torch.Tensor:
        weight = marginals[:, :, states].sum(-1)  # (B, L)
        counts = torch.einsum("bl,bla->ba", weight, onehot)
        return counts / counts.sum(-1, keepdim=True).clamp_min(1e-8)

    n, h, c = composition(_N_STATES), composition(_H_STATES), composition(_C_STATES)
    cos_nh = nn.functional.cosine_similarity(n, h, dim=-1, eps=1e-8)
    cos_hc = nn.functional.cosine_similarity(h, c, dim=-1, eps=1e-8)
    use_nh = torch.isin(types, torch.tensor(_NH_TYPES, device=types.device))
    use_hc = torch.isin(types, torch.tensor(_HC_TYPES, device=types.device))
    return (cos_nh * use_nh).mean() + (cos_hc * use_hc).mean()
