"""The torch CRF (training) and the numpy decoder (prediction) must agree exactly."""

import itertools

import numpy as np
import pytest
import torch

from peftsp import grammar
from peftsp.decoding import _masked_emissions, decode, forward_backward, viterbi
from peftsp.train.crf import RegionCRF, region_composition_penalty


@pytest.fixture
def crf() -> RegionCRF:
    torch.manual_seed(0)
    return RegionCRF()


def _batch(seed: int = 1, lengths=(9, 5, 1, 7)):
    rng = np.random.default_rng(seed)
    lengths = np.array(lengths)
    em = rng.normal(0, 2, size=(len(lengths), lengths.max(), grammar.NUM_STATES)).astype(np.float32)
    return em, lengths


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


def test_log_partition_and_marginals_match_numpy(crf):
    em, lengths = _batch()
    mask = torch.arange(em.shape[1])[None] < torch.as_tensor(lengths)[:, None]
    log_z_torch = crf.log_partition(torch.as_tensor(em, dtype=torch.float64), mask)
    marg_torch = crf.marginals(torch.as_tensor(em, dtype=torch.float64), mask).detach().numpy()
    alpha, beta, log_z = forward_backward(
        _masked_emissions(em, lengths, None), lengths, crf.numpy_parameters()
    )
    np.testing.assert_allclose(log_z, log_z_torch.detach().numpy(), rtol=1e-5)
    marg = np.exp(alpha + beta - log_z[:, None, None])
    for row, n in enumerate(lengths):
        np.testing.assert_allclose(marg[row, :n], marg_torch[row, :n], atol=1e-5)
        np.testing.assert_allclose(marg[row, :n].sum(-1), 1.0, atol=1e-6)


def test_viterbi_matches_pytorch_crf_and_is_grammatical(crf):
    em, lengths = _batch(seed=3, lengths=(12, 12, 4, 30, 2))
    mask = torch.arange(em.shape[1])[None] < torch.as_tensor(lengths)[:, None]
    expected = crf.decode(torch.as_tensor(em), mask)
    paths, _ = viterbi(_masked_emissions(em, lengths, None), lengths, crf.numpy_parameters())
    for path, want in zip(paths, expected, strict=True):
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
    out = decode(_emissions_for_path(path), np.array([len(path)]), crf.numpy_parameters())
    assert grammar.SP_TYPES[out.types[0]] == "SP"
    assert out.cs == [17]
    assert out.paths[0].tolist() == path
    assert 0.9 < out.cs_probabilities[0] <= 1.0
    assert out.type_probabilities[0].sum() == pytest.approx(1.0)
    regions = grammar.sp_regions(out.paths[0])
    assert [(r.name, r.start, r.end) for r in regions] == [("n", 1, 4), ("h", 5, 12), ("c", 13, 17)]


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
    assert euk.type_probabilities[0, 2:].max() < 1e-6


def test_sp_type_without_room_for_a_cleavage_site_reports_no_cs(crf):
    em = np.zeros((1, 1, grammar.NUM_STATES), dtype=np.float32)
    em[0, 0, grammar.state("SP", "N")] = 20.0
    out = decode(em, np.array([1]), crf.numpy_parameters())
    assert out.cs == [None] and out.cs_probabilities == [None]


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
