"""The numpy CRF decoder: equal to the torch CRF (training) and to the previous log-space decoder
(tests/reference_decoder.py), finite on extreme inputs, and the same bits for a protein whatever
its batch."""

import itertools
import warnings

import numpy as np
import pytest
import torch
from reference_decoder import decode_reference

from peftsp import grammar
from peftsp.bundle import DEFAULT_MODEL, load_bundle
from peftsp.decoding import decode, marginals
from peftsp.train.crf import RegionCRF, region_composition_penalty


@pytest.fixture
def crf() -> RegionCRF:
    torch.manual_seed(0)
    return RegionCRF()


@pytest.fixture(scope="module")
def trained_crf() -> dict[str, np.ndarray]:
    """The CRF scores of the embedded default model (learned, not random)."""
    return load_bundle(DEFAULT_MODEL).crf


def _batch(seed: int = 1, lengths=(9, 5, 1, 7), scale: float = 2.0, width: int | None = None):
    rng = np.random.default_rng(seed)
    lengths = np.array(lengths)
    shape = (len(lengths), width or lengths.max(), grammar.NUM_STATES)
    return rng.normal(0, scale, size=shape).astype(np.float32), lengths


def test_constraints_read_as_disallowed_and_get_no_gradient(crf):
    params = crf.numpy_parameters()
    assert np.all(params["transitions"][~grammar.ALLOWED] == grammar.DISALLOWED_SCORE)
    assert np.all(params["start"][~grammar.STARTS] == grammar.DISALLOWED_SCORE)
    assert np.all(params["end"][~grammar.ENDS] == grammar.DISALLOWED_SCORE)
    em, lengths = _batch()
    mask = torch.arange(em.shape[1])[None] < torch.as_tensor(lengths)[:, None]
    crf.log_partition(torch.as_tensor(em), mask).sum().backward()
    grad = crf.parametrizations.transitions.original.grad.numpy()
    assert np.all(grad[~grammar.ALLOWED] == 0) and np.any(grad[grammar.ALLOWED] != 0)


def test_log_partition_and_marginals_match_torch(crf):
    em, lengths = _batch()
    mask = torch.arange(em.shape[1])[None] < torch.as_tensor(lengths)[:, None]
    log_z_torch = crf.log_partition(torch.as_tensor(em, dtype=torch.float64), mask)
    marg_torch = crf.marginals(torch.as_tensor(em, dtype=torch.float64), mask).detach().numpy()
    marg, log_z = marginals(em, lengths, crf.numpy_parameters())
    np.testing.assert_allclose(log_z, log_z_torch.detach().numpy(), rtol=1e-5)
    for row, n in enumerate(lengths):
        np.testing.assert_allclose(marg[row, :n], marg_torch[row, :n], atol=1e-5)
        np.testing.assert_allclose(marg[row, :n].sum(-1), 1.0, atol=1e-9)
        assert np.all(marg[row, n:] == 0)


def test_viterbi_matches_pytorch_crf_and_is_grammatical(crf):
    """Restricted to the block of torch's best path, the block Viterbi finds that path."""
    em, lengths = _batch(seed=3, lengths=(12, 12, 4, 30, 2))
    mask = torch.arange(em.shape[1])[None] < torch.as_tensor(lengths)[:, None]
    expected = crf.decode(torch.as_tensor(em), mask)
    blocks = np.stack([np.equal(grammar.STATE_TYPE, grammar.STATE_TYPE[p[0]]) for p in expected])
    out = decode(em, lengths, crf.numpy_parameters(), blocks)
    for path, want in zip(out.paths, expected, strict=True):
        assert path.tolist() == want
        assert grammar.STARTS[path[0]] and grammar.ENDS[path[-1]]
        assert all(grammar.ALLOWED[a, b] for a, b in itertools.pairwise(path))


def test_partial_likelihood_is_one_when_everything_allowed_and_lower_otherwise(crf):
    em, lengths = _batch()
    emt = torch.as_tensor(em)
    mask = torch.arange(em.shape[1])[None] < torch.as_tensor(lengths)[:, None]
    everything = torch.ones(em.shape, dtype=torch.bool)
    assert torch.allclose(
        crf.partial_log_likelihood(emt, everything, mask), torch.zeros(4), atol=1e-4
    )
    only_no_sp = torch.zeros(em.shape, dtype=torch.bool)
    only_no_sp[..., :3] = True
    partial = crf.partial_log_likelihood(emt, only_no_sp, mask)
    # A 1-residue protein can only be NO_SP (no SP state may end a path): probability 1.
    assert torch.all(partial[lengths > 1] < -1e-3)
    assert partial[lengths == 1].abs().max() < 1e-4


