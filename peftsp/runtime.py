"""Model bundles and ONNX Runtime sessions (no torch).

A bundle is a directory written by `peftsp export`: model.json (config, CRF scores, states,
checksums) and the ONNX graph(s). Loading checks it completely before any protein is read.
Sessions follow the provider chain TensorRT (fp16, engine and timing caches, shape profiles for
the model window) -> CUDA -> CPU, chosen by --device auto|cpu|cuda|tensorrt; the providers the
session really got are logged, and asking for a GPU that cannot be used is an error.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from peftsp import grammar
from peftsp.errors import DeviceError, ModelError

log = logging.getLogger("peftsp")

BUNDLE_FORMAT = "peftsp-model"
BUNDLE_VERSIONS = (1,)
MODEL_ENV = "PEFTSP_MODEL"
# The embedded default model: package data; in a checkout a link to models/default.
DEFAULT_MODEL = Path(__file__).parent / "default_model"
PRECISION_FILES = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}
DEVICES = ("auto", "cpu", "cuda", "tensorrt")
_TRT = "TensorrtExecutionProvider"
_CUDA = "CUDAExecutionProvider"
_CPU = "CPUExecutionProvider"


@dataclass
class Bundle:
    """A checked model bundle."""

    path: Path
    meta: dict
    crf: dict[str, np.ndarray]  # "transitions" (37, 37), "start" (37,), "end" (37,)

    @property
    def window(self) -> int:
        return int(self.meta["window"])

    @property
    def kingdom_conditioning(self) -> bool:
        return bool(self.meta["kingdom_conditioning"])

    @property
    def name(self) -> str:
        return str(self.meta.get("name", self.path.name))

    def onnx_path(self, precision: str) -> Path:
        name = PRECISION_FILES[precision]
        if name not in self.meta["files"]:
            have = [p for p, f in PRECISION_FILES.items() if f in self.meta["files"]]
            raise ModelError(
                f"{self.path}: no {precision} graph in this bundle (has {', '.join(have)}); "
                f"export it with `peftsp export --{precision}`"
            )
        return self.path / name

    def organism_id(self, organism: str) -> int:
        return int(self.meta["organism_ids"][organism])


def default_model_dir() -> Path:
    """$PEFTSP_MODEL, else the embedded default model."""
    env = os.environ.get(MODEL_ENV)
    return Path(env) if env else DEFAULT_MODEL


def load_bundle(path: str | Path | None = None) -> Bundle:
    """Read and check a bundle: format, states, CRF shapes and every file's checksum."""
    path = Path(path) if path is not None else default_model_dir()
    meta_path = path / "model.json"
    if not meta_path.is_file():
        hint = "" if path != DEFAULT_MODEL else " (the embedded model is missing; reinstall)"
        raise ModelError(f"{path}: not a model bundle, no model.json{hint}")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ModelError(f"{meta_path}: unreadable ({err})") from err
    _check_meta(meta, meta_path)
    for name, entry in meta["files"].items():
        file = path / name
        if not file.is_file():
            raise ModelError(f"{file}: listed in model.json but missing")
        if sha256_file(file) != entry.get("sha256"):
            raise ModelError(f"{file}: checksum does not match model.json (corrupt or replaced)")
    crf = {
        key: np.asarray(meta["crf"][key], dtype=np.float32)
        for key in ("transitions", "start", "end")
    }
    k = grammar.NUM_STATES
    if crf["transitions"].shape != (k, k) or crf["start"].shape != (k,) or crf["end"].shape != (k,):
        raise ModelError(f"{meta_path}: CRF scores do not have {k} states")
    return Bundle(path, meta, crf)


