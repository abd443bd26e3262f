"""ESM-2 tokenisation: the same ids as fair-esm's batch converter, without torch."""

from __future__ import annotations

import subprocess
import sys

import esm
import numpy as np
import pytest

from peftsp import tokens

ESM_ALPHABET = esm.data.Alphabet.from_architecture("ESM-1b")


def test_alphabet_matches_fair_esm():
    assert tuple(ESM_ALPHABET.all_toks) == tokens.ALPHABET
    assert (
        ESM_ALPHABET.cls_idx,
        ESM_ALPHABET.padding_idx,
        ESM_ALPHABET.eos_idx,
        ESM_ALPHABET.unk_idx,
        ESM_ALPHABET.mask_idx,
    ) == (tokens.CLS, tokens.PAD, tokens.EOS, tokens.UNK, tokens.MASK)
    assert [ESM_ALPHABET.get_idx(a) for a in tokens.AMINO_ACIDS] == list(tokens.AMINO_ACID_IDS)
    for letter in tokens.RESIDUES:
        assert tokens.LOOKUP[ord(letter)] == ESM_ALPHABET.get_idx(letter)


@pytest.mark.parametrize("window", [70, 5])
def test_encode_matches_the_fair_esm_batch_converter(window):
    rng = np.random.default_rng(0)
    letters = list(tokens.RESIDUES + ".-")
    sizes = [1, 2, window - 1, window, window + 1, 3 * window, *rng.integers(1, 150, size=20)]
    seqs = ["".join(rng.choice(letters, size=int(n))) for n in sizes]
    converter = ESM_ALPHABET.get_batch_converter(truncation_seq_length=window)
    _, _, expected = converter([(str(i), s) for i, s in enumerate(seqs)])
    ids, lengths = tokens.encode(seqs, window)
    assert ids.dtype == np.int64
    assert lengths.dtype == np.int64
    np.testing.assert_array_equal(ids, expected.numpy())
    np.testing.assert_array_equal(lengths, [min(len(s), window) for s in seqs])


def test_rows_are_cls_residues_eos_then_padding():
    ids, lengths = tokens.encode(["MK", "", "LAGVS"], window=4)
    L, A, G, V, K, M = (tokens.ALPHABET.index(c) for c in "LAGVKM")
    c, p, e = tokens.CLS, tokens.PAD, tokens.EOS
    np.testing.assert_array_equal(ids, [[c, M, K, e, p, p], [c, e, p, p, p, p], [c, L, A, G, V, e]])
    np.testing.assert_array_equal(lengths, [2, 0, 4])


def test_characters_outside_the_alphabet_are_unknown_one_token_each():
    ids, lengths = tokens.encode(["MjJ*\u00e9A"])
    M, A = tokens.ALPHABET.index("M"), tokens.ALPHABET.index("A")
    unk = tokens.UNK
    np.testing.assert_array_equal(ids[0], [tokens.CLS, M, unk, unk, unk, unk, A, tokens.EOS])
    assert lengths[0] == 6


def test_empty_batch():
    ids, lengths = tokens.encode([])
    assert ids.shape == (0, 2)
    assert lengths.shape == (0,)


def test_prediction_modules_do_not_import_torch_or_esm():
    code = (
        "import sys, peftsp.tokens, peftsp.fasta; "
        "print(sorted(m for m in ('torch', 'esm') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
