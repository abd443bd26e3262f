"""Masked-language-model pretraining: masking, schedule, resume, and the fair-esm file."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from esm import pretrained
from synthetic import write_dataset

from peftsp import tokens
from peftsp.cli import main
from peftsp.train import backbone
from peftsp.train.pretrain import (
    BACKBONE_FILE,
    HISTORY_FILE,
    learning_rate,
    mask_batch,
    read_sequences,
    windows,
)

# Proteins with a strong pattern (a few motifs repeated), so that a tiny model learns it.
MOTIFS = ["MKKLLAVLAG", "SDEKRTWYHQ", "PGNCFIVLMA"]


def patterned_fasta(path, count: int = 48, seed: int = 0):
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(count):
        parts = [MOTIFS[j] for j in rng.integers(0, len(MOTIFS), 12)]
        lines.append(f">p{i}\n{''.join(parts)}\n")
    path.write_text("".join(lines))
    return path


def test_mask_batch_follows_the_bert_scheme_on_residues_only():
    rng = np.random.default_rng(0)
    ids, _ = tokens.encode(["".join(rng.choice(list("ACDEFGHIKL"), 70)) for _ in range(200)])
    ids[:10, 30:] = tokens.PAD  # some padded rows
    ids[:10, 29] = tokens.EOS
    inputs, targets = mask_batch(ids, 0.15, np.random.default_rng(1))
    chosen = targets != -100
    specials = np.isin(ids, [tokens.CLS, tokens.EOS, tokens.PAD])
    assert not (chosen & specials).any()  # never a special token
    assert np.array_equal(targets[chosen], ids[chosen])
    assert (inputs[~chosen] == ids[~chosen]).all()  # unchosen positions untouched
    share = chosen.sum() / (~specials).sum()
    assert 0.13 < share < 0.17
    masked = (inputs[chosen] == tokens.MASK).mean()
    kept = (inputs[chosen] == ids[chosen]).mean()
    assert 0.76 < masked < 0.84 and 0.08 < kept < 0.14  # kept also counts random-to-same
    assert set(np.unique(inputs[chosen & (inputs != tokens.MASK)])) <= set(tokens.AMINO_ACID_IDS)
    # a row too short to get a position by chance still gets one
    one, _ = tokens.encode(["A"])
    _, target = mask_batch(one, 0.15, np.random.default_rng(2))
    assert (target != -100).sum() == 1


def test_windows_are_n_terminal_or_inside_the_protein():
    rng = np.random.default_rng(0)
    sequences = ["".join(rng.choice(list("ACDEFGHIKL"), n)) for n in (5, 70, 300) * 40]
    picked = windows(sequences, 70, np.random.default_rng(3))
    assert all(w in s and len(w) == min(70, len(s)) for s, w in zip(sequences, picked, strict=True))
    long = [(s, w) for s, w in zip(sequences, picked, strict=True) if len(s) == 300]
    first = sum(s.startswith(w) for s, w in long)
    assert 8 < first < len(long) - 8  # both kinds occur


def test_learning_rate_warms_up_then_anneals_to_zero():
    assert learning_rate(1.0, 0.0) == 0.0
    assert learning_rate(1.0, 0.01) == pytest.approx(0.5)
    assert learning_rate(1.0, 0.02) == pytest.approx(1.0)
    assert learning_rate(1.0, 1.0) == pytest.approx(0.0, abs=1e-12)
    rates = [learning_rate(1.0, x / 100) for x in range(2, 101)]
    assert all(a >= b for a, b in itertools.pairwise(rates))


def test_read_sequences_leaves_out_the_test_partition(tmp_path):
    from peftsp.fasta import read_labelled_list

    data = write_dataset(tmp_path / "labelled.fasta", per_type=3)
    proteome = patterned_fasta(tmp_path / "p.faa", count=4)
    records = read_labelled_list(data)
    got = read_sequences([str(proteome), str(proteome)], str(data), test_partition=0)
    kept = {r.sequence for r in records if r.partition != 0}
    left_out = {r.sequence for r in records if r.partition == 0} - kept
    assert left_out and not left_out & set(got) and kept <= set(got)
    assert len(got) == len(set(got)) == len(kept | set(got))  # each sequence once


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A 3-epoch run, and the same run interrupted in epoch 3 and resumed."""
    from peftsp.train import pretrain

    base = tmp_path_factory.mktemp("pretrain")
    fasta = patterned_fasta(base / "p.faa")
    argv = ["pretrain", "--fasta", str(fasta), "--backbone", "random:L1-E32-H4", "--quiet",
            "--batch-size", "8", "--lr", "0.003", "--val-fraction", "0.2", "--threads", "1",
            "--epochs", "3"]  # fmt: skip
    assert main([*argv, "--outdir", str(base / "whole")]) == 0
    calls = []
    real = pretrain.held_out_loss

    def interrupted(*args, **kwargs):  # the start, epochs 1 and 2, then a kill in epoch 3
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pretrain, "held_out_loss", interrupted)
        assert main([*argv, "--outdir", str(base / "parts")]) == 130  # interrupted
    assert main([*argv, "--outdir", str(base / "parts"), "--resume"]) == 0
    return base, argv