def _emissions_for_path(path: list[int]) -> np.ndarray:
    em = np.full((1, len(path), grammar.NUM_STATES), -8.0, dtype=np.float32)
    em[0, np.arange(len(path)), path] = 8.0
    return em


def test_decode_recovers_a_sec_spi_signal_peptide(crf):
    s = grammar.state
    path = [s("SP", "N")] * 4 + [s("SP", "H")] * 8 + [s("SP", "C")] * 5 + [s("SP", "O")] * 10
    out = decode(
        _emissions_for_path(path), np.array([len(path)]), crf.numpy_parameters(), None, True
    )
    assert grammar.SP_TYPES[out.types[0]] == "SP"
    assert out.cs == [17]
    assert out.paths[0].tolist() == path
    assert 0.9 < out.cs_probabilities[0] <= 1.0
    assert out.type_probabilities[0].sum() == pytest.approx(1.0)
    assert [(r.name, r.start, r.end) for r in out.regions[0]] == [
        ("n", 1, 4),
        ("h", 5, 12),
        ("c", 13, 17),
    ]
    # SignalP 6.0's CS probability: the marginal of the path's state (SP_C) at residue 17.
    marg = out.marginals[0]
    assert marg.shape == (len(path), grammar.NUM_STATES) and marg.dtype == np.float32
    assert out.cs_marginals[0] == pytest.approx(marg[16, s("SP", "C")], abs=1e-6)
    assert 0.9 < out.cs_marginals[0] <= 1.0


def test_eukarya_rule_removes_other_sp_types(crf):
    s = grammar.state
    path = (
        [s("LIPO", "N")] * 3
        + [s("LIPO", "H")] * 8
        + [s("LIPO", "CS")] * 2
        + [s("LIPO", "C1")]
        + [s("LIPO", "O")] * 6
    )
    em = _emissions_for_path(path)
    free = decode(em, np.array([len(path)]), crf.numpy_parameters())
    assert grammar.SP_TYPES[free.types[0]] == "LIPO" and free.cs == [13]
    euk = decode(
        em, np.array([len(path)]), crf.numpy_parameters(), grammar.organism_state_mask("eukarya")
    )
    assert grammar.SP_TYPES[euk.types[0]] in ("NO_SP", "SP")
    assert np.all(euk.type_probabilities[0, 2:] == 0)


def test_sp_type_without_room_for_a_cleavage_site_reports_no_cs(crf):
    em = np.zeros((1, 1, grammar.NUM_STATES), dtype=np.float32)
    em[0, 0, grammar.state("SP", "N")] = 20.0
    assert decode(em, np.array([1]), crf.numpy_parameters()).cs == [None]
    sec_spi = np.equal(grammar.STATE_TYPE, grammar.SP_TYPES.index("SP"))
    out = decode(em, np.array([1]), crf.numpy_parameters(), sec_spi)  # no path at all
    assert grammar.SP_TYPES[out.types[0]] == "SP"
    assert out.cs == [None] and out.cs_probabilities == [None] and out.cs_marginals == [None]
    assert out.regions == [[]] and out.marginals is None


def test_position_masks_are_obeyed():
    """A (B, L, 37) mask: LIPO C1 allowed only at one position moves the cleavage site."""
    flat = {
        "transitions": np.where(grammar.ALLOWED, 0.0, grammar.DISALLOWED_SCORE),
        "start": np.where(grammar.STARTS, 0.0, grammar.DISALLOWED_SCORE),
        "end": np.where(grammar.ENDS, 0.0, grammar.DISALLOWED_SCORE),
    }
    em = np.zeros((2, 30, grammar.NUM_STATES), dtype=np.float32)
    em[:, :, np.equal(grammar.STATE_TYPE, grammar.SP_TYPES.index("LIPO"))] = 3.0
    mask = np.ones(em.shape, dtype=bool)
    c1 = grammar.state("LIPO", "C1")
    mask[0, :, c1] = False
    mask[0, 15, c1] = True  # row 0: C1 only at residue 16
    mask[1, :, c1] = False
    mask[1, 20, c1] = True  # row 1: only at residue 21
    out = decode(em, np.array([30, 30]), flat, mask, keep_marginals=True)
    assert [grammar.SP_TYPES[t] for t in out.types] == ["LIPO", "LIPO"]
    assert out.cs == [15, 20]
    for row, site in enumerate((15, 20)):
        assert out.paths[row][site] == c1 and np.sum(out.paths[row] == c1) == 1
        others = np.delete(np.arange(30), site)
        assert np.all(out.marginals[row][others, c1] == 0)


