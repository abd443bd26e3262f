"""ESM-2 in the Hugging Face `transformers` layout, read into fair-esm's `ESM2` module.

A model directory holds `config.json`, `model.safetensors` (or the shards listed in
`model.safetensors.index.json`) and usually the tokenizer's `vocab.txt`: a folder written by
`save_pretrained`, a snapshot in the HF cache, or what `hf:org/name` resolves to through
huggingface_hub (downloaded when online; only the cache when HF_HUB_OFFLINE=1).

The config must describe a model that fair-esm's ESM2 computes identically: rotary positions,
no embedding layer norm, FFN 4 x E, layer-norm eps 1e-5, rope base 10000, fair-esm's 33-token
alphabet (pad 1, mask 32; vocab.txt, when present, token for token). Tensors are renamed to
fair-esm's keys, checked (missing, extra, shapes, dtypes) before anything is copied, then
copied one at a time, so the peak memory is the model plus one tensor. Weights are read only
from safetensors files: nothing is unpickled.

Accepted key spellings, all of which transformers itself reads: with or without the `esm.`
prefix (EsmForMaskedLM / EsmModel), LayerNorm `weight/bias` or `gamma/beta` (transformers 5
writes the latter), the rotary `inv_freq` per layer, as one `encoder.layer.*.` key, or once at
the model level, or not at all (it is then fair-esm's own, the same formula). The LM head is
mapped when present; the contact head, the pooler, position ids and the unused absolute
position table are ignored.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
from collections.abc import Iterator
from pathlib import Path

import torch

from peftsp import tokens
from peftsp.errors import ModelError

log = logging.getLogger("peftsp")

HF_PREFIX = "hf:"
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
VOCAB = "vocab.txt"
# What `hf:` fetches: never pickled or TensorFlow weights.
HUB_FILES = [CONFIG, "*.safetensors", WEIGHTS_INDEX, VOCAB, "tokenizer_config.json"]

# transformers' EsmConfig defaults for keys a config.json may leave out.
_DEFAULTS = {
    "position_embedding_type": "absolute",
    "layer_norm_eps": 1e-12,
    "token_dropout": False,
    "rope_theta": 10000.0,
    "emb_layer_norm_before": None,
    "is_folding_model": False,
    "is_decoder": False,
    "add_cross_attention": False,
    "rope_scaling": None,
}
_REQUIRED = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "pad_token_id",
    "mask_token_id",
)
_LAYER_NORM_EPS = 1e-5  # torch.nn.LayerNorm's default, used by every fair-esm ESM-2 norm
_ROPE_BASE = 10000.0  # fixed in fair-esm's RotaryEmbedding

# HF module path (after the optional "esm." prefix) -> fair-esm module path.
_TOP = {
    "embeddings.word_embeddings": "embed_tokens",
    "encoder.emb_layer_norm_after": "emb_layer_norm_after",
}
_PER_LAYER = {
    "attention.self.query": "self_attn.q_proj",
    "attention.self.key": "self_attn.k_proj",
    "attention.self.value": "self_attn.v_proj",
    "attention.output.dense": "self_attn.out_proj",
    "attention.LayerNorm": "self_attn_layer_norm",
    "intermediate.dense": "fc1",
    "output.dense": "fc2",
    "LayerNorm": "final_layer_norm",
}
_LM_HEAD = {"lm_head.dense": "lm_head.dense", "lm_head.layer_norm": "lm_head.layer_norm"}
_ROTARY = re.compile(
    r"(?:encoder\.layer\.(?P<layer>\d+|\*)\.attention\.self\.)?rotary_embeddings\.inv_freq"
)
_IGNORED = re.compile(
    r"contact_head\..*|pooler\..*|embeddings\.position_ids"
    r"|embeddings\.position_embeddings\.weight|lm_head\.decoder\.weight"
)
_FLOAT_DTYPES = {"F16", "BF16", "F32", "F64"}


def weight_names(layers: int) -> dict[str, str]:
    """HF tensor name (no `esm.` prefix) -> fair-esm name, for every tensor mapped one to one
    (the LM head included; rotary frequencies are handled apart)."""
    modules = dict(_TOP)
    for layer in range(layers):
        for hf, fair in _PER_LAYER.items():
            modules[f"encoder.layer.{layer}.{hf}"] = f"layers.{layer}.{fair}"
    modules.update(_LM_HEAD)
    names = {f"{hf}.{p}": f"{fair}.{p}" for hf, fair in modules.items() for p in ("weight", "bias")}
    del names["embeddings.word_embeddings.bias"]
    names["lm_head.bias"] = "lm_head.bias"
    return names


def is_model_directory(path: Path) -> bool:
    return (path / CONFIG).is_file()


def read_config(directory: Path) -> dict:
    """The backbone config (layers, embed_dim, heads, token_dropout) of an HF ESM-2 directory,
    after checking that fair-esm's ESM2 computes what transformers would."""
    path = directory / CONFIG
    if not path.is_file():
        raise ModelError(
            f"{directory}: no {CONFIG}; a Hugging Face ESM-2 directory holds {CONFIG} and "
            f"{WEIGHTS} (as written by save_pretrained); for a fair-esm checkpoint pass the "
            ".pt file itself"
        )
    try:
        cfg = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelError(f"{path}: not a readable JSON config ({err})") from err
    if not isinstance(cfg, dict):
        raise ModelError(f"{path}: not a transformers config (not a JSON object)")
    if cfg.get("model_type") != "esm":
        raise ModelError(
            f"{path}: model_type is {cfg.get('model_type')!r}, not 'esm'; --backbone needs an "
            "ESM-2 model (e.g. facebook/esm2_t33_650M_UR50D)"
        )
    missing = [key for key in _REQUIRED if not isinstance(cfg.get(key), int)]
    if missing:
        raise ModelError(f"{path}: ESM config without integer {', '.join(missing)}")
    value = {**_DEFAULTS, **cfg}
    dim, heads = cfg["hidden_size"], cfg["num_attention_heads"]
    problems = []
    if value["is_folding_model"]:
        problems.append("is_folding_model is true (ESMFold, not an ESM-2 language model)")
    if value["position_embedding_type"] != "rotary":
        problems.append(
            f"position_embedding_type is {value['position_embedding_type']!r}, not 'rotary' "
            "(ESM-1b / ESM-1v, not ESM-2)"
        )
    if value["emb_layer_norm_before"]:
        problems.append("emb_layer_norm_before is true (ESM-2 has no embedding layer norm)")
    if cfg["intermediate_size"] != 4 * dim:
        problems.append(f"intermediate_size {cfg['intermediate_size']} is not 4 x {dim}")
    if not _close(value["layer_norm_eps"], _LAYER_NORM_EPS):
        problems.append(f"layer_norm_eps is {value['layer_norm_eps']}, not {_LAYER_NORM_EPS}")
    if not _close(value["rope_theta"], _ROPE_BASE):
        problems.append(f"rope_theta is {value['rope_theta']}, not {_ROPE_BASE:g}")
    if value["rope_scaling"] is not None:
        problems.append("rope_scaling is set")
    if value.get("head_dim") not in (None, dim // max(1, heads)):
        problems.append(f"head_dim is {value['head_dim']}, not {dim} / {heads}")
    if value["is_decoder"] or value["add_cross_attention"]:
        problems.append("it is configured as a decoder or with cross-attention")
    alphabet = tokens.ALPHABET
    for key, expected in (
        ("vocab_size", len(alphabet)),
        ("pad_token_id", alphabet.index("<pad>")),
        ("mask_token_id", alphabet.index("<mask>")),
    ):
        if cfg[key] != expected:
            problems.append(f"{key} is {cfg[key]}, not {expected} as in fair-esm's alphabet")
    if problems:
        raise ModelError(
            f"{path}: not an ESM-2 that fair-esm's ESM2 can compute: " + "; ".join(problems)
        )
    _check_vocab(directory / VOCAB)
    return {
        "layers": cfg["num_hidden_layers"],
        "embed_dim": dim,
        "heads": heads,
        "token_dropout": bool(value["token_dropout"]),
    }


def _close(a: object, b: float) -> bool:
    return isinstance(a, int | float) and math.isclose(a, b, rel_tol=1e-6)


def _check_vocab(path: Path) -> None:
    """vocab.txt, when present, must list fair-esm's ESM-2 alphabet in order."""
    if not path.is_file():
        log.info("%s: not present; the vocabulary is checked by its size and special ids", path)
        return
    try:
        vocab = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as err:
        raise ModelError(f"{path}: not a readable vocabulary ({err})") from err
    while vocab and not vocab[-1]:
        vocab.pop()
    expected = list(tokens.ALPHABET)
    if vocab == expected:
        return
    for index, (got, want) in enumerate(zip(vocab, expected, strict=False)):
        if got != want:
            detail = f"token {index} is {got!r}, fair-esm's ESM-2 alphabet has {want!r}"
            break
    else:
        detail = f"{len(vocab)} tokens, fair-esm's ESM-2 alphabet has {len(expected)}"
    raise ModelError(
        f"{path}: the vocabulary differs from fair-esm's ESM-2 alphabet ({detail}); token ids "
        "would mean other residues"
    )


def _weight_files(directory: Path) -> list[Path]:
    single, index = directory / WEIGHTS, directory / WEIGHTS_INDEX
    if single.is_file():
        return [single]
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
            files = sorted(set(weight_map.values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise ModelError(f"{index}: not a safetensors index ({err!r})") from err
        paths = [directory / name for name in files]
        absent = [str(p) for p in paths if not p.is_file()]
        if absent:
            raise ModelError(f"{index}: lists shards that are missing: {', '.join(absent)}")
        return paths
    pickled = sorted(p.name for p in directory.glob("*.bin")) + sorted(
        p.name for p in directory.glob("*.h5")
    )
    found = f" (found {', '.join(pickled)}; only safetensors weights are read)" if pickled else ""
    raise ModelError(
        f"{single}: no such file{found}. A Hugging Face ESM-2 directory needs {WEIGHTS} or "
        f"{WEIGHTS_INDEX} with its shards beside {CONFIG}"
    )


class _Plan:
    """Which file tensor goes where: (file, key, [fair-esm targets]) and what is wrong."""

    def __init__(self) -> None:
        self.copies: list[tuple[Path, str, list[str]]] = []
        self.extra: list[str] = []
        self.shapes: list[str] = []
        self.seen: dict[str, str] = {}  # normalised name -> original key
        self.prefixed = False


def _normalise(key: str) -> str:
    name = key.removeprefix("esm.")
    if name.endswith("LayerNorm.gamma"):
        name = name.removesuffix("gamma") + "weight"
    elif name.endswith("LayerNorm.beta"):
        name = name.removesuffix("beta") + "bias"
    return name


def _open(path: Path):
    try:
        from safetensors import SafetensorError, safe_open
    except ImportError as err:  # pragma: no cover - an install without the [train] extra
        raise ModelError(
            "reading Hugging Face weights needs safetensors: pip install 'peftsp[train]'"
        ) from err
    try:
        return safe_open(str(path), framework="pt")
    except (SafetensorError, OSError) as err:
        raise ModelError(f"{path}: not a readable safetensors file ({err})") from err


def _tensors(files: list[Path]) -> Iterator[tuple[Path, str, list[int], str]]:
    """(file, key, shape, dtype) of every tensor, without reading the data."""
    for path in files:
        with _open(path) as handle:
            for key in handle.keys():  # noqa: SIM118 (safe_open is not iterable)
                view = handle.get_slice(key)
                yield path, key, list(view.get_shape()), str(view.get_dtype())


def _plan(esm: torch.nn.Module, files: list[Path]) -> _Plan:
    layers = len(esm.layers)
    names = weight_names(layers)
    state = esm.state_dict()
    plan = _Plan()
    for path, key, shape, dtype in _tensors(files):
        plan.prefixed |= key.startswith("esm.")
        name = _normalise(key)
        if name in plan.seen:
            plan.extra.append(f"{key} (same tensor as {plan.seen[name]})")
            continue
        plan.seen[name] = key
        rotary = _ROTARY.fullmatch(name)
        if name in names:
            targets = [names[name]]
        elif rotary:
            layer = rotary.group("layer")
            if layer is not None and layer != "*" and int(layer) >= layers:
                plan.extra.append(key)
                continue
            which = range(layers) if layer in (None, "*") else [int(layer)]
            targets = [f"layers.{i}.self_attn.rot_emb.inv_freq" for i in which]
        elif _IGNORED.fullmatch(name):
            continue
        else:
            plan.extra.append(key)
            continue
        expected = list(state[targets[0]].shape)
        if shape != expected:
            plan.shapes.append(f"{key} is {shape}, expected {expected}")
        elif dtype not in _FLOAT_DTYPES:
            plan.shapes.append(f"{key} has dtype {dtype}, expected a float type")
        else:
            plan.copies.append((path, key, targets))
    return plan


def _missing(plan: _Plan, layers: int) -> list[str]:
    """Required tensors (everything but the LM head) not in the files, plus an incomplete LM
    head, named as a transformers checkpoint would name them."""
    names = weight_names(layers)
    body = [n for n in names if not n.startswith("lm_head.")]
    head = [n for n in names if n.startswith("lm_head.")]
    wanted = body + (head if any(n in plan.seen for n in head) else [])
    prefix = "esm." if plan.prefixed else ""
    return [
        name if name.startswith("lm_head.") else prefix + name
        for name in wanted
        if name not in plan.seen
    ]


def load_weights(esm: torch.nn.Module, directory: Path) -> None:
    """Copy the safetensors weights of `directory` into `esm` (built from read_config)."""
    files = _weight_files(directory)
    where = files[0] if len(files) == 1 else directory / WEIGHTS_INDEX
    plan = _plan(esm, files)
    missing = _missing(plan, len(esm.layers))
    if missing or plan.extra:
        raise ModelError(
            f"{where}: tensors do not match the ESM-2 described by {directory / CONFIG} "
            f"({_shape(esm)}): missing keys {_some(missing)}, extra keys {_some(plan.extra)}"
        )
    if plan.shapes:
        raise ModelError(
            f"{where}: tensor shapes do not match the ESM-2 described by {directory / CONFIG} "
            f"({_shape(esm)}): {_some(plan.shapes)}"
        )
    state = esm.state_dict(keep_vars=True)  # the live parameters and buffers
    with contextlib.ExitStack() as stack, torch.no_grad():
        handles = {path: stack.enter_context(_open(path)) for path in files}
        for path, key, targets in plan.copies:
            try:
                tensor = handles[path].get_tensor(key)
            except Exception as err:  # safetensors raises its own error types
                raise ModelError(f"{path}: cannot read tensor {key} ({err})") from err
            for target in targets:
                state[target].copy_(tensor)


def _shape(esm: torch.nn.Module) -> str:
    return f"L{esm.num_layers}-E{esm.embed_dim}-H{esm.attention_heads}"


def _some(items: list[str], limit: int = 6) -> str:
    if not items:
        return "none"
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def cached_repo_snapshot(path: Path) -> Path | None:
    """The snapshot that `main` points to, when `path` is a repository folder of an HF cache
    (`.../hub/models--org--name`); None when it is not one."""
    if not (path / "snapshots").is_dir():
        return None
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound, CorruptedCacheException

    try:
        cache = scan_cache_dir(path.parent)
    except (CacheNotFound, CorruptedCacheException, OSError) as err:
        raise ModelError(f"{path}: not a readable Hugging Face cache folder ({err})") from err
    for repo in cache.repos:
        if Path(repo.repo_path).resolve() == path.resolve():
            revisions = sorted(repo.revisions, key=lambda r: "main" not in r.refs)
            if revisions and ("main" in revisions[0].refs or len(revisions) == 1):
                return Path(revisions[0].snapshot_path)
            raise ModelError(
                f"{path}: no snapshot is marked main (refs/main); pass the snapshot folder "
                f"itself: {path / 'snapshots'}/<commit>"
            )
    return None


def hub_snapshot(repo: str) -> Path:
    """The local snapshot of `org/name[@revision]`: downloaded (only the files in HUB_FILES)
    when online, else read from the HF cache ($HF_HUB_CACHE, default $HF_HOME/hub)."""
    try:
        from huggingface_hub import constants, snapshot_download
    except ImportError as err:  # pragma: no cover - an install without the [train] extra
        raise ModelError(
            f"{HF_PREFIX}{repo} needs huggingface_hub: pip install 'peftsp[train]'"
        ) from err
    repo_id, _, revision = repo.partition("@")
    offline = constants.HF_HUB_OFFLINE
    try:
        return Path(snapshot_download(repo_id, revision=revision or None, allow_patterns=HUB_FILES))
    except (OSError, ValueError) as err:  # hub errors are OSErrors; a bad repo id ValueError
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if isinstance(err, ValueError):
            how = "Write it as hf:org/name or hf:org/name@revision"
        elif offline:
            how = (
                "HF_HUB_OFFLINE is set, so only the cache is read; download it once where "
                f"there is network (`hf download {repo_id}`) and copy the cache here (or point "
                "HF_HOME / HF_HUB_CACHE at it)"
            )
        else:
            how = (
                "The cache has no complete snapshot of it either; check the repository name, "
                "the network and, for a gated or private repository, HF_TOKEN"
            )
        raise ModelError(
            f"cannot get {HF_PREFIX}{repo} from the Hugging Face Hub or its cache "
            f"{constants.HF_HUB_CACHE} ({type(err).__name__}: {reason}). {how}; or pass a "
            f"local model directory: --backbone /path/to/dir ({CONFIG} + {WEIGHTS})"
        ) from err
