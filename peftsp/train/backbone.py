"""The ESM-2 backbone: loading fair-esm checkpoints (by name, from a file, or random) or
Hugging Face ESM-2 models (a directory, an HF cache snapshot, or hf:org/name; see hf_weights)
into fair-esm's ESM2, and a forward pass that always applies the padding mask and can prepend a
soft prompt.

Official ESM-2 files are read with `torch.load(weights_only=True)` plus one allow-listed
class, `argparse.Namespace` (their config): fair-esm 2.0.0 calls `torch.load` without
`weights_only`, which torch >= 2.6 turns into "Weights only load failed" on every official
file, and `torch.hub.load_state_dict_from_url` would unpickle them without any check.
"""

from __future__ import annotations

import argparse
import logging
import pickle
import re
import warnings
from pathlib import Path

import torch
from esm.model.esm2 import ESM2
from esm.modules import TransformerLayer
from esm.modules import gelu as esm_gelu

from peftsp.errors import ModelError
from peftsp.files import atomic_write
from peftsp.train import hf_weights

log = logging.getLogger("peftsp")

# name -> (layers, embed_dim, attention heads) of the published ESM-2 models.
ESM2_SHAPES: dict[str, tuple[int, int, int]] = {
    "esm2_t6_8M_UR50D": (6, 320, 20),
    "esm2_t12_35M_UR50D": (12, 480, 20),
    "esm2_t30_150M_UR50D": (30, 640, 20),
    "esm2_t33_650M_UR50D": (33, 1280, 20),
    "esm2_t36_3B_UR50D": (36, 2560, 40),
    "esm2_t48_15B_UR50D": (48, 5120, 40),
}
RANDOM_PREFIX = "random:"
HF_PREFIX = hf_weights.HF_PREFIX
MODEL_URL = "https://dl.fbaipublicfiles.com/fair-esm/models/{name}.pt"
REGRESSION_SUFFIX = "-contact-regression.pt"
# Key prefixes of the official files (fairseq module paths); the longer one must match first.
_KEY_PREFIX = re.compile(r"^(encoder\.sentence_encoder\.|encoder\.)")
# The contact head comes from the optional regression file and is never used here.
_OPTIONAL_KEYS = {"contact_head.regression.weight", "contact_head.regression.bias"}
# fair-esm's token dropout: 15% of tokens masked during pre-training, 80% of those by <mask>.
_MASK_RATIO_TRAIN = 0.15 * 0.8
_SPEC_HELP = (
    "--backbone takes an ESM-2 model name ({names}), the path of a fair-esm ESM-2 checkpoint "
    "(.pt; a <stem>-contact-regression.pt beside it is optional), a Hugging Face ESM-2 "
    "directory (config.json + model.safetensors, e.g. a snapshot in the HF cache), "
    "hf:facebook/esm2_t33_650M_UR50D (the HF cache, downloaded when online), or "
    "random:NAME / random:L<layers>-E<dim>-H<heads> for random weights"
)


def is_known_name(spec: str) -> bool:
    """Whether `spec` names a published ESM-2 model."""
    return spec in ESM2_SHAPES


def load_backbone(spec: str, seed: int = 0) -> ESM2:
    """An ESM-2 model (eval mode) from a model name, a checkpoint path, a Hugging Face model
    directory (or HF cache folder), `hf:org/name[@revision]` or `random:...`.

    A name is read from the torch hub cache ($TORCH_HOME/hub/checkpoints/<name>.pt), and
    downloaded there first when missing; `hf:` goes through huggingface_hub and its cache.
    `seed` only matters for random weights.
    """
    if spec.startswith(RANDOM_PREFIX):
        return build_backbone(_random_config(spec[len(RANDOM_PREFIX) :]), seed=seed)
    if spec.startswith(HF_PREFIX):
        return load_hf_directory(hf_weights.hub_snapshot(spec[len(HF_PREFIX) :]))
    if is_known_name(spec):
        return _load_checkpoint(_hub_checkpoint(spec))
    path = Path(spec).expanduser()
    if path.is_dir():
        if not hf_weights.is_model_directory(path):  # maybe .../hub/models--org--name
            path = hf_weights.cached_repo_snapshot(path) or path
        return load_hf_directory(path)
    return _load_checkpoint(path)


def load_hf_directory(directory: Path) -> ESM2:
    """fair-esm's ESM2 (eval mode) with the weights of a Hugging Face ESM-2 directory."""
    esm = build_backbone(hf_weights.read_config(directory))
    hf_weights.load_weights(esm, directory)
    return esm


def resolve_spec(spec: str) -> str:
    """`spec` as a checkpoint should store it: local files and directories as absolute paths
    (so the backbone still resolves from another working directory), anything else as is."""
    if spec.startswith((RANDOM_PREFIX, HF_PREFIX)) or is_known_name(spec):
        return spec
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.exists() else spec