def _masks(rng: np.random.Generator, batch: int, width: int) -> dict[str, np.ndarray | None]:
    per_position = rng.random((batch, width, grammar.NUM_STATES)) < 0.85
    per_position[:, :, :3] = True  # keep NO_SP open, so a path exists
    return {
        "none": None,
        "eukarya": grammar.organism_state_mask("eukarya"),
        "per row": np.stack(
            [grammar.organism_state_mask(o) for o in rng.choice(grammar.ORGANISMS, batch)]
        ),
        "per row (B, 1, 37)": rng.random((batch, 1, grammar.NUM_STATES)) < 0.9,
        "per position": per_position,
    }


def _assert_same_as_reference(out, ref, rows=None):
    rows = range(len(ref.cs)) if rows is None else rows
    for row in rows:
        assert out.types[row] == ref.types[row], row
        np.testing.assert_allclose(
            out.type_probabilities[row], ref.type_probabilities[row], rtol=0, atol=1e-9
        )
        assert out.cs[row] == ref.cs[row], row
        if ref.cs[row] is not None:
            assert out.cs_probabilities[row] == pytest.approx(ref.cs_probabilities[row], abs=1e-9)
        else:
            assert out.cs_probabilities[row] is None
        if ref.scores[row] > grammar.DISALLOWED_SCORE / 2:  # a grammatical path of the type
            assert np.array_equal(out.paths[row], ref.paths[row]), row


@pytest.mark.parametrize("seed", range(4))
def test_decode_equals_the_log_space_reference(trained_crf, seed):
    rng = np.random.default_rng(seed)
    lengths = np.concatenate([[70, 1, 2], rng.integers(1, 71, 21)])
    em, lengths = _batch(seed, lengths, scale=3.0, width=70)
    for name, mask in _masks(rng, len(lengths), 70).items():
        out = decode(em, lengths, trained_crf, mask, keep_marginals=True)
        ref = decode_reference(em, lengths, trained_crf, mask)
        _assert_same_as_reference(out, ref)
        post, _ = marginals(em, lengths, trained_crf, mask)
        for row, n in enumerate(lengths):
            np.testing.assert_allclose(post[row, :n], ref.posteriors[row, :n], atol=1e-9)
            np.testing.assert_allclose(out.marginals[row], post[row, :n], atol=1e-7)
            if out.cs[row] is not None:
                cs, path = out.cs[row], out.paths[row]
                assert out.cs_marginals[row] == post[row, cs - 1, path[cs - 1]], name
                assert out.regions[row] == grammar.sp_regions(path)
            else:
                assert out.cs_marginals[row] is None and out.regions[row] == []


def _extreme_cases(em: np.ndarray):
    """(name, emissions, state mask) of inputs the scaled recursion cannot take as they are."""
    k = grammar.NUM_STATES
    masked_position = np.ones(em.shape, dtype=bool)
    masked_position[:, 3] = False  # no state allowed at residue 4
    sp_only = np.equal(grammar.STATE_TYPE, grammar.SP_TYPES.index("SP"))
    disallowed_column = em.copy()
    disallowed_column[..., grammar.state("NO_SP", "O")] = grammar.DISALLOWED_SCORE
    return [
        ("huge", em * 1000, None),
        ("huge constant", np.full_like(em, 3e4), None),
        ("tiny", em * 1e-30, None),
        ("DISALLOWED_SCORE entries", disallowed_column, None),
        ("all DISALLOWED_SCORE", np.full_like(em, grammar.DISALLOWED_SCORE), None),
        ("a position with every state masked", em, masked_position),
        ("only the Sec/SPI block: no path for short rows", em, sp_only),
        ("every state masked", em, np.zeros(k, dtype=bool)),
        ("per-position random masks", em, np.random.default_rng(0).random(em.shape) < 0.5),
    ]


