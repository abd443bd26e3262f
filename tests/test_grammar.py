"""The region grammar: label patterns -> allowed paths; CS and region definitions."""

import numpy as np
import pytest
from synthetic import make_dataset

from peftsp import grammar
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