def _check_meta(meta: object, where: Path) -> None:
    if not isinstance(meta, dict) or meta.get("format") != BUNDLE_FORMAT:
        raise ModelError(f"{where}: not a PEFT-SP model bundle")
    if meta.get("format_version") not in BUNDLE_VERSIONS:
        raise ModelError(
            f"{where}: bundle format version {meta.get('format_version')} is not supported by "
            f"this PEFT-SP (supports {BUNDLE_VERSIONS})"
        )
    missing = [k for k in ("states", "crf", "files", "window", "organism_ids") if k not in meta]
    if missing:
        raise ModelError(f"{where}: missing {', '.join(missing)}")
    if list(meta["states"]) != list(grammar.STATES):
        raise ModelError(f"{where}: the bundle's CRF states differ from this PEFT-SP's grammar")


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def provider_chain(
    device: str, bundle: Bundle, batch_size: int, trt_cache: str | Path | None
) -> list:
    """The ONNX Runtime providers to try, best first, for --device."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device == "tensorrt" and _TRT not in available:
        raise DeviceError(
            "--device tensorrt: this onnxruntime has no TensorRT provider "
            f"(available: {', '.join(available)}); install onnxruntime-gpu and TensorRT 10"
        )
    if device == "cuda" and _CUDA not in available:
        raise DeviceError(
            "--device cuda: this onnxruntime has no CUDA provider "
            f"(available: {', '.join(available)}); install onnxruntime-gpu with CUDA 13"
        )
    chain: list = []
    if device in ("auto", "tensorrt") and _TRT in available:
        chain.append((_TRT, tensorrt_options(bundle, batch_size, trt_cache)))
    if device in ("auto", "cuda", "tensorrt") and _CUDA in available:
        chain.append(_CUDA)
    return [*chain, _CPU]


def tensorrt_options(bundle: Bundle, batch_size: int, cache: str | Path | None) -> dict:
    """TensorRT EP options: fp16, engine + timing cache, shape profiles for the window."""
    tokens = bundle.window + 2
    cache_dir = Path(cache) if cache else Path.home() / ".cache" / "peftsp" / "tensorrt"
    cache_dir.mkdir(parents=True, exist_ok=True)

    def shapes(batch: int, length: int) -> str:
        spec = f"tokens:{batch}x{length}"
        return spec + (f",kingdom:{batch}" if bundle.kingdom_conditioning else "")

    return {
        "trt_fp16_enable": True,
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(cache_dir),
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": str(cache_dir),
        "trt_profile_min_shapes": shapes(1, 3),
        "trt_profile_opt_shapes": shapes(batch_size, tokens),
        "trt_profile_max_shapes": shapes(batch_size, tokens),
    }


class Session:
    """An ONNX Runtime session over a bundle's graph: tokens -> emissions."""

    def __init__(
        self,
        bundle: Bundle,
        device: str = "auto",
        precision: str = "fp32",
        threads: int | None = None,
        batch_size: int = 64,
        trt_cache: str | Path | None = None,
    ) -> None:
        import onnxruntime as ort

        if device not in DEVICES:
            raise DeviceError(f"unknown device {device!r}; expected one of {', '.join(DEVICES)}")
        self.bundle = bundle
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        # predict runs the graph in a background thread while the numpy CRF decodes the batch
        # before: ONNX Runtime workers that spin while they wait would steal the decode's core.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = provider_chain(device, bundle, batch_size, trt_cache)
        try:
            self.session = ort.InferenceSession(
                str(bundle.onnx_path(precision)), options, providers=providers
            )
        except Exception as err:  # onnxruntime raises its own exception types
            raise ModelError(f"{bundle.onnx_path(precision)}: cannot load ({err})") from err
        self.providers = self.session.get_providers()
        wanted = {"cuda": _CUDA, "tensorrt": _TRT}.get(device)
        if wanted and wanted not in self.providers:
            raise DeviceError(
                f"--device {device}: {wanted} could not be initialised (session got "
                f"{', '.join(self.providers)}); check the CUDA, cuDNN and TensorRT libraries"
            )
        log.info("ONNX Runtime providers: %s", ", ".join(self.providers))
        self.inputs = [i.name for i in self.session.get_inputs()]

    def emissions(self, tokens: np.ndarray, kingdom: np.ndarray) -> np.ndarray:
        """Emissions (B, T - 2, 37) float32 for token rows (B, T) and organism ids (B,)."""
        feeds = {"tokens": tokens.astype(np.int64, copy=False)}
        if "kingdom" in self.inputs:
            feeds["kingdom"] = kingdom.astype(np.int64, copy=False)
        return self.session.run(["emissions"], feeds)[0].astype(np.float32, copy=False)
