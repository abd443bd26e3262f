"""Tiny ESM-2 models written by Hugging Face `transformers` itself (a dev dependency), in the
layout transformers 5 writes and in the older layout of the checkpoints on the Hub, plus a fake
HF cache (blobs, snapshots, refs) for the offline `hf:` path."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import EsmConfig, EsmForMaskedLM, EsmTokenizer
from transformers.models.esm.configuration_esm import get_default_vocab_list

MASK_TOKEN, PAD_TOKEN = 32, 1


def esm2_config(layers: int = 2, dim: int = 32, heads: int = 4, **overrides) -> EsmConfig:
    """The config of a tiny ESM-2, with every field as in facebook/esm2_* except the sizes."""
    fields = {
        "vocab_size": 33,
        "mask_token_id": MASK_TOKEN,
        "pad_token_id": PAD_TOKEN,
        "hidden_size": dim,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "intermediate_size": 4 * dim,
        "max_position_embeddings": 1026,
        "position_embedding_type": "rotary",
        "emb_layer_norm_before": False,
        "layer_norm_eps": 1e-5,
        "token_dropout": True,
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        **overrides,
    }
    return EsmConfig(**fields)


def tiny_hf_esm2(seed: int = 0, **config) -> EsmForMaskedLM:
    """An EsmForMaskedLM (eval mode) with every parameter randomised, layer norms and biases
    too (transformers starts them at 1 and 0), so a loader that skips any tensor is caught."""
    torch.manual_seed(seed)
    model = EsmForMaskedLM(esm2_config(**config)).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * torch.randn(param.shape, generator=generator))
    return model


def write_vocab(directory: Path, vocab: list[str] | None = None) -> None:
    """The tokenizer files, written by transformers' EsmTokenizer (vocab.txt and its config)."""
    source = directory / "source-vocab.txt"
    source.write_text("\n".join(vocab or get_default_vocab_list()))
    EsmTokenizer(vocab_file=str(source)).save_pretrained(directory)
    source.unlink()


def save_hf_model(model, directory: Path, legacy: bool = False, vocab: bool = True, **kw) -> Path:
    """`model.save_pretrained(directory)` (+ tokenizer files). `legacy` rewrites the weights
    with the key names of the checkpoints on the Hub (written by transformers 4): LayerNorm
    weight/bias instead of gamma/beta, and one rotary inv_freq per layer."""
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory, **kw)
    if vocab:
        write_vocab(directory)
    if legacy:
        path = directory / "model.safetensors"
        state = read_tensors(path)
        layers = model.config.num_hidden_layers
        renamed = {}
        for key, value in state.items():
            if ".layer.*." in key:  # transformers 5's single rotary key
                for i in range(layers):
                    renamed[key.replace(".layer.*.", f".layer.{i}.")] = value.clone()
                continue
            key = key.replace("LayerNorm.gamma", "LayerNorm.weight")
            renamed[key.replace("LayerNorm.beta", "LayerNorm.bias")] = value
        save_file(renamed, path, metadata={"format": "pt"})
    return directory


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118


def edit_tensors(path: Path, change) -> None:
    """Rewrite a safetensors file with `change(state)` applied (in place on the dict)."""
    state = read_tensors(path)
    change(state)
    save_file(state, path, metadata={"format": "pt"})


def edit_config(directory: Path, **changes) -> None:
    path = directory / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def fake_hub_cache(cache: Path, repo_id: str, source: Path, commit: str = "a" * 40) -> Path:
    """Put the files of `source` into an HF hub cache rooted at `cache` as huggingface_hub lays
    it out (content-addressed blobs, a snapshot of symlinks, refs/main); returns the snapshot."""
    from huggingface_hub.file_download import repo_folder_name

    repo = cache / repo_folder_name(repo_id=repo_id, repo_type="model")
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for file in sorted(source.iterdir()):
        data = file.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        os.symlink(os.path.relpath(blob, snapshot), snapshot / file.name)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot
