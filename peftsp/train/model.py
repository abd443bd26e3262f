"""The signal-peptide model: ESM-2 backbone + PEFT method + emission layer + region CRF.

Also the training checkpoint format: the model config plus only what cannot be rebuilt
from the backbone spec (what was trained, or the whole backbone when it is random or fully
fine-tuned), so a LoRA checkpoint of a 3B backbone stays a few MB.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from peftsp import __version__, grammar
from peftsp import bundle as bundle_format
from peftsp.bundle import ORGANISM_IDS
from peftsp.errors import ModelError
from peftsp.files import atomic_write
from peftsp.train import backbone, peft
from peftsp.train.crf import RegionCRF, region_composition_penalty

PEFT_METHODS = ("lora", "adapter", "prompt", "full")


@dataclass
class ModelConfig:
    """Everything needed to rebuild the model architecture."""

    backbone: str
    backbone_shape: dict
    peft: str = "lora"
    lora_layers: int | None = None
    lora_rank: int = 8
    lora_alpha: float = 8.0
    lora_dropout: float = 0.1
    adapter_layers: int | None = None
    adapter_size: int | None = None
    prompt_length: int = 10
    kingdom_conditioning: bool = False
    kingdom_input: bool = False  # a second kingdom embedding added to every input token
    dropout: float = 0.1
    window: int = 70
    sequence_rules: bool = False  # grammar.sequence_mask applied to the emissions

    @property
    def stores_backbone(self) -> bool:
        """Whether checkpoints must carry the backbone weights (not rebuildable from a spec)."""
        return self.peft == "full" or self.backbone.startswith("random:")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ModelError(f"unknown model config keys: {', '.join(sorted(unknown))}")
        return cls(**data)


class SignalPeptideModel(nn.Module):
    """Per-residue CRF emissions from a (PEFT-tuned) ESM-2 backbone."""

    def __init__(self, esm: nn.Module, config: ModelConfig, seed: int = 0) -> None:
        super().__init__()
        if config.peft not in PEFT_METHODS:
            raise ModelError(f"unknown PEFT method {config.peft!r}")
        self.config = config
        self.backbone = esm
        torch.manual_seed(seed)
        if config.peft != "full":
            peft.freeze(self.backbone)
        if config.peft == "lora":
            peft.apply_lora(
                self.backbone,
                config.lora_layers,
                config.lora_rank,
                config.lora_alpha,
                config.lora_dropout,
            )
        elif config.peft == "adapter":
            peft.apply_adapters(self.backbone, config.adapter_layers, config.adapter_size)
        embed_dim = config.backbone_shape["embed_dim"]
        self.prompt = (
            peft.SoftPrompt(self.backbone.embed_tokens, config.prompt_length, seed=seed)
            if config.peft == "prompt"
            else None
        )
        self.kingdom = (
            nn.Embedding(len(ORGANISM_IDS), embed_dim) if config.kingdom_conditioning else None
        )
        if self.kingdom is not None:
            nn.init.zeros_(self.kingdom.weight)
        if config.kingdom_input and not config.kingdom_conditioning:
            raise ModelError("a kingdom input embedding needs kingdom conditioning")
        # Zero at the start, so adding it to a trained model (train --init --kingdom-input)
        # leaves its predictions unchanged until training moves it.
        self.kingdom_input = (
            nn.Embedding(len(ORGANISM_IDS), embed_dim) if config.kingdom_input else None
        )
        if self.kingdom_input is not None:
            nn.init.zeros_(self.kingdom_input.weight)
        self.dropout = nn.Dropout(config.dropout)
        # Inside the backbone's layers in training (backbone.encode): a training option, set by
        # training.fit, not part of the architecture (checkpoints with and without it average).
        self.layer_dropout = 0.0
        self.head = nn.Linear(embed_dim, grammar.NUM_STATES)
        self.crf = RegionCRF()

    @classmethod
    def create(cls, config: ModelConfig, seed: int = 0) -> SignalPeptideModel:
        """A new model on the backbone named by config.backbone (downloaded or loaded)."""
        esm = backbone.load_backbone(config.backbone, seed=seed)
        _check_shape(esm, config)
        return cls(esm, config, seed=seed)

    def forward(self, tokens: torch.Tensor, kingdom: torch.Tensor | None = None) -> torch.Tensor:
        """Emissions (B, T - 2, 37) for the residues of `tokens` (B, T) = <cls> seq <eos> pad.

        Row b is meaningful up to its residue count; later positions (its <eos>, padding) are
        ignored by the CRF through the length mask.
        """
        prompt = self.prompt.weight if self.prompt is not None else None
        if self.kingdom is not None and kingdom is None:
            kingdom = torch.zeros(tokens.shape[0], dtype=torch.long, device=tokens.device)
        shift = self.kingdom_input(kingdom) if self.kingdom_input is not None else None
        inner = self.layer_dropout if self.training else 0.0
        hidden = backbone.encode(self.backbone, tokens, prompt, shift, inner)[:, 1:-1]
        if self.kingdom is not None:
            hidden = hidden + self.kingdom(kingdom)[:, None, :]
        return self.head(self.dropout(hidden))

    def loss(
        self,
        tokens: torch.Tensor,
        lengths: torch.Tensor,
        allowed: torch.Tensor,
        types: torch.Tensor,
        kingdom: torch.Tensor | None = None,
        region_weight: float = 0.0,
        rules: torch.Tensor | None = None,
        seen: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Partial-label CRF negative log-likelihood (batch mean) + region regulariser.

        rules (B, L, 37) bool, when given, removes states as grammar.sequence_mask does at
        prediction time, so the model is trained on the distribution it is decoded with.
        seen (B, T): the tokens the model reads, when not `tokens` (some residues masked in
        training); the regulariser and the rules keep the true residues.
        """
        emissions = self(tokens if seen is None else seen, kingdom)
        if rules is not None:
            emissions = emissions.masked_fill(~rules, grammar.DISALLOWED_SCORE)
        mask = torch.arange(emissions.shape[1], device=tokens.device)[None] < lengths[:, None]
        nll = -self.crf.partial_log_likelihood(emissions, allowed, mask).mean()
        if region_weight <= 0:
            return nll
        marginals = self.crf.marginals(emissions, mask)
        residues = tokens[:, 1 : emissions.shape[1] + 1]
        return nll + region_weight * region_composition_penalty(marginals, residues, mask, types)

    def trainable_parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


