"""ONNX Runtime sessions over a model bundle's graph (no torch).

Sessions follow the provider chain TensorRT (fp16, engine and timing caches, shape profiles for
the model window) -> CUDA -> CPU, chosen by --device auto|cpu|cuda|tensorrt; the providers the
session really got are logged, and asking for a GPU that cannot be used is an error.
"""

from __future__ import annotations

import logging
import platform
from pathlib import Path

import numpy as np

from peftsp.bundle import INPUT_KINGDOM, INPUT_TOKENS, OUTPUT_EMISSIONS, Bundle
from peftsp.errors import DeviceError, ModelError

log = logging.getLogger("peftsp")

DEVICES = ("auto", "cpu", "cuda", "tensorrt")
_TRT = "TensorrtExecutionProvider"
_CUDA = "CUDAExecutionProvider"
_CPU = "CPUExecutionProvider"


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
            f"(available: {', '.join(available)}); install the onnxruntime-gpu build for your "
            "CUDA (12 or 13) and cuDNN 9"
        )
    chain: list = []
    if device in ("auto", "tensorrt") and _TRT in available:
        chain.append((_TRT, tensorrt_options(bundle, batch_size, trt_cache)))
    if device in ("auto", "cuda", "tensorrt") and _CUDA in available:
        chain.append(_CUDA)
    return [*chain, _CPU]


# /proc/cpuinfo flags of an exact uint8 x int8 dot product: x86 AVX512-VNNI or AVX-VNNI, Arm
# dotprod ("asimddp").
_EXACT_INT8_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "asimddp"})


def cpu_has_exact_int8(cpuinfo: str | None = None, system: str | None = None) -> bool:
    """Whether this CPU sums ONNX Runtime's uint8 x int8 products without saturating (see
    bundle.INT8_WEIGHT_BITS): from /proc/cpuinfo's flags on Linux; every Apple-silicon Mac has
    dot-product instructions; anywhere else we cannot tell, so no."""
    system = system or platform.system()
    if system == "Darwin":
        return platform.machine() == "arm64"
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return False
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features") and _EXACT_INT8_FLAGS & set(value.split()):
            return True
    return False


def resolve_precision(bundle: Bundle, precision: str, device: str) -> str:
    """The graph to run: `precision`, or for "auto" the bundle's choice for the device (a GPU
    when --device cuda/tensorrt, or auto with a GPU provider installed, else this CPU)."""
    if precision == "int8" and bundle.int8_weight_bits == 8 and not cpu_has_exact_int8():
        log.warning(
            "this CPU has no exact int8 dot product (VNNI / Arm dotprod): the int8 graph's "
            "8-bit weights may saturate; use --precision fp32 or auto, or a bundle exported "
            "with --int8-weights 7"
        )
    if precision != "auto":
        return precision
    import onnxruntime as ort

    gpu_providers = {_TRT, _CUDA} & set(ort.get_available_providers())
    gpu = device in ("cuda", "tensorrt") or (device == "auto" and bool(gpu_providers))
    return bundle.auto_precision(gpu, exact_int8=gpu or cpu_has_exact_int8())


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
        precision: str = "auto",
        threads: int | None = None,
        batch_size: int = 64,
        trt_cache: str | Path | None = None,
    ) -> None:
        import onnxruntime as ort

        if device not in DEVICES:
            raise DeviceError(f"unknown device {device!r}; expected one of {', '.join(DEVICES)}")
        self.bundle = bundle
        self.precision = precision = resolve_precision(bundle, precision, device)
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
        feeds = {INPUT_TOKENS: tokens.astype(np.int64, copy=False)}
        if INPUT_KINGDOM in self.inputs:
            feeds[INPUT_KINGDOM] = kingdom.astype(np.int64, copy=False)
        return self.session.run([OUTPUT_EMISSIONS], feeds)[0].astype(np.float32, copy=False)
