"""Training labels: SignalP 6.0 letters -> the CRF states each residue may take."""

import numpy as np
import pytest
from synthetic import make_dataset

from peftsp import grammar
from peftsp.decoding import decode
from peftsp.labels import KYTE_DOOLITTLE, LabelError, region_bitmap, sp_length, true_cleavage_site

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


def test_derived_regions_sit_where_the_biology_puts_them():
    """On synthetic records with a caricature of each signal, the derived states land on it:
    SP states exactly on the labelled SP, the Tat RR state on the RR motif, C1 on the Cys after
    a lipoprotein SP, and an h-region more hydrophobic than the n-region."""
    lines = make_dataset(per_type=20, seed=5)
    hydro = {"n": [], "h": []}
    for i in range(0, len(lines), 3):
        sp_type, sequence, letters = lines[i].split("|")[2], lines[i + 1], lines[i + 2]
        if sp_type in ("NO_SP", "PILIN"):
            continue
        bitmap = region_bitmap(sequence, letters, sp_type)
        n = sp_length(letters, sp_type)
        assert bitmap[:n, grammar.IS_SP_REGION].any(axis=1).all()
        assert not bitmap[n:, grammar.IS_SP_REGION].any()
        if sp_type in ("TAT", "TATLIPO"):
            rr = np.flatnonzero(bitmap[:, grammar.state(sp_type, "RR")])
            assert sequence[rr[0] : rr[-1] + 1] == "RR"
        if sp_type in ("LIPO", "TATLIPO"):
            assert np.flatnonzero(bitmap[:, grammar.state(sp_type, "C1")]).tolist() == [n]
            assert sequence[n] == "C"
        only_n = bitmap[:n, grammar.state(sp_type, "N")] & ~bitmap[:n, grammar.state(sp_type, "H")]
        only_h = bitmap[:n, grammar.state(sp_type, "H")] & ~bitmap[:n, grammar.state(sp_type, "N")]
        hydro["n"] += [KYTE_DOOLITTLE.get(a, 0.0) for a in np.array(list(sequence[:n]))[only_n]]
        hydro["h"] += [KYTE_DOOLITTLE.get(a, 0.0) for a in np.array(list(sequence[:n]))[only_h]]
    assert np.mean(hydro["h"]) > np.mean(hydro["n"]) + 2


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
