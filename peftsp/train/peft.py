"""Parameter-efficient fine-tuning of an ESM-2 backbone: LoRA, bottleneck adapters, soft prompts.

Use: freeze(backbone), then apply_lora / apply_adapters (their new parameters are trainable)
or a SoftPrompt passed to backbone.encode. merge_lora folds LoRA into plain Linears for export.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from peftsp.errors import PeftSPError

# The 20 standard amino acids in fair-esm's ESM-2 alphabet (L A G V S E R T I D P K Q N F Y M
# H W C); soft prompts start as copies of their embeddings.
RESIDUE_IDS = range(4, 24)


class LoRALinear(nn.Module):
    """A frozen Linear plus a trainable low-rank update: y = W x + b + (alpha/r) B A dropout(x)."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0) -> None:
        super().__init__()
        if rank < 1:
            raise PeftSPError(f"LoRA rank must be at least 1, got {rank}")
        self.base = base.requires_grad_(False)
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, **factory))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, **factory))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as nn.Linear (and HF peft)
        self.dropout = nn.Dropout(dropout)
        self.scaling = alpha / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = F.linear(F.linear(self.dropout(x), self.lora_A), self.lora_B)
        return self.base(x) + self.scaling * update

    def merged(self) -> nn.Linear:
        """A plain (frozen) Linear computing the same function in eval mode."""
        base = self.base
        linear = nn.Linear(
            base.in_features,
            base.out_features,
            bias=base.bias is not None,
            device=base.weight.device,
            dtype=base.weight.dtype,
        )
        with torch.no_grad():
            linear.weight.copy_(base.weight + self.scaling * (self.lora_B @ self.lora_A))
            if base.bias is not None:
                linear.bias.copy_(base.bias)
        return linear.requires_grad_(False)


class Adapter(nn.Module):
    """Bottleneck MLP with a residual: y = u + LayerNorm(up(ReLU(down(u))))."""

    def __init__(self, dim: int, bottleneck: int) -> None:
        super().__init__()
        if bottleneck < 1:
            raise PeftSPError(f"adapter bottleneck size must be at least 1, got {bottleneck}")
        self.down = nn.Linear(dim, bottleneck)
        self.up = nn.Linear(bottleneck, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return u + self.norm(self.up(F.relu(self.down(u))))


class AdaptedLinear(nn.Module):
    """A Linear whose output goes through an Adapter of the given bottleneck size."""

    def __init__(self, linear: nn.Linear, bottleneck: int) -> None:
        super().__init__()
        self.linear = linear
        self.adapter = Adapter(linear.out_features, bottleneck)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.adapter(self.linear(x))


class SoftPrompt(nn.Module):
    """`length` learned input vectors (`weight`, P x E) for backbone.encode, initialised from
    distinct residue rows of `embedding` (drawn with replacement only when P > 20)."""

    def __init__(self, embedding: nn.Embedding, length: int, seed: int = 0) -> None:
        super().__init__()
        if length < 1:
            raise PeftSPError(f"prompt length must be at least 1, got {length}")
        generator = torch.Generator().manual_seed(seed)
        count = len(RESIDUE_IDS)
        if length <= count:
            picks = torch.randperm(count, generator=generator)[:length]
        else:
            picks = torch.randint(count, (length,), generator=generator)
        rows = embedding.weight.detach()[(picks + RESIDUE_IDS.start).to(embedding.weight.device)]
        self.weight = nn.Parameter(rows.clone())


def apply_lora(esm: nn.Module, layers: int | None, rank: int, alpha: float, dropout: float) -> None:
    """LoRA on q, k, v and out projections of the last `layers` transformer layers (None or
    more than there are: all)."""
    for layer in _last_layers(esm, layers):
        attention = layer.self_attn
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            setattr(attention, name, LoRALinear(getattr(attention, name), rank, alpha, dropout))


def apply_adapters(esm: nn.Module, layers: int | None, size: int | None) -> None:
    """Adapters (bottleneck `size`, default E/2) after the attention output projection and
    after the FFN's fc2, inside the residual branches of the last `layers` layers."""
    bottleneck = size if size is not None else esm.embed_dim // 2
    for layer in _last_layers(esm, layers):
        layer.self_attn.out_proj = AdaptedLinear(layer.self_attn.out_proj, bottleneck)
        layer.fc2 = AdaptedLinear(layer.fc2, bottleneck)


def freeze(module: nn.Module) -> None:
    """Stop gradients for every parameter currently in `module`."""
    module.requires_grad_(False)


def merge_lora(module: nn.Module) -> int:
    """Replace every LoRALinear inside `module` by its merged Linear; returns how many."""
    found = [
        (parent, name, child)
        for parent in module.modules()
        for name, child in parent.named_children()
        if isinstance(child, LoRALinear)
    ]
    for parent, name, child in found:
        setattr(parent, name, child.merged())
    return len(found)


def count_trainable(module: nn.Module) -> int:
    """Number of parameter values that require gradients (shared tensors counted once)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def _last_layers(esm: nn.Module, count: int | None) -> list[nn.Module]:
    if count is not None and count < 1:
        raise PeftSPError(f"number of adapted layers must be at least 1, got {count}")
    layers = list(esm.layers)
    return layers if count is None else layers[max(len(layers) - count, 0) :]