def backbone_config(esm: ESM2) -> dict:
    """The shape of `esm`: layers, embed_dim, heads, token_dropout."""
    return {
        "layers": esm.num_layers,
        "embed_dim": esm.embed_dim,
        "heads": esm.attention_heads,
        "token_dropout": bool(esm.token_dropout),
    }


def build_backbone(config: dict, seed: int = 0) -> ESM2:
    """A randomly initialised ESM-2 (eval mode) of the shape in `config` (see backbone_config);
    token_dropout defaults to True as in every published model."""
    layers, dim, heads = config["layers"], config["embed_dim"], config["heads"]
    _check_shape(layers, dim, heads)
    with torch.random.fork_rng(devices=[]):  # seeded without touching the caller's RNG
        torch.manual_seed(seed)
        esm = ESM2(
            num_layers=layers,
            embed_dim=dim,
            attention_heads=heads,
            alphabet="ESM-1b",
            token_dropout=config.get("token_dropout", True),
        )
    return esm.eval()


def encode(
    esm: ESM2,
    tokens: torch.Tensor,
    prompt: torch.Tensor | None = None,
    shift: torch.Tensor | None = None,
    dropout: float = 0.0,
) -> torch.Tensor:
    """Last-layer representations (B, T, E) after the final layer norm, for tokens (B, T).

    The same function as `esm(tokens, repr_layers=[L])["representations"][L]`, but the padding
    mask is always applied (fair-esm drops it for unpadded batches, which a traced ONNX graph
    then lacks), the layers run batch-first (`transformer_layer`) and the LM and contact heads
    are not computed. A `prompt` (P, E) is prepended to the token embeddings before `<cls>`,
    before the token-dropout rescale (so it is scaled like the tokens, as in PEFT-SP), is never
    masked, and is cut from the output. A `shift` (B, E) is added to every input embedding of
    its row (a per-protein condition, such as the kingdom, that all layers see). `dropout` > 0
    (training only) drops each layer's attention and feed-forward outputs before their
    residual sums; fair-esm's ESM-2 has none, so a pretrained model is tuned without it.
    """
    padding = tokens.eq(esm.padding_idx)
    masked = tokens.eq(esm.mask_idx)
    x = esm.embed_tokens(tokens)
    if esm.embed_scale != 1:
        x = esm.embed_scale * x
    extra = 0
    if prompt is not None:
        extra = prompt.shape[0]
        x = torch.cat([prompt.unsqueeze(0).expand(tokens.shape[0], -1, -1), x], dim=1)
        never = padding.new_zeros(tokens.shape[0], extra)
        padding = torch.cat([never, padding], dim=1)
        masked = torch.cat([never, masked], dim=1)
    keep = (~padding).to(x.dtype)
    if esm.token_dropout:
        # <mask> embeddings zeroed and the rest rescaled, as one (B, T) factor
        observed = masked.sum(-1).to(x.dtype) / keep.sum(-1)
        rescale = (1 - _MASK_RATIO_TRAIN) / (1 - observed)
        x = x * ((~masked).to(x.dtype) * rescale[:, None])[..., None]
    if shift is not None:
        x = x + shift[:, None, :]
    x = x * keep[..., None]
    # 0 for a real key, -inf for padding: added to every layer's attention scores.
    key_bias = torch.zeros_like(padding, dtype=x.dtype).masked_fill(padding, float("-inf"))
    key_bias = key_bias[:, None, None, :]
    # fair-esm's RotaryEmbedding derives its frequencies from the head size alone: one table for
    # all layers
    rotary = rotary_tables(esm.layers[0].self_attn.rot_emb.inv_freq, x.shape[1])
    for layer in esm.layers:
        x = transformer_layer(layer, x, key_bias, rotary, dropout)
    x = esm.emb_layer_norm_after(x)
    return x[:, extra:]


