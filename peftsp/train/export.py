"""Export a trained checkpoint to a model bundle: merged weights as ONNX + model.json.

Steps: load the checkpoint; merge LoRA into the base weights and check the merged model
against the unmerged one; export backbone + emission layer with dynamic batch and length;
check ONNX Runtime against PyTorch on a padded batch and refuse to write a bundle that
disagrees; write model.json (config, CRF scores, states, checksums). Optional fp16 (for the
CUDA EP) and int8 (CPU) variants are written beside the fp32 graph; the int8 graph has
static activation scales calibrated on proteins (--int8-calibration), so that each protein's
prediction does not depend on the proteins batched with it, or dynamic ones without them.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import shutil
import tempfile
import warnings
from itertools import islice
from pathlib import Path

import numpy as np
import torch
from torch import nn

from peftsp import tokens
from peftsp.bundle import (
    INPUT_KINGDOM,
    INPUT_TOKENS,
    INT8_METHODS,
    ORGANISM_IDS,
    OUTPUT_EMISSIONS,
    PRECISION_FILES,
    metadata,
    write_metadata,
)
from peftsp.errors import ModelError
from peftsp.fasta import read_proteins
from peftsp.files import umask
from peftsp.train import peft
from peftsp.train.model import SignalPeptideModel, load_checkpoint

log = logging.getLogger("peftsp")

OPSET = 17
# Largest |ONNX - PyTorch| emission difference accepted for the fp32 graph.
TOLERANCE = 1e-4


class _Exported(nn.Module):
    """What goes into the ONNX graph: tokens (+ kingdom) -> emissions, no CRF, no LM head."""

    def __init__(self, model: SignalPeptideModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor, kingdom: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(tokens, kingdom)


def example_batch(window: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A padded batch of random proteins of mixed lengths (padding is essential for tracing)."""
    rng = np.random.default_rng(seed)
    lengths = [window, max(1, window // 2), 7, 1, window - 3]
    seqs = ["".join(rng.choice(list(tokens.AMINO_ACIDS), size=n)) for n in lengths]
    ids, used = tokens.encode(seqs, window)
    kingdom = np.arange(len(seqs)) % len(ORGANISM_IDS)
    return ids, used, kingdom


def _emissions(model: nn.Module, ids: np.ndarray, kingdom: np.ndarray | None) -> np.ndarray:
    with torch.no_grad():
        k = torch.as_tensor(kingdom) if kingdom is not None else None
        return model(torch.as_tensor(ids), k).float().numpy()


def max_abs_diff(a: np.ndarray, b: np.ndarray, lengths: np.ndarray) -> float:
    """Largest difference over the valid residue positions of each row."""
    valid = np.arange(a.shape[1])[None, :] < lengths[:, None]
    return float(np.abs(a - b)[valid].max())


def merged_copy(model: SignalPeptideModel) -> SignalPeptideModel:
    """A copy with LoRA folded into the base weights (W + alpha/r B A)."""
    merged = copy.deepcopy(model).eval()
    peft.merge_lora(merged)
    return merged


def _onnx_inputs(model: SignalPeptideModel, ids: np.ndarray, kingdom: np.ndarray) -> dict:
    feeds = {INPUT_TOKENS: ids}
    if model.config.kingdom_conditioning:
        feeds[INPUT_KINGDOM] = kingdom
    return feeds


def graph_diff(model: SignalPeptideModel, path: Path, reference: np.ndarray | None = None) -> float:
    """Largest |graph - PyTorch| emission difference on the padded example batch; `reference`:
    the model's emissions for that batch, when already computed."""
    ids, lengths, kingdom = example_batch(model.config.window)
    if reference is None:
        reference = _emissions(model, ids, kingdom if model.config.kingdom_conditioning else None)
    return max_abs_diff(run_onnx(path, _onnx_inputs(model, ids, kingdom)), reference, lengths)


def export_onnx(model: SignalPeptideModel, path: Path, ids: np.ndarray, kingdom: np.ndarray):
    """TorchScript-based ONNX export with dynamic batch and length."""
    conditioned = model.config.kingdom_conditioning
    args = (
        (torch.as_tensor(ids), torch.as_tensor(kingdom)) if conditioned else (torch.as_tensor(ids),)
    )
    names = [INPUT_TOKENS, INPUT_KINGDOM] if conditioned else [INPUT_TOKENS]
    axes = {INPUT_TOKENS: {0: "batch", 1: "length"}, OUTPUT_EMISSIONS: {0: "batch", 1: "residues"}}
    if conditioned:
        axes[INPUT_KINGDOM] = {0: "batch"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # legacy-exporter deprecation and tracer notices
        torch.onnx.export(
            _Exported(model).eval(),
            args,
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=names,
            output_names=[OUTPUT_EMISSIONS],
            dynamic_axes=axes,
        )


def run_onnx(path: Path, feeds: dict) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run([OUTPUT_EMISSIONS], feeds)[0]


def _write_fp16(src: Path, dst: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    onnx.save(convert_float_to_float16(onnx.load(str(src)), keep_io_types=True), str(dst))


# Proteins whose activations set the static int8 scales (shared equally between the files).
INT8_CALIBRATION_PROTEINS = 512


def calibration_feeds(
    fastas: list[str], window: int, kingdom_input: bool
) -> list[dict[str, np.ndarray]]:
    """Graph inputs of up to INT8_CALIBRATION_PROTEINS proteins, the first of each FASTA file
    in equal shares, as organism "other" (the kingdom only enters the fp32 emission head).

    One protein per input, padded to the full window: the histogram calibrators stack the
    activations of all inputs, which needs one shape."""
    share = max(1, INT8_CALIBRATION_PROTEINS // len(fastas))
    sequences = [p.sequence for path in fastas for p in islice(read_proteins(path), share)]
    feeds = []
    for sequence in sequences:
        ids, _ = tokens.encode([sequence], window)
        padded = np.full((1, window + 2), tokens.PAD, dtype=np.int64)
        padded[:, : ids.shape[1]] = ids
        feed = {INPUT_TOKENS: padded}
        if kingdom_input:
            feed[INPUT_KINGDOM] = np.full(1, ORGANISM_IDS["other"], dtype=np.int64)
        feeds.append(feed)
    return feeds


def _int8_excluded(src: Path) -> list[str]:
    """MatMuls kept in fp32: the emission head, which writes the CRF's scores directly
    (quantizing it doubled the mean emission error, 0.0035 -> 0.0074, for no measurable speed),
    and the attention products of two activations (no weights to quantize)."""
    import onnx

    graph = onnx.load(str(src), load_external_data=False).graph
    weights = {t.name for t in graph.initializer}
    return [
        n.name
        for n in graph.node
        if n.op_type in ("MatMul", "Gemm")
        and ("/head/" in n.name or not any(i in weights for i in n.input))
    ]


@contextlib.contextmanager
def _quantizer_silenced():
    """ONNX Runtime's quantizer prints its progress to stdout and advises pre-processing through
    the root logger; `peftsp export` reports for itself (and is silent with --quiet)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def write_int8(
    src: Path,
    dst: Path,
    weight_bits: int,
    feeds: list[dict[str, np.ndarray]] | None,
    method: str = "minmax",
) -> None:
    """The int8 graph: per-channel int8 weights (7-bit for CPUs without VNNI / dotprod, see
    bundle.INT8_WEIGHT_BITS); activation scales static (set by `method` from the calibration
    `feeds`; outputs left in float, so ONNX Runtime fuses each product into one integer kernel)
    or, without feeds, computed per batch at run time."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    common = {
        "weight_type": QuantType.QInt8,
        "per_channel": True,
        "reduce_range": weight_bits == 7,
        "nodes_to_exclude": _int8_excluded(src),
    }
    if feeds is None:
        with _quantizer_silenced():
            quantize_dynamic(str(src), str(dst), **common)
        return

    class Feeds(CalibrationDataReader):
        def __init__(self) -> None:
            self.pending = iter(feeds)

        def get_next(self) -> dict | None:
            return next(self.pending, None)

    with _quantizer_silenced():
        quantize_static(
            str(src),
            str(dst),
            Feeds(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["MatMul"],
            activation_type=QuantType.QUInt8,
            calibrate_method={
                "minmax": CalibrationMethod.MinMax,
                "percentile": CalibrationMethod.Percentile,
            }[method],
            extra_options={"OpTypesToExcludeOutputQuantization": ["MatMul"]},
            **common,
        )


def export_bundle(
    model: SignalPeptideModel,
    outdir: str | Path,
    name: str = "peftsp",
    fp16: bool = False,
    int8: bool = False,
    metrics: dict | None = None,
    training: dict | None = None,
    cpu_precision: str = "fp32",
    int8_weight_bits: int = 8,
    int8_calibration: list[str] | None = None,
    int8_method: str = "minmax",
) -> dict:
    """Write a checked model bundle to outdir (replacing an older bundle there atomically);
    int8_calibration: protein FASTA files for static int8 activation scales (else dynamic),
    set by int8_method (INT8_METHODS)."""
    outdir = Path(outdir)
    if cpu_precision not in {"fp32", "fp16" if fp16 else "fp32", "int8" if int8 else "fp32"}:
        raise ModelError(
            f"--cpu-precision {cpu_precision}: export that graph too (--{cpu_precision})"
        )
    if int8_calibration and not int8:
        raise ModelError("--int8-calibration: export the int8 graph too (--int8)")
    if int8_method not in INT8_METHODS:
        raise ModelError(f"--int8-method {int8_method}: expected one of {', '.join(INT8_METHODS)}")
    calibration = None
    if int8_calibration:  # read before any work, so a bad file fails early
        conditioned = model.config.kingdom_conditioning
        calibration = calibration_feeds(int8_calibration, model.config.window, conditioned)
    if outdir.exists() and any(outdir.iterdir()) and not (outdir / "model.json").exists():
        raise ModelError(f"{outdir}: exists and is not a model bundle; refusing to overwrite")
    model = model.eval()
    ids, lengths, kingdom = example_batch(model.config.window)
    k = kingdom if model.config.kingdom_conditioning else None
    reference = _emissions(model, ids, k)
    merged = merged_copy(model)
    merge_diff = max_abs_diff(_emissions(merged, ids, k), reference, lengths)
    log.info("merged vs unmerged PyTorch: max abs diff %.2e", merge_diff)
    if merge_diff > TOLERANCE:
        raise ModelError(f"merged model differs from the unmerged one by {merge_diff:.2e}")
    outdir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=outdir.parent, prefix=f".{outdir.name}."))
    staging.chmod(0o777 & ~umask())
    try:
        graph = {p: staging / name for p, name in PRECISION_FILES.items()}
        export_onnx(merged, graph["fp32"], ids, kingdom)
        onnx_diff = graph_diff(model, graph["fp32"], reference)
        log.info("ONNX Runtime vs PyTorch: max abs diff %.2e", onnx_diff)
        if onnx_diff > TOLERANCE:
            raise ModelError(
                f"ONNX export disagrees with PyTorch (max abs diff {onnx_diff:.2e} > "
                f"{TOLERANCE:g}); no bundle written"
            )
        checks = {"merge_max_abs_diff": merge_diff, "max_abs_diff": onnx_diff}
        if fp16:
            _write_fp16(graph["fp32"], graph["fp16"])
        if int8:
            write_int8(graph["fp32"], graph["int8"], int8_weight_bits, calibration, int8_method)
            checks["int8_max_abs_diff"] = graph_diff(model, graph["int8"], reference)
        files = {path.name: p for p, path in graph.items() if path.exists()}
        meta = metadata(
            name=name,
            config=model.config.to_dict(),
            crf=model.crf.numpy_parameters(),
            checks=checks,
            metrics=metrics,
            training=training,
            cpu_precision=cpu_precision,
            int8_weight_bits=int8_weight_bits if int8 else None,
            int8_activations=("static" if calibration else "dynamic") if int8 else None,
            int8_method=int8_method if calibration else None,
        )
        meta = write_metadata(staging, meta, files)
        _replace_dir(staging, outdir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return meta


def _replace_dir(new: Path, target: Path) -> None:
    """Move the staged bundle into place; an older bundle is removed only afterwards."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
    new.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def export_command(args) -> None:
    """`peftsp export`: checkpoint -> checked ONNX model bundle."""
    if args.threads:
        torch.set_num_threads(args.threads)
    model, extra = load_checkpoint(args.checkpoint)
    beside = Path(args.checkpoint).with_name("test_metrics.json")  # written by `peftsp train`
    source = Path(args.metrics) if args.metrics else beside if beside.is_file() else None
    metrics = None
    if source is not None:
        loaded = json.loads(source.read_text())
        metrics = loaded.get("metrics", loaded)
    meta = export_bundle(
        model,
        args.outdir,
        name=args.name or Path(args.checkpoint).resolve().parent.name,
        fp16=args.fp16,
        int8=args.int8,
        metrics=metrics,
        training=extra,
        cpu_precision=args.cpu_precision,
        int8_weight_bits=args.int8_weights,
        int8_calibration=args.int8_calibration,
        int8_method=args.int8_method,
    )
    print(
        f"wrote {args.outdir}: ONNX vs PyTorch max abs diff "
        f"{meta['export_check']['max_abs_diff']:.2e}"
    )