@pytest.mark.parametrize("case", range(9))
def test_extreme_inputs_stay_finite_and_match_the_reference_where_it_is_finite(trained_crf, case):
    em, lengths = _batch(5, (70, 1, 2, 5, 33, 70, 1, 12), width=70)
    name, em, mask = _extreme_cases(em)[case]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow / invalid-value warnings from the decoder
        out = decode(em, lengths, trained_crf, mask, keep_marginals=True)
    assert np.all(np.isfinite(out.type_probabilities)), name
    np.testing.assert_allclose(out.type_probabilities.sum(1), 1.0, atol=1e-9)
    for row, n in enumerate(lengths):
        assert np.all(np.isfinite(out.marginals[row])), name
        np.testing.assert_allclose(out.marginals[row].sum(1), 1.0, atol=1e-5)
        assert len(out.paths[row]) == n
    for p in (*out.cs_probabilities, *out.cs_marginals):
        assert p is None or 0.0 <= p <= 1.0 + 1e-12
    with np.errstate(all="ignore"):
        ref = decode_reference(em, lengths, trained_crf, mask)
    finite = np.flatnonzero(np.isfinite(ref.type_probabilities).all(axis=1))
    assert len(finite) > 0
    _assert_same_as_reference(out, ref, finite)


def test_a_protein_decodes_to_the_same_bits_in_any_batch(trained_crf):
    em, lengths = _batch(7, (70, 1, 2, 5, 33, 70, 1, 12, 69, 70, 40, 3), scale=3.0, width=70)
    rng = np.random.default_rng(0)
    mask = rng.random(em.shape) < 0.9
    mask[:, :, :3] = True
    whole = decode(em, lengths, trained_crf, mask, keep_marginals=True)
    order = rng.permutation(len(lengths))
    shuffled = decode(em[order], lengths[order], trained_crf, mask[order], True)
    alone = [
        decode(
            em[i : i + 1, : lengths[i]],
            lengths[i : i + 1],
            trained_crf,
            mask[i : i + 1, : lengths[i]],
            True,
        )
        for i in range(len(lengths))
    ]
    for i in range(len(lengths)):
        for other, j in ((shuffled, int(np.flatnonzero(order == i)[0])), (alone[i], 0)):
            assert np.array_equal(other.type_probabilities[j], whole.type_probabilities[i])
            assert np.array_equal(other.marginals[j], whole.marginals[i])
            assert np.array_equal(other.paths[j], whole.paths[i])
            assert other.cs[j] == whole.cs[i]
            assert other.cs_probabilities[j] == whole.cs_probabilities[i]
            assert other.cs_marginals[j] == whole.cs_marginals[i]


def test_region_penalty_is_high_for_identical_compositions():
    torch.manual_seed(0)
    tokens = torch.randint(4, 24, (2, 10))
    mask = torch.ones(2, 10, dtype=torch.bool)
    same = torch.zeros(2, 10, grammar.NUM_STATES)
    same[:, :, grammar.state("SP", "N")] = 0.5
    same[:, :, grammar.state("SP", "H")] = 0.5
    types = torch.tensor([grammar.SP_TYPES.index("SP")] * 2)
    assert region_composition_penalty(same, tokens, mask, types) == pytest.approx(1.0, abs=1e-5)
    apart = torch.zeros(2, 10, grammar.NUM_STATES)
    apart[:, :5, grammar.state("SP", "N")] = 1.0
    apart[:, 5:, grammar.state("SP", "H")] = 1.0
    tokens = torch.cat([torch.full((2, 5), 4), torch.full((2, 5), 6)], dim=1)  # L... then G...
    assert region_composition_penalty(apart, tokens, mask, types) == pytest.approx(0.0, abs=1e-6)
    no_sp = torch.tensor([0, 0])
    assert region_composition_penalty(same, tokens, mask, no_sp) == 0.0


def test_region_penalty_counts_leucine():
    """Regions made only of leucine (token 4, the first amino acid) have identical
    compositions: the original code's off-by-one dropped leucine and would see nothing."""
    tokens = torch.full((1, 10), 4)
    mask = torch.ones(1, 10, dtype=torch.bool)
    regions = torch.zeros(1, 10, grammar.NUM_STATES)
    regions[:, :5, grammar.state("SP", "N")] = 1.0
    regions[:, 5:, grammar.state("SP", "H")] = 1.0
    types = torch.tensor([grammar.SP_TYPES.index("SP")])
    assert region_composition_penalty(regions, tokens, mask, types) == pytest.approx(1.0, abs=1e-5)