def _check_shape(esm: nn.Module, config: ModelConfig) -> None:
    found = backbone.backbone_config(esm)
    for key, value in config.backbone_shape.items():
        if found.get(key) != value:
            raise ModelError(
                f"backbone {config.backbone!r} has {key}={found.get(key)}, "
                f"but the checkpoint expects {value}"
            )


def _saved_state(model: SignalPeptideModel) -> dict[str, torch.Tensor]:
    """State entries a checkpoint must keep: trained parameters, the head, CRF, prompt,
    kingdom embedding, and the backbone when it cannot be rebuilt from its spec."""
    trained = {name for name, p in model.named_parameters() if p.requires_grad}
    keep = {}
    for name, value in model.state_dict().items():
        if name in trained or not name.startswith("backbone.") or model.config.stores_backbone:
            keep[name] = value.detach().cpu()
    return keep


def save_checkpoint(model: SignalPeptideModel, path: str | Path, extra: dict | None = None) -> None:
    """Write a training checkpoint atomically."""
    payload = {
        "format": "peftsp-checkpoint",
        "peftsp_version": __version__,
        "config": model.config.to_dict(),
        "state": _saved_state(model),
        "extra": extra or {},
    }
    with atomic_write(path, "wb") as handle:
        torch.save(payload, handle)