def transformer_layer(
    layer: TransformerLayer,
    x: torch.Tensor,
    key_bias: torch.Tensor,
    rotary: tuple[torch.Tensor, torch.Tensor],
    dropout: float = 0.0,
) -> torch.Tensor:
    """fair-esm's ESM-2 TransformerLayer.forward (rotary self-attention, no bias_kv, no dropout)
    on (B, T, E) with an additive key mask `key_bias` (B, 1, 1, T) and the `rotary_tables` for
    T, through the layer's own modules (so LoRA and adapters inside them apply). `dropout` > 0
    drops the attention and feed-forward outputs before each residual sum (Vaswani et al. 2017).

    Restated rather than called for the ONNX graph it traces to: fair-esm's (T, B, E) layout, its
    masked_fill of the (B*H, T, T) scores, its per-layer rotary tables and shape arithmetic and
    its rotary half-swap (two slices, a negation and a concat on q and on k) made the default
    model's int8 graph 1.31x slower on a 2-core Xeon (562 against 737 proteins/s at batch 16,
    `bench/graph_speed.py`; fp32 1.14x). The tests check it equals fair-esm's forward.
    """
    attention = layer.self_attn
    # sizes read from key_bias, which all layers share, so that the traced graph computes them
    # once (ONNX Runtime merges the identical shape nodes; per-layer ones cost ~5% at batch 16)
    batch, length = key_bias.shape[0], key_bias.shape[-1]
    dim, heads, head_dim = attention.embed_dim, attention.num_heads, attention.head_dim

    def heads_first(y: torch.Tensor, *head_shape: int) -> torch.Tensor:
        """(B, T, E) -> (B, H, T, *head_shape)"""
        return y.reshape(batch, length, heads, *head_shape).transpose(1, 2)

    def rotated(y: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        halves = heads_first(y, 2, head_dim // 2)
        return rotate(halves, cos, sin).reshape(batch, heads, length, head_dim)

    h = layer.self_attn_layer_norm(x)
    cos, sin = rotary
    # fair-esm scales q by 1/sqrt(D) before the rotation; folded into q's tables here
    scale = attention.scaling
    q = rotated(attention.q_proj(h), cos * scale, sin * scale)
    k = rotated(attention.k_proj(h), cos, sin)
    v = heads_first(attention.v_proj(h), head_dim)
    scores = torch.matmul(q, k.transpose(-1, -2)) + key_bias
    probs = torch.softmax(scores.float(), dim=-1).type_as(scores)
    mixed = torch.matmul(probs, v).transpose(1, 2).reshape(batch, length, dim)
    x = x + _dropped(attention.out_proj(mixed), dropout)
    return x + _dropped(layer.fc2(esm_gelu(layer.fc1(layer.final_layer_norm(x)))), dropout)


def _dropped(y: torch.Tensor, rate: float) -> torch.Tensor:
    """Dropout when rate > 0 (a Python test, so a traced or exported graph has no node)."""
    return torch.nn.functional.dropout(y, rate) if rate > 0 else y


def rotary_tables(inv_freq: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """fair-esm's rotary cos and sin for positions 0..T-1 as (T, 2, D/2), the two halves of
    each head apart, the sin with its first half negated so that `rotate` needs no negation."""
    angles = torch.outer(
        torch.arange(length, dtype=inv_freq.dtype, device=inv_freq.device), inv_freq
    )
    sin = angles.sin()
    return torch.stack((angles, angles), dim=-2).cos(), torch.stack((-sin, sin), dim=-2)


def rotate(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """fair-esm's rotary position embedding, x cos + rotate_half(x) sin, of x (..., T, 2, D/2)
    (each head's halves apart), with `rotary_tables`."""
    # the halves swapped by one reversed slice (ONNX Slice, step -1)
    return x * cos.to(x.dtype) + x.flip(-2) * signed_sin.to(x.dtype)


def _check_shape(layers: int, dim: int, heads: int) -> None:
    if layers < 1 or dim < 1 or heads < 1:
        raise ModelError(f"ESM-2 shape needs positive sizes, got L{layers}-E{dim}-H{heads}")
    if dim % heads or (dim // heads) % 2:
        raise ModelError(
            f"ESM-2 embed_dim {dim} must split into {heads} heads of an even size "
            "(rotary embeddings rotate pairs of dimensions)"
        )


def _random_config(shape: str) -> dict:
    """`esm2_...` name or `L<layers>-E<dim>-H<heads>` -> backbone config."""
    if is_known_name(shape):
        layers, dim, heads = ESM2_SHAPES[shape]
    else:
        match = re.fullmatch(r"L(\d+)-E(\d+)-H(\d+)", shape)
        if match is None:
            raise ModelError(
                f"bad backbone {RANDOM_PREFIX}{shape}: "
                + _SPEC_HELP.format(names=", ".join(ESM2_SHAPES))
            )
        layers, dim, heads = (int(group) for group in match.groups())
    return {"layers": layers, "embed_dim": dim, "heads": heads, "token_dropout": True}


def _hub_checkpoint(name: str) -> Path:
    """The cached file of a published model, downloaded into the torch hub cache if missing."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / f"{name}.pt"
    if path.is_file():
        return path
    url = MODEL_URL.format(name=name)
    log.info("downloading %s to %s", url, path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # writes a temporary file beside `path` and renames it when complete
        torch.hub.download_url_to_file(url, str(path), progress=log.isEnabledFor(logging.INFO))
    except OSError as err:  # URLError, HTTPError, timeouts, disk errors
        raise ModelError(
            f"cannot download ESM-2 model {name} from {url} ({err}). Without network access, "
            f"pass the checkpoint file instead: --backbone /path/to/{name}.pt (a "
            f"{name}{REGRESSION_SUFFIX} beside it is optional), or put it in the torch hub "
            f"cache as {path} (the hub directory is $TORCH_HOME/hub, here {torch.hub.get_dir()})"
        ) from err
    return path


def torch_file(path: Path, allowed: tuple[type, ...] = ()) -> object:
    """torch.load of plain data (tensors, containers and the `allowed` classes): code in a
    pickle is never run. Failures raise ValueError with a one-line reason, not torch's advice
    to load the file unsafely."""
    try:
        with torch.serialization.safe_globals(list(allowed)), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 4" on foreign files
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "Weights only load failed" in str(err):
            raise ValueError(
                "it holds pickled Python objects, not only tensors and plain data (not loaded: "
                "unpickling them could run code)"
            ) from err
        raise ValueError(f"not a torch file ({err})") from err
    except (EOFError, OSError, RuntimeError, ValueError) as err:
        raise ValueError(
            f"truncated, corrupt or not a torch file ({type(err).__name__}: {err})"
        ) from err


def _trusted_load(path: Path) -> object:
    """A fair-esm checkpoint's content (plain data and its argparse.Namespace config)."""
    try:
        return torch_file(path, (argparse.Namespace,))
    except ValueError as err:
        raise ModelError(f"{path}: not a readable fair-esm checkpoint: {err}") from err


def _load_checkpoint(path: Path) -> ESM2:
    """A fair-esm ESM-2 checkpoint in the official layout, whatever its file name."""
    if not path.is_file():
        raise ModelError(
            f"{path}: no such file. " + _SPEC_HELP.format(names=", ".join(ESM2_SHAPES))
        )
    data = _trusted_load(path)
    config, state = _official_layout(path, data)
    regression = Path(str(path.with_suffix("")) + REGRESSION_SUFFIX)
    if regression.is_file():
        extra = _trusted_load(regression)
        if not isinstance(extra, dict) or not isinstance(extra.get("model"), dict):
            raise ModelError(f"{regression}: not a fair-esm contact-regression file")
        state.update(_strip_prefixes(extra["model"]))
    esm = build_backbone(config)
    _load_state(esm, state, path)
    return esm


def save_fair_esm(esm: ESM2, path: Path) -> None:
    """`esm` as a fair-esm ESM-2 checkpoint in the official layout (what fair-esm's ESM-2
    loader and load_backbone read; the inverse of _official_layout), written atomically;
    the contact head is left out, as fair-esm keeps it in an optional separate file."""
    cfg = argparse.Namespace(
        arch="ESM2",
        encoder_layers=esm.num_layers,
        encoder_embed_dim=esm.embed_dim,
        encoder_ffn_embed_dim=4 * esm.embed_dim,
        encoder_attention_heads=esm.attention_heads,
        token_dropout=esm.token_dropout,
    )
    state = {}
    for key, value in esm.state_dict().items():
        if key in _OPTIONAL_KEYS:
            continue
        prefix = "encoder." if key.startswith("lm_head.") else "encoder.sentence_encoder."
        state[prefix + key] = value
    with atomic_write(path, "wb") as handle:
        torch.save({"cfg": {"model": cfg}, "model": state}, handle)


def _official_layout(path: Path, data: object) -> tuple[dict, dict]:
    """(backbone config, state with module-relative keys) of a loaded checkpoint."""
    try:
        cfg = data["cfg"]["model"]
        config = {
            "layers": cfg.encoder_layers,
            "embed_dim": cfg.encoder_embed_dim,
            "heads": cfg.encoder_attention_heads,
            "token_dropout": cfg.token_dropout,
        }
        state = data["model"]
    except (KeyError, IndexError, TypeError, AttributeError) as err:
        raise ModelError(
            f"{path}: not a fair-esm ESM-2 checkpoint (expected cfg['model'] with "
            f"encoder_layers, encoder_embed_dim, encoder_attention_heads, token_dropout and "
            f"the weights under 'model'; missing {err})"
        ) from err
    if not isinstance(state, dict):
        raise ModelError(f"{path}: not a fair-esm ESM-2 checkpoint ('model' is not a dict)")
    return config, _strip_prefixes(state)


def _strip_prefixes(state: dict) -> dict:
    return {_KEY_PREFIX.sub("", key): value for key, value in state.items()}


def _load_state(esm: ESM2, state: dict, path: Path) -> None:
    expected = set(esm.state_dict())
    missing = sorted(expected - set(state) - _OPTIONAL_KEYS)
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        raise ModelError(
            f"{path}: weights do not match an ESM-2 of its configured shape "
            f"(missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    try:
        esm.load_state_dict(state, strict=False)
    except RuntimeError as err:  # tensor shapes that disagree with the config
        raise ModelError(f"{path}: weights do not match its configured shape ({err})") from err
