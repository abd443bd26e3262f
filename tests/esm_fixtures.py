"""Tiny ESM-2 models and checkpoint files in the exact layout of the official fair-esm files."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from esm.model.esm2 import ESM2

from peftsp.train import backbone

# Where the official files keep each part: the LM head under "encoder.", the contact head in
# the separate regression file (unprefixed), everything else under "encoder.sentence_encoder.".
_LM_HEAD = "lm_head."
_CONTACT_HEAD = "contact_head."
CLS, PAD, EOS, MASK = 0, 1, 2, 32


def make_tokens(lengths: list[int], seed: int = 0, masks: int = 0) -> torch.Tensor:
    """Token rows <cls> residues <eos> <pad>... of the given residue counts; the first row
    gets `masks` <mask> tokens in place of its first residues."""
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.full((len(lengths), max(lengths) + 2), PAD)
    for row, length in enumerate(lengths):
        tokens[row, 0] = CLS
        tokens[row, 1 : length + 1] = torch.randint(4, 24, (length,), generator=generator)
        tokens[row, length + 1] = EOS
    tokens[0, 1 : masks + 1] = MASK
    return tokens


def tiny_esm2(layers: int = 2, dim: int = 32, heads: int = 4, seed: int = 0) -> ESM2:
    """A small ESM-2 (eval mode) with every parameter randomised, layer norms and biases too,
    so a loader that skips any tensor is caught."""
    config = {"layers": layers, "embed_dim": dim, "heads": heads, "token_dropout": True}
    esm = backbone.build_backbone(config, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in esm.parameters():
            param.add_(0.1 * torch.randn(param.shape, generator=generator))
    return esm


def official_state(esm: ESM2) -> tuple[dict, dict]:
    """(main file weights, contact-regression weights) with the official key names."""
    main, regression = {}, {}
    for key, value in esm.state_dict().items():
        if key.startswith(_CONTACT_HEAD):
            regression[key] = value
        elif key.startswith(_LM_HEAD):
            main["encoder." + key] = value
        else:
            main["encoder.sentence_encoder." + key] = value
    return main, regression


def save_fair_esm_checkpoint(esm: ESM2, path: str | Path, with_regression: bool = True) -> Path:
    """Write `esm` as an official fair-esm ESM-2 file (config as argparse.Namespace under
    cfg["model"]), plus `<stem>-contact-regression.pt` beside it unless told not to."""
    path = Path(path)
    cfg = argparse.Namespace(
        arch="esm2",
        encoder_layers=esm.num_layers,
        encoder_embed_dim=esm.embed_dim,
        encoder_ffn_embed_dim=4 * esm.embed_dim,
        encoder_attention_heads=esm.attention_heads,
        token_dropout=esm.token_dropout,
    )
    main, regression = official_state(esm)
    torch.save({"cfg": {"model": cfg}, "model": main}, path)
    if with_regression:
        torch.save(
            {"model": regression}, Path(str(path.with_suffix("")) + "-contact-regression.pt")
        )
    return path


def populate_hub_cache(
    esm: ESM2, torch_home: str | Path, name: str = "esm2_t6_8M_UR50D", with_regression: bool = True
) -> Path:
    """Put `esm` into a torch hub cache rooted at `torch_home` under an official model name
    (point $TORCH_HOME at `torch_home` to use it); returns the checkpoint path."""
    directory = Path(torch_home) / "hub" / "checkpoints"
    directory.mkdir(parents=True, exist_ok=True)
    return save_fair_esm_checkpoint(esm, directory / f"{name}.pt", with_regression)
