"""CRF decoding in numpy: marginals, type probabilities, Viterbi path, cleavage site, regions.

Used by prediction (on ONNX emissions) and by training-time evaluation (on PyTorch emissions),
so both decode the same way. Vectorised over the batch. No torch.

Forward-backward runs in probability space: exp(transitions) is taken once per batch, each step
propagates the previous step's distribution along the allowed transitions only (at most 3 per
state in the SignalP 6.0 grammar) and is normalised, keeping its scale factor in log form. Rows
that this cannot represent (no path left under the state masks, or every surviving path
underflowing in one step under extreme scores) are decoded in log space instead, so every row
gets the finite answer of the log-space recursion. The Viterbi path is searched only within the
block of the predicted type (3 to 8 states instead of 37), for all rows at once.

Every operation is row-wise (elementwise products, gathers, reductions along one row), with no
matrix product whose rounding depends on the batch, so a protein decodes to the same bits
whatever else is in its batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from peftsp import grammar
from peftsp.grammar import DISALLOWED_SCORE, Region

# A step whose total weight falls below this is left to the log-space recursion: the
# probability-space one would lose precision in subnormal numbers, or divide by zero.
_TINY = 1e-200


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
    # SignalP 6.0's CS probability: the posterior marginal of the Viterbi path's state at
    # residue cs (the last SP residue). None without a CS.
    cs_marginal: float | None = None
    # Per-residue posterior marginals (min(length, window), 37) float32, only when requested.
    marginals: np.ndarray | None = None

    @property
    def length(self) -> int:
        return len(self.sequence)

    @property
    def probability(self) -> float:
        """Probability of the predicted type."""
        return self.probabilities[grammar.SP_TYPES.index(self.sp_type)]


@dataclass
class Decoded:
    """Decoder output for a batch (arrays and lists indexed by batch row)."""

    type_probabilities: np.ndarray  # (B, 6) float64
    types: np.ndarray  # (B,) int, index into grammar.SP_TYPES
    paths: list[np.ndarray]  # Viterbi state path per row, length = that row's length
    cs: list[int | None]  # cleavage site per row
    cs_probabilities: list[float | None]  # P(the SP ends exactly at cs)
    cs_marginals: list[float | None]  # posterior of the path's state at residue cs
    regions: list[list[Region]]  # n/h/c regions of the path's SP ([] without a CS)
    marginals: list[np.ndarray] | None = None  # (length, 37) float32 per row, when requested


@dataclass
class _Tables:
    """A CRF's scores, arranged for the probability-space recursions and the block Viterbi."""

    trans: np.ndarray  # (K, K) float64 log scores
    start: np.ndarray  # (K,)
    end: np.ndarray  # (K,)
    exp_trans: np.ndarray  # (K, K) exp(trans - max trans)
    exp_start: np.ndarray  # (K,) exp(start - max start)
    exp_end: np.ndarray  # (K,) exp(end - max end)
    into: tuple[np.ndarray, np.ndarray]  # sources and weights of each state's incoming edges
    out_of: tuple[np.ndarray, np.ndarray]  # targets and weights of each state's outgoing edges
    block_states: np.ndarray  # (6, W) state index of each block position (padding: 0)
    block_trans: np.ndarray  # (6, W, W) log transitions inside each block (padding: -inf)
    block_start: np.ndarray  # (6, W)
    block_end: np.ndarray  # (6, W)
    block_open: np.ndarray  # (6, W) bool: a real state (not padding)


