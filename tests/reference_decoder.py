"""The CRF decoder as it was before the scaled forward-backward (log-sum-exp over (B, 37, 37)
per step, full 37-state Viterbi, per-row Python backtracking): the reference the fast decoder
in peftsp.decoding is checked against (tests/test_decoding.py, bench/decode_speed.py). Not part
of the package.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from peftsp import grammar
from peftsp.grammar import DISALLOWED_SCORE


@dataclass
class Decoded:
    type_probabilities: np.ndarray  # (B, 6)
    types: np.ndarray  # (B,)
    paths: list[np.ndarray]
    cs: list[int | None]
    cs_probabilities: list[float | None]
    posteriors: np.ndarray  # (B, L, 37)
    scores: np.ndarray  # (B,) Viterbi score of each row's path


def _logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    top = x.max(axis=axis, keepdims=True)
    return np.squeeze(top, axis) + np.log(np.exp(x - top).sum(axis=axis))


def _masked_emissions(
    emissions: np.ndarray, lengths: np.ndarray, state_mask: np.ndarray | None
) -> np.ndarray:
    """Float64 emissions with masked-out states at DISALLOWED_SCORE and padding zeroed."""
    em = emissions.astype(np.float64, copy=True)
    if state_mask is not None:
        mask = np.asarray(state_mask, dtype=bool)
        if mask.ndim < 3:  # (37,) or (B, 37): the same states at every position
            mask = np.broadcast_to(mask, (em.shape[0], em.shape[2]))[:, None, :]
        em = np.where(mask, em, em + DISALLOWED_SCORE)
    em[np.arange(em.shape[1])[None, :] >= lengths[:, None]] = 0.0
    return em


def forward_backward(
    em: np.ndarray, lengths: np.ndarray, crf: dict[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Log forward and backward scores (B, L, K) and log Z (B,), batch-vectorised."""
    batch, length, _ = em.shape
    trans = crf["transitions"].astype(np.float64)
    end = crf["end"].astype(np.float64)
    alpha = np.empty_like(em)
    alpha[:, 0] = crf["start"] + em[:, 0]
    for t in range(1, length):
        step = _logsumexp(alpha[:, t - 1, :, None] + trans[None], axis=1) + em[:, t]
        alpha[:, t] = np.where((t < lengths)[:, None], step, alpha[:, t - 1])
    last = lengths - 1
    log_z = _logsumexp(alpha[np.arange(batch), last] + end, axis=1)
    beta = np.zeros_like(em)
    beta[np.arange(batch), last] = end
    for t in range(length - 2, -1, -1):
        step = _logsumexp(trans[None] + (em[:, t + 1] + beta[:, t + 1])[:, None, :], axis=2)
        beta[:, t] = np.where((t < last)[:, None], step, beta[:, t])
    return alpha, beta, log_z


def viterbi(em: np.ndarray, lengths: np.ndarray, crf: dict[str, np.ndarray]):
    """Best path per row and its score, batch-vectorised. Returns (paths, scores)."""
    batch, length, _ = em.shape
    trans = crf["transitions"].astype(np.float64)
    score = crf["start"] + em[:, 0]
    back = np.zeros(em.shape, dtype=np.int64)
    rows = np.arange(batch)
    final = np.full_like(score, -np.inf)
    for t in range(length):
        if t > 0:
            cand = score[:, :, None] + trans[None]
            back[:, t] = cand.argmax(axis=1)
            step = cand.max(axis=1) + em[:, t]
            score = np.where((t < lengths)[:, None], step, score)
        at_end = t == lengths - 1
        final[at_end] = score[at_end] + crf["end"]
    best = final.argmax(axis=1)
    paths = []
    for row in range(batch):
        path = np.empty(lengths[row], dtype=np.int64)
        path[-1] = best[row]
        for t in range(lengths[row] - 1, 0, -1):
            path[t - 1] = back[row, t, path[t]]
        paths.append(path)
    return paths, final[rows, best]


def _cleavage_probability(
    alpha: np.ndarray, beta: np.ndarray, log_z: float, em: np.ndarray, trans: np.ndarray, cs: int
) -> float:
    """P(last SP residue is exactly `cs`): pairwise marginal of leaving the SP after cs."""
    inside, outside = grammar.IS_SP_REGION, ~grammar.IS_SP_REGION
    pair = alpha[cs - 1][:, None] + trans + (em[cs] + beta[cs])[None, :] - log_z
    return float(np.exp(pair[np.ix_(inside, outside)]).sum())


def decode_reference(
    emissions: np.ndarray,
    lengths: np.ndarray,
    crf: dict[str, np.ndarray],
    state_mask: np.ndarray | None = None,
) -> Decoded:
    """Type probabilities, predicted type, Viterbi path and cleavage site for a batch.

    emissions (B, L, 37) with row b valid up to lengths[b] (>= 1); crf holds the constrained
    "transitions", "start", "end" scores; state_mask (37,), (B, 37) or (B, L, 37) removes
    states (e.g. the eukarya rule). The type is the argmax of the marginals averaged over the
    residues and summed per type block; the path is the Viterbi path within that type's block,
    so the reported cleavage site always belongs to the reported type. When no grammatical path of
    that type fits (e.g. a protein too short for an SP), the type is kept with no CS.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    em = _masked_emissions(emissions, lengths, state_mask)
    alpha, beta, log_z = forward_backward(em, lengths, crf)
    posterior = np.exp(alpha + beta - log_z[:, None, None])
    valid = np.arange(em.shape[1])[None, :] < lengths[:, None]
    mean = (posterior * valid[..., None]).sum(1) / lengths[:, None]
    type_probs = np.zeros((len(lengths), len(grammar.SP_TYPES)))
    np.add.at(type_probs.T, grammar.STATE_TYPE, mean.T)
    types = type_probs.argmax(axis=1)
    in_type = grammar.STATE_TYPE[None, :] == types[:, None]
    paths, scores = viterbi(np.where(in_type[:, None, :], em, em + DISALLOWED_SCORE), lengths, crf)
    trans = crf["transitions"].astype(np.float64)
    cs_list: list[int | None] = []
    cs_probs: list[float | None] = []
    for row, path in enumerate(paths):
        cs = grammar.cleavage_site(path) if scores[row] > DISALLOWED_SCORE / 2 else None
        if cs is not None and cs >= lengths[row]:
            cs = None
        cs_list.append(cs)
        cs_probs.append(
            None
            if cs is None
            else _cleavage_probability(alpha[row], beta[row], log_z[row], em[row], trans, cs)
        )
    return Decoded(type_probs, types, paths, cs_list, cs_probs, posterior, scores)
