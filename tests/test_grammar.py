"""The region grammar: transitions, cleavage site and regions, organism and sequence rules."""

import re
from collections import Counter

import numpy as np
import pytest

from peftsp import grammar, tokens
from peftsp.decoding import decode

S = grammar.state


def test_transitions_stay_inside_one_block_and_follow_biological_order():
    src, dst = np.nonzero(grammar.ALLOWED)
    assert np.all(grammar.STATE_TYPE[src] == grammar.STATE_TYPE[dst])
    assert not grammar.ALLOWED[S("NO_SP", "I"), S("NO_SP", "O")]
    assert not grammar.ALLOWED[S("SP", "H"), S("SP", "N")]
    assert not grammar.ALLOWED[S("SP", "C"), S("SP", "H")]
    assert not grammar.ALLOWED[S("LIPO", "C1"), S("LIPO", "C1")]  # exactly one residue
    assert grammar.ALLOWED[S("TAT", "RR"), S("TAT", "N")]
    assert grammar.STARTS.sum() == 7 and grammar.ENDS.sum() == 18


def test_cleavage_site_is_the_sp_length_and_regions_cover_it():
    path = (
        [S("TAT", "N")] * 2
        + [S("TAT", "RR")] * 2
        + [S("TAT", "N")]
        + [S("TAT", "H")] * 6
        + [S("TAT", "C")] * 3
        + [S("TAT", "O")] * 4
    )
    assert grammar.cleavage_site(path) == 14
    regions = grammar.sp_regions(path)
    assert [(r.name, r.start, r.end) for r in regions] == [("n", 1, 5), ("h", 6, 11), ("c", 12, 14)]
    assert grammar.cleavage_site([S("NO_SP", "I")] * 5) is None
    assert grammar.sp_regions([S("NO_SP", "O")] * 5) == []


def test_eukarya_mask_keeps_only_no_sp_and_sec_spi():
    mask = grammar.organism_state_mask("eukarya")
    kept = {grammar.SP_TYPES[t] for t in grammar.STATE_TYPE[mask]}
    assert kept == {"NO_SP", "SP"}
    assert grammar.organism_state_mask("archaea").all()
    with pytest.raises(ValueError, match="unknown organism"):
        grammar.organism_state_mask("plants")


def _residues(*sequences: str) -> np.ndarray:
    ids, _ = tokens.encode(list(sequences), 70)
    return ids[:, 1:-1]


def test_sequence_mask_puts_lipoprotein_c1_only_on_cysteine_after_the_shortest_sp():
    mask = grammar.sequence_mask(_residues("MKKLLLLLLLLLLLAGCDDCEEKK"))[0]
    for sp_type in ("LIPO", "TATLIPO"):
        c1 = np.flatnonzero(mask[:, S(sp_type, "C1")])
        assert c1.tolist() == [16, 19]  # the two Cys, both past the 8-residue minimum
    # No SP of any type may end before its minimum length: mature states are off before it.
    for sp_type, shortest in grammar.MIN_SP_LENGTH.items():
        assert not mask[:shortest, S(sp_type, "O")].any()
        assert mask[shortest:, S(sp_type, "O")].all()


def test_sequence_mask_needs_an_rk_r_motif_before_a_tat_h_region():
    with_motif, without = grammar.sequence_mask(
        _residues("MSTKRFLTAGLAVLLAGAAHAQAEDK", "MSTQRFLTAGLAVLLAGAAHAQAEDK")
    )
    for sp_type in ("TAT", "TATLIPO"):
        assert np.flatnonzero(with_motif[:, S(sp_type, "RR")]).tolist() == [3, 4]  # K R
        h = np.flatnonzero(with_motif[:, S(sp_type, "H")])
        assert h[0] == 5  # the first residue after the motif
        assert not without[:, S(sp_type, "RR")].any()
        assert not without[:, S(sp_type, "H")].any()  # no Tat path at all
    # Other blocks are untouched by the Tat and lipoprotein rules.
    assert with_motif[:, S("SP", "H")].all()


def test_sequence_mask_of_a_batch_of_one_residue_proteins():
    # The motif search needs no second residue (a batch of 1-residue proteins once crashed).
    mask = grammar.sequence_mask(_residues("M", "R"))
    assert mask.shape == (2, 1, grammar.NUM_STATES)
    for sp_type in ("TAT", "TATLIPO"):
        assert not mask[:, :, S(sp_type, "RR")].any()
        assert not mask[:, :, S(sp_type, "H")].any()
    assert mask[:, 0, S("NO_SP", "I")].all()


def test_decoding_with_the_sequence_mask_obeys_every_rule_on_random_emissions():
    rng = np.random.default_rng(7)
    letters = np.array(list("ACDEFGHIKLMNPQRSTVWY"))
    sequences = ["M" + "".join(rng.choice(letters, size=rng.integers(20, 70))) for _ in range(300)]
    # A twin-arginine motif near the start of every other protein, so Tat paths exist there.
    sequences = [s[:4] + "RR" + s[6:] if i % 2 else s for i, s in enumerate(sequences)]
    ids, lengths = tokens.encode(sequences, 70)
    em = rng.normal(0, 3, size=(len(sequences), ids.shape[1] - 2, grammar.NUM_STATES))
    # Push every SP type in turn, so that each one is called on many rows.
    for row in range(len(sequences)):
        em[row, :, 1 + row % 5 == grammar.STATE_TYPE] += 2.0
    crf = {
        "transitions": np.where(grammar.ALLOWED, 0.0, grammar.DISALLOWED_SCORE),
        "start": np.where(grammar.STARTS, 0.0, grammar.DISALLOWED_SCORE),
        "end": np.where(grammar.ENDS, 0.0, grammar.DISALLOWED_SCORE),
    }
    out = decode(em, lengths, crf, grammar.sequence_mask(ids[:, 1:-1]))
    called: Counter[str] = Counter()
    for row, sequence in enumerate(sequences):
        sp_type, cs = grammar.SP_TYPES[out.types[row]], out.cs[row]
        if cs is None:
            continue
        called[sp_type] += 1
        assert cs >= grammar.MIN_SP_LENGTH[sp_type]
        if sp_type in ("LIPO", "TATLIPO"):
            assert sequence[cs] == "C"
        if sp_type in ("TAT", "TATLIPO"):
            assert re.search("[RK]R", sequence[:cs])
    assert min(called[t] for t in grammar.SP_TYPES[1:]) >= 10, called
