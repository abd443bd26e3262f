"""The region grammar: label patterns -> allowed paths; CS and region definitions."""

import re
from collections import Counter

import numpy as np
import pytest
from synthetic import make_dataset

from peftsp import grammar, tokens
from peftsp.decoding import decode
from peftsp.labels import LabelError, region_bitmap, true_cleavage_site

S = grammar.state

# (type, sequence, labels): every SignalP 6.0 label pattern we know of, incl. edge cases.
PATTERNS = [
    ("NO_SP", "MKTAYIAKQRQISFVKSHFSRQ", "I" * 22),
    ("NO_SP", "MKTAYIAKQRQISFVKSHFSRQ", "O" * 22),
    ("NO_SP", "MKRDLLLLLLLLLLLLLLLLLLAAKKDDEEQQ", "IIII" + "M" * 18 + "O" * 10),
    (
        "NO_SP",
        "MKRDLLLLLLLLLLLLLLLLLLAAKKDDLLLLLLLLLLLLLLLLLLKK",
        "IIII" + "M" * 18 + "OOOOOO" + "M" * 18 + "II",
    ),
    ("SP", "MKKLLLLLLLLLLASAQAEDKT", "S" * 16 + "O" * 6),
    ("SP", "MKLLLLAAAQ", "SSSSSSSOOO"),  # 7-residue SP, shortest in the data
    (
        "SP",
        "MKKLLLLLLLLLLASAQAEDKTLLLLLLLLLLLLLLLLLLKK",
        "S" * 16 + "O" * 6 + "M" * 18 + "II",
    ),  # SP then a TM segment
    ("LIPO", "MKKLLLLLLLLLLLAGCDDEEKK", "L" * 16 + "O" * 7),
    ("LIPO", "MKKLLLLLLLLLLLAGCDDEEKKLLLLLLLLLLLLLLLLLLKKK", "L" * 16 + "O" * 7 + "M" * 18 + "III"),
    ("LIPO", "MKLLAGCDD", "LLLLLLOOO"),  # short lipoprotein SP
    ("TAT", "MSRRFLTAGLAVLLAGAAHAQAEDK", "T" * 20 + "O" * 5),
    ("TAT", "MSKRFLTAGLAVLLAGAAHAQAEDK", "T" * 20 + "O" * 5),  # KR motif
    ("TAT", "MSTQFLTAGLAVLLAGAAHAQAEDK", "T" * 20 + "O" * 5),  # no motif at all
    ("TAT", "RRTQFLTAGLAVLLAGAAHAQAEDK", "T" * 20 + "O" * 5),  # RR at the very start
    ("TATLIPO", "MSRRFLTAGLAVLLLAGCDEKKQ", "T" * 17 + "O" * 6),
    (
        "TATLIPO",
        "MSRRFLTAGLAVLLLAGCDEKKQLLLLLLLLLLLLLLLLLLKK",
        "T" * 17 + "O" * 6 + "M" * 18 + "II",
    ),
    ("PILIN", "MKAKGFTLIELLLVLAIIGILAAIALPNYQKYTDK", "P" * 5 + "M" * 21 + "O" * 9),
    ("PILIN", "MKGFTLIELLLVLAIIGILAAIALPNYQKY", "PPP" + "M" * 21 + "O" * 6),
    ("PILIN", "MKAKGFTDDKKEE", "PPPPP" + "O" * 8),  # leader without a labelled helix
    ("PILIN", "MKAKGFTLIELLLVLAIIGILAAIALPNYQKYTDK", "P" * 5 + "M" * 21 + "I" * 9),
]


@pytest.mark.parametrize(("sp_type", "sequence", "labels"), PATTERNS)
def test_every_label_pattern_has_an_allowed_path(sp_type, sequence, labels):
    bitmap = region_bitmap(sequence, labels, sp_type)
    assert grammar.has_allowed_path(bitmap)
    # The best path through the bitmap is grammatical, of the record's type, with its CS.
    em = np.where(bitmap, 0.0, grammar.DISALLOWED_SCORE)[None].astype(np.float32)
    crf = {
        "transitions": np.where(grammar.ALLOWED, 0.0, grammar.DISALLOWED_SCORE),
        "start": np.where(grammar.STARTS, 0.0, grammar.DISALLOWED_SCORE),
        "end": np.where(grammar.ENDS, 0.0, grammar.DISALLOWED_SCORE),
    }
    out = decode(em, np.array([len(labels)]), crf)
    path = out.paths[0]
    assert all(bitmap[i, s] for i, s in enumerate(path))
    assert grammar.path_type(path) == sp_type
    assert grammar.cleavage_site(path) == true_cleavage_site(labels, sp_type)


def test_synthetic_records_all_have_paths():
    lines = make_dataset(per_type=20, seed=5)
    for i in range(0, len(lines), 3):
        sp_type = lines[i].split("|")[2]
        assert grammar.has_allowed_path(region_bitmap(lines[i + 1], lines[i + 2], sp_type))


@pytest.mark.parametrize(
    ("sp_type", "labels", "problem"),
    [
        ("SP", "OOOO", "do not start"),
        ("NO_SP", "SSOO", "after the signal peptide"),
        ("SP", "SSXO", "unknown label letters"),
        ("SP", "SO", "no SP path"),  # a 1-residue Sec/SPI SP has no n, h and c
        ("BOGUS", "IIII", "unknown SP type"),
    ],
)
def test_impossible_labels_are_rejected_with_a_reason(sp_type, labels, problem):
    with pytest.raises(LabelError, match=problem):
        region_bitmap("M" * len(labels), labels, sp_type)


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