def _edges(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column-wise non-zero entries of `weights` (K, K) as (d, K) sources and weights, d the
    largest column count: sum_k x[:, src[k, j]] * w[k, j] == (x @ weights)[:, j] (padding
    entries have weight 0)."""
    nonzero = weights > 0
    depth = max(1, int(nonzero.sum(axis=0).max()))
    src = np.argsort(~nonzero, axis=0, kind="stable")[:depth]  # non-zero rows first, in order
    w = np.take_along_axis(weights, src, axis=0) * np.take_along_axis(nonzero, src, axis=0)
    return src, w


def _propagate(x: np.ndarray, edges: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """x (n, K) times the matrix `edges` was made from, one row at a time (no BLAS, whose
    rounding would depend on the batch)."""
    src, w = edges
    out = x.take(src[0], axis=1)  # C-ordered, unlike x[:, src[0]]: sums run along rows
    out *= w[0]
    for k in range(1, len(src)):
        out += x.take(src[k], axis=1) * w[k]
    return out


def _tables(crf: dict[str, np.ndarray]) -> _Tables:
    trans = np.asarray(crf["transitions"], dtype=np.float64)
    start = np.asarray(crf["start"], dtype=np.float64)
    end = np.asarray(crf["end"], dtype=np.float64)
    exp_trans = np.exp(trans - trans.max())
    types = range(len(grammar.SP_TYPES))
    blocks = [np.flatnonzero(np.equal(grammar.STATE_TYPE, t)) for t in types]
    width = max(len(b) for b in blocks)
    block_states = np.zeros((len(blocks), width), dtype=np.intp)
    block_open = np.zeros((len(blocks), width), dtype=bool)
    block_trans = np.full((len(blocks), width, width), -np.inf)
    block_start = np.full((len(blocks), width), -np.inf)
    block_end = np.full((len(blocks), width), -np.inf)
    for t, states in enumerate(blocks):
        n = len(states)
        block_states[t, :n] = states
        block_open[t, :n] = True
        block_trans[t, :n, :n] = trans[np.ix_(states, states)]
        block_start[t, :n] = start[states]
        block_end[t, :n] = end[states]
    return _Tables(
        trans=trans,
        start=start,
        end=end,
        exp_trans=exp_trans,
        exp_start=np.exp(start - start.max()),
        exp_end=np.exp(end - end.max()),
        into=_edges(exp_trans),
        out_of=_edges(exp_trans.T),
        block_states=block_states,
        block_trans=block_trans,
        block_start=block_start,
        block_end=block_end,
        block_open=block_open,
    )


def _state_mask(state_mask: np.ndarray | None, shape: tuple[int, int, int]) -> np.ndarray | None:
    """The mask as a (B, L, K) boolean view: (K,) and (B, K) apply at every position."""
    if state_mask is None:
        return None
    mask = np.asarray(state_mask, dtype=bool)
    if mask.ndim == 1:
        mask = mask[None, None, :]
    elif mask.ndim == 2:
        mask = mask[:, None, :]
    return np.broadcast_to(mask, shape)


@dataclass
class _Marginals:
    """Forward-backward of a batch whose rows are sorted by decreasing length."""

    posterior: np.ndarray  # (B, L, K) marginals, zero past each row's length
    log_z: np.ndarray  # (B,)
    alpha: np.ndarray  # (B, L, K) scaled forward distributions (probability-space rows)
    beta: np.ndarray  # (B, L, K) scaled backward distributions (probability-space rows)
    weights: np.ndarray  # (B, L, K) exp(emission - per-step max), zero for masked states
    log_rows: dict[int, tuple[np.ndarray, np.ndarray]]  # row -> log alpha, log beta

    def pair_weights(self, row: int, t: int, tab: _Tables, em: np.ndarray) -> np.ndarray:
        """(K, K) non-negative, proportional to P(state t-1 = i, state t = j) in `row`."""
        if row in self.log_rows:
            alpha, beta = self.log_rows[row]
            score = alpha[t - 1][:, None] + tab.trans + (em[row, t] + beta[t])[None, :]
            return np.exp(score - score.max())
        ahead = self.weights[row, t] * self.beta[row, t]
        return self.alpha[row, t - 1][:, None] * tab.exp_trans * ahead[None, :]


@np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore")
def _scaled_forward_backward(
    em: np.ndarray, mask: np.ndarray | None, lengths: np.ndarray, tab: _Tables
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Probability-space forward-backward over rows sorted by decreasing length.

    Returns posterior, log Z, scaled alpha, scaled beta, the emission weights, and a boolean
    per row that is True where the recursion underflowed (those rows' values are not valid).
    """
    batch, length, _ = em.shape
    shown = em if mask is None else np.where(mask, em, -np.inf)
    top = shown.max(axis=2, keepdims=True)
    dead = ~np.isfinite(top[..., 0])  # every state masked at this position
    top[dead] = 0.0
    weights = np.exp(shown - top)
    valid = np.arange(length)[None, :] < lengths[:, None]
    failed = (dead & valid).any(axis=1)
    log_z = top[..., 0].sum(axis=1, where=valid)
    active = [int((lengths > t).sum()) for t in range(length + 1)]  # rows still going at t
    alpha = np.zeros(weights.shape)
    beta = np.zeros(weights.shape)
    scale = np.ones((batch, length))

    alpha[:, 0] = tab.exp_start * weights[:, 0]
    scale[:, 0] = alpha[:, 0].sum(axis=1)
    alpha[:, 0] /= scale[:, 0, None]
    for t in range(1, length):
        n = active[t]
        step = _propagate(alpha[:n, t - 1], tab.into)
        step *= weights[:n, t]
        scale[:n, t] = step.sum(axis=1)
        alpha[:n, t] = step / scale[:n, t, None]
    last = np.arange(batch), lengths - 1
    closing = (alpha[last] * tab.exp_end).sum(axis=1)
    failed |= ~(closing >= _TINY) | ~(scale >= _TINY).all(axis=1, where=valid)
    log_z += (
        np.log(scale).sum(axis=1, where=valid)
        + np.log(np.where(failed, 1.0, closing))
        + tab.start.max()
        + (lengths - 1) * tab.trans.max()
        + tab.end.max()
    )

    ends = tab.exp_end / tab.exp_end.sum()
    for t in range(length - 1, -1, -1):
        n = active[t + 1]
        beta[n : active[t], t] = ends  # rows whose last residue is t
        if n:
            step = _propagate(weights[:n, t + 1] * beta[:n, t + 1], tab.out_of)
            total = step.sum(axis=1)
            failed[:n] |= ~(total >= _TINY)
            beta[:n, t] = step / total[:, None]

    posterior = alpha * beta
    norm = posterior.sum(axis=2)
    failed |= ~(norm >= _TINY).all(axis=1, where=valid)
    posterior /= np.where(valid, norm, 1.0)[..., None]
    return posterior, log_z, alpha, beta, weights, failed


def _log_forward_backward(
    em: np.ndarray, length: int, tab: _Tables
) -> tuple[np.ndarray, np.ndarray, float]:
    """Log-space forward-backward of one row (em (length, K), masked states penalised)."""

    def logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
        top = x.max(axis=axis, keepdims=True)
        return np.squeeze(top, axis) + np.log(np.exp(x - top).sum(axis=axis))

    alpha = np.empty((length, em.shape[1]))
    beta = np.empty_like(alpha)
    alpha[0] = tab.start + em[0]
    for t in range(1, length):
        alpha[t] = logsumexp(alpha[t - 1][:, None] + tab.trans, axis=0) + em[t]
    beta[-1] = tab.end
    for t in range(length - 2, -1, -1):
        beta[t] = logsumexp(tab.trans + (em[t + 1] + beta[t + 1])[None, :], axis=1)
    return alpha, beta, float(logsumexp(alpha[-1] + tab.end, axis=0))


def _penalised(em: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Log emissions with masked states at DISALLOWED_SCORE below their score."""
    return em if mask is None else np.where(mask, em, em + DISALLOWED_SCORE)


def _marginals(
    em: np.ndarray, mask: np.ndarray | None, lengths: np.ndarray, tab: _Tables
) -> _Marginals:
    """Forward-backward of rows sorted by decreasing length: probability space, and log space
    for the rows that underflow there."""
    posterior, log_z, alpha, beta, weights, failed = _scaled_forward_backward(
        em, mask, lengths, tab
    )
    log_rows = {}
    for row in np.flatnonzero(failed):
        n = int(lengths[row])
        row_em = _penalised(em[row, :n], None if mask is None else mask[row, :n])
        a, b, z = _log_forward_backward(row_em, n, tab)
        log_rows[int(row)] = (a, b)
        posterior[row] = 0.0
        posterior[row, :n] = np.exp(a + b - z)
        log_z[row] = z
    return _Marginals(posterior, log_z, alpha, beta, weights, log_rows)


def _block_viterbi(
    em: np.ndarray, lengths: np.ndarray, types: np.ndarray, tab: _Tables
) -> tuple[np.ndarray, np.ndarray]:
    """Best path inside each row's type block, rows sorted by decreasing length.

    em (B, L, K) log emissions (masked states penalised). Returns the paths (B, L) as state
    indices (valid up to each row's length) and their scores (B,).
    """
    batch, length, _ = em.shape
    rows = np.arange(batch)
    states = tab.block_states[types]  # (B, W)
    width = states.shape[1]
    local = np.take_along_axis(em, states[:, None, :], axis=2)
    local[~np.broadcast_to(tab.block_open[types][:, None, :], local.shape)] = -np.inf
    trans = tab.block_trans[types]  # (B, W, W)
    score = tab.block_start[types] + local[:, 0]
    back = np.broadcast_to(np.arange(width), (batch, length, width)).copy()
    for t in range(1, length):
        n = int((lengths > t).sum())
        cand = score[:n, :, None] + trans[:n]
        back[:n, t] = cand.argmax(axis=1)
        score[:n] = cand.max(axis=1) + local[:n, t]
    final = score + tab.block_end[types]
    path = np.empty((batch, length), dtype=np.intp)
    path[:, -1] = final.argmax(axis=1)
    for t in range(length - 1, 0, -1):  # past a row's end, back[] keeps the state
        path[:, t - 1] = back[rows, t, path[:, t]]
    return np.take_along_axis(states, path, axis=1), final[rows, path[:, -1]]


def marginals(
    emissions: np.ndarray,
    lengths: np.ndarray,
    crf: dict[str, np.ndarray],
    state_mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Posterior marginals (B, L, 37) (zero past each row's length) and log Z (B,)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-lengths, kind="stable")
    em = np.asarray(emissions, dtype=np.float64)[order]
    mask = _state_mask(state_mask, em.shape)
    fb = _marginals(em, None if mask is None else mask[order], lengths[order], _tables(crf))
    inverse = np.argsort(order)
    return fb.posterior[inverse], fb.log_z[inverse]


def decode(
    emissions: np.ndarray,
    lengths: np.ndarray,
    crf: dict[str, np.ndarray],
    state_mask: np.ndarray | None = None,
    keep_marginals: bool = False,
) -> Decoded:
    """Type probabilities, predicted type, Viterbi path, cleavage site and regions for a batch.

    emissions (B, L, 37) with row b valid up to lengths[b] (>= 1); crf holds the constrained
    "transitions", "start", "end" scores; state_mask, boolean (37,), (B, 37) or (B, L, 37)
    (anything that broadcasts to (B, L, 37)), removes states: the eukarya rule, sequence rules.
    The type is the argmax of the marginals averaged over the residues and summed per type
    block; the path is the Viterbi path within that type's block, so the reported cleavage site
    always belongs to the reported type. When no grammatical path of that type fits (e.g. a
    protein too short for an SP), the type is kept with no CS. keep_marginals adds each row's
    (length, 37) float32 posterior marginals.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    batch = len(lengths)
    order = np.argsort(-lengths, kind="stable")
    sorted_lengths = lengths[order]
    em = np.asarray(emissions, dtype=np.float64)[order]
    valid = np.arange(em.shape[1])[None, :] < sorted_lengths[:, None]
    em[~valid] = 0.0
    mask = _state_mask(state_mask, em.shape)
    if mask is not None:
        mask = mask[order]
    tab = _tables(crf)

    fb = _marginals(em, mask, sorted_lengths, tab)
    mean = fb.posterior.sum(axis=1) / sorted_lengths[:, None]
    starts = np.flatnonzero(np.diff(grammar.STATE_TYPE, prepend=-1))
    type_probs = np.add.reduceat(mean, starts, axis=1)
    types = type_probs.argmax(axis=1)
    penalised = _penalised(em, mask)
    paths, scores = _block_viterbi(penalised, sorted_lengths, types, tab)

    cs_list: list[int | None] = [None] * batch
    cs_probs: list[float | None] = [None] * batch
    cs_margs: list[float | None] = [None] * batch
    regions: list[list[Region]] = [[] for _ in range(batch)]
    row_paths = []
    inside = np.ix_(grammar.IS_SP_REGION, ~grammar.IS_SP_REGION)
    for row in range(batch):
        n = int(sorted_lengths[row])
        path = paths[row, :n]
        row_paths.append(path)
        cs = grammar.cleavage_site(path) if scores[row] > DISALLOWED_SCORE / 2 else None
        if cs is None or cs >= n:
            continue
        pair = fb.pair_weights(row, cs, tab, penalised)
        cs_list[row] = cs
        cs_probs[row] = float(pair[inside].sum() / pair.sum())
        cs_margs[row] = float(fb.posterior[row, cs - 1, path[cs - 1]])
        regions[row] = grammar.sp_regions(path)

    inverse = np.argsort(order)
    kept = None
    if keep_marginals:
        kept = [fb.posterior[i, : sorted_lengths[i]].astype(np.float32) for i in inverse.tolist()]
    return Decoded(
        type_probabilities=type_probs[inverse],
        types=types[inverse],
        paths=[row_paths[i] for i in inverse],
        cs=[cs_list[i] for i in inverse],
        cs_probabilities=[cs_probs[i] for i in inverse],
        cs_marginals=[cs_margs[i] for i in inverse],
        regions=[regions[i] for i in inverse],
        marginals=kept,
    )