def model_from_config(config: dict) -> SignalPeptideModel:
    """An untrained model of a checkpoint's config (a frozen backbone loaded from its spec)."""
    parsed = ModelConfig.from_dict(config)
    if parsed.stores_backbone:
        return SignalPeptideModel(backbone.build_backbone(parsed.backbone_shape), parsed)
    return SignalPeptideModel.create(parsed)


def read_torch_file(path: Path, formats: tuple[str, ...], error: type[Exception] = ModelError):
    """The payload of a file PEFT-SP wrote with torch.save, if its "format" is one of formats;
    else `error` naming the file."""
    if path.is_dir():
        raise error(f"{path}: is a directory; give the checkpoint file in it (model.pt)")
    if not path.is_file():
        raise error(f"{path}: checkpoint not found")
    try:
        payload = backbone.torch_file(path)
    except ValueError as err:
        raise error(f"{path}: not a readable PEFT-SP checkpoint: {err}") from err
    kind = payload.get("format") if isinstance(payload, dict) else None
    if kind == "peftsp-progress" and kind not in formats:
        raise error(
            f"{path}: a resume file of `peftsp train` (its last.pt); give the run's model.pt, or "
            "average it with `peftsp average`"
        )
    if kind not in formats:
        raise error(f"{path}: not a PEFT-SP checkpoint (written by `peftsp train`)")
    return payload


def load_checkpoint(path: str | Path) -> tuple[SignalPeptideModel, dict]:
    """Rebuild a model from a checkpoint written by save_checkpoint (eval mode)."""
    path = Path(path)
    payload = read_torch_file(path, ("peftsp-checkpoint",))
    try:
        model = model_from_config(payload["config"])
    except ModelError as err:
        spec = payload["config"].get("backbone")
        raise ModelError(f"{path}: its backbone {spec!r} cannot be loaded: {err}") from err
    state = payload["state"]
    missing = sorted(set(_saved_state(model)) - set(state))
    unexpected = sorted(set(state) - set(model.state_dict()))
    if missing or unexpected:
        raise ModelError(
            f"{path}: checkpoint does not match its model config "
            f"(missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    model.load_state_dict(state, strict=False)
    return model.eval(), payload.get("extra", {})


class CheckpointSession:
    """A PyTorch model as a prediction session: its emissions, decoded exactly as an exported
    bundle of it is (the same `bundle` fields, the same predict loop)."""

    providers = ("CPUExecutionProvider",)  # the decode runs in the calling thread

    def __init__(
        self,
        model: SignalPeptideModel,
        path: str | Path = "checkpoint",
        training_shifts: dict[str, list[float]] | None = None,
    ) -> None:
        """training_shifts: the run's "training" prior shift per organism group
        (calibration.training_shifts), decoded as a calibrated bundle of the model would be."""
        self.model = model.eval()
        meta = bundle_format.metadata(
            name=Path(path).stem,
            config=model.config.to_dict(),
            crf=model.crf.numpy_parameters(),
            checks={},
            metrics=None,
            training=None,
        )
        meta["files"] = {}
        if training_shifts:
            meta["calibration"] = {"log_prior_shift": {"training": training_shifts}}
        self.bundle = bundle_format.Bundle(Path(path), meta, model.crf.numpy_parameters())

    @classmethod
    def load(cls, path: str | Path, threads: int | None = None) -> CheckpointSession:
        if threads:
            torch.set_num_threads(threads)
        model, _ = load_checkpoint(path)
        return cls(model, path)

    def emissions(self, tokens: np.ndarray, kingdom: np.ndarray) -> np.ndarray:
        """Emissions (B, T - 2, 37) float32, as runtime.Session.emissions."""
        device = next(self.model.parameters()).device
        conditioned = self.model.config.kingdom_conditioning
        with torch.no_grad():
            ids = torch.as_tensor(tokens, device=device)
            k = torch.as_tensor(kingdom, device=device) if conditioned else None
            return self.model(ids, k).float().cpu().numpy()