@pytest.mark.filterwarnings("ignore:Regression weights not found")
def test_pretraining_lowers_the_held_out_loss_and_writes_a_fair_esm_file(runs):
    import json

    base, _ = runs
    history = json.loads((base / "whole" / HISTORY_FILE).read_text())
    losses = [e["held_out_loss"] for e in history["epochs"]]
    assert len(losses) == 3 and min(losses) < history["start"]["held_out_loss"] - 1.0
    assert history["best_epoch"] == int(np.argmin(losses)) + 1
    path = base / "whole" / BACKBONE_FILE
    ours = backbone.load_backbone(str(path))
    assert backbone.backbone_config(ours)["layers"] == 1
    # fair-esm's own ESM-2 loader (given the file's data: its torch.load call predates
    # torch's weights_only default) builds the same model
    data = torch.load(path, map_location="cpu", weights_only=False)
    theirs, _ = pretrained.load_model_and_alphabet_core(path.stem, data)
    mine = {k: v for k, v in ours.state_dict().items() if not k.startswith("contact_head.")}
    for key, value in mine.items():
        assert torch.equal(theirs.state_dict()[key], value), key


def test_a_resumed_run_ends_where_an_uninterrupted_one_does(runs):
    base, _ = runs
    for name in (BACKBONE_FILE, HISTORY_FILE):
        assert (base / "whole" / name).read_bytes() != b""
    whole = backbone.load_backbone(str(base / "whole" / BACKBONE_FILE)).state_dict()
    parts = backbone.load_backbone(str(base / "parts" / BACKBONE_FILE)).state_dict()
    assert all(torch.equal(whole[k], parts[k]) for k in whole)
    whole_history = (base / "whole" / HISTORY_FILE).read_text()
    assert whole_history == (base / "parts" / HISTORY_FILE).read_text()


def test_pretrain_refuses_bad_input_without_writing(runs, tmp_path, capsys):
    base, argv = runs
    bad = tmp_path / "bad.faa"
    bad.write_text(">a\nMKK!L\n")
    argv = [*argv]
    argv[argv.index("--fasta") + 1] = str(bad)
    assert main([*argv, "--outdir", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "bad.faa, line 2, record 'a'" in err and not (tmp_path / "out").exists()
    assert main([*argv, "--outdir", str(base / "whole")]) == 1
    assert "not empty" in capsys.readouterr().err
    assert main([*argv, "--outdir", str(tmp_path / "none"), "--resume"]) == 1
    assert "does not exist" in capsys.readouterr().err and not (tmp_path / "none").exists()
