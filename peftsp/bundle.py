"""The model bundle: the one definition of its format, written by `peftsp export`, read and
checked by everything that predicts. No torch.

A bundle is a directory: model.json (architecture, CRF scores, states, sequence rules,
calibration, training record, checksums) and the ONNX graph(s) mapping token ids (+ organism
ids) to per-residue CRF emissions. Loading checks it completely before any protein is read.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from peftsp import __version__, grammar
from peftsp.errors import ModelError
from peftsp.files import atomic_write, sha256_file

FORMAT = "peftsp-model"
# 2: sequence rules and calibration (a version-1 reader would silently ignore them).
VERSIONS = (1, 2)
MODEL_ENV = "PEFTSP_MODEL"
# The embedded default model: package data; in a checkout a link to models/default.
DEFAULT_MODEL = Path(__file__).parent / "default_model"
PRECISIONS = ("fp32", "fp16", "int8")
PRECISION_FILES = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}
# `--precision auto`: fp16 on a GPU when the bundle has it, else fp32; on a CPU the bundle's
# "cpu_precision" (set at export, after measuring that graph on held-out data), else fp32 -
# and fp32 instead of an int8 graph with 8-bit weights on a CPU without an exact int8 dot
# product (see INT8_WEIGHT_BITS).
PRECISION_CHOICES = ("auto", *PRECISIONS)
# Weight bits of an int8 graph ("int8_weight_bits" in model.json; bundles written before it was
# recorded have 7). ONNX Runtime multiplies uint8 activations by int8 weights; x86 CPUs with
# VNNI and Arm CPUs with dot-product instructions sum the products exactly, while plain AVX2 /
# AVX-512 sum pairs into 16 bits, which saturates with 8-bit weights. 7-bit weights
# (quantize_dynamic's reduce_range) never saturate but are coarser.
INT8_WEIGHT_BITS = (7, 8)
# How an int8 graph scales activations ("int8_activations"; older bundles: dynamic): "static"
# scales were calibrated at export, so a protein's result does not depend on its batch;
# "dynamic" ones are computed per batch at run time, so results shift with the batch-mates.
INT8_ACTIVATIONS = ("static", "dynamic")
# How static int8 activation ranges are set from the calibration activations (`--int8-method`):
# the extremes, or the 99.999th percentile of |x| (clips rare outliers for a finer scale).
# ONNX Runtime's entropy method is not offered: with ONNX Runtime 1.32 it gave exactly the
# minmax ranges on every graph tried.
INT8_METHODS = ("minmax", "percentile")
# The graph's inputs and output.
INPUT_TOKENS, INPUT_KINGDOM, OUTPUT_EMISSIONS = "tokens", "kingdom", "emissions"
# Organism ids of the kingdom input ("other" = unknown; kingdom-conditioned models are trained
# with the kingdom hidden as "other" for a share of the batches).
ORGANISM_IDS: dict[str, int] = {name: i for i, name in enumerate(grammar.ORGANISMS)}
# The most residues a bundle may read per protein (a sanity bound on model.json's window).
MAX_WINDOW = 100_000
# `--prior`: the type prior the probabilities are for. "proteome": the prior estimated on whole
# proteomes of the organism group; "training": the labelled data's own (what benchmark metrics
# are computed under). Both are stored in model.json's calibration as log ratios to the prior
# the model saw in training (which may have subsampled a class).
PRIORS = ("proteome", "training")


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
    def sequence_rules(self) -> bool:
        """Whether the model was trained, and must be decoded, with grammar.sequence_mask."""
        return bool(self.meta.get("sequence_rules", False))

    @property
    def name(self) -> str:
        return str(self.meta.get("name", self.path.name))

    @property
    def is_demo(self) -> bool:
        """A small model trained here from random weights (no protein-language pretraining)."""
        return str(self.meta.get("backbone", "")).startswith("random:")

    @property
    def temperature(self) -> float:
        return float(self.meta.get("calibration", {}).get("temperature", 1.0))

    def has_graph(self, precision: str) -> bool:
        return PRECISION_FILES[precision] in self.meta["files"]

    @property
    def int8_weight_bits(self) -> int:
        return int(self.meta.get("int8_weight_bits", 7))

    def auto_precision(self, gpu: bool, exact_int8: bool = True) -> str:
        """The graph `--precision auto` runs (see PRECISION_CHOICES); exact_int8: whether the
        CPU sums int8 products without saturating (runtime.cpu_has_exact_int8)."""
        if gpu:
            return "fp16" if self.has_graph("fp16") else "fp32"
        chosen = self.meta.get("cpu_precision", "fp32")
        if chosen == "int8" and self.int8_weight_bits == 8 and not exact_int8:
            return "fp32"
        return chosen if self.has_graph(chosen) else "fp32"

    def onnx_path(self, precision: str) -> Path:
        name = PRECISION_FILES[precision]
        if not self.has_graph(precision):
            have = [p for p, f in PRECISION_FILES.items() if f in self.meta["files"]]
            raise ModelError(
                f"{self.path}: no {precision} graph in this bundle (has {', '.join(have)}); "
                f"export it with `peftsp export --{precision}`"
            )
        return self.path / name

    def organism_id(self, organism: str) -> int:
        return int(self.meta["organism_ids"][organism])

    def log_prior_shift(self, organism: str, prior: str = "proteome") -> np.ndarray:
        """(6,) stored log prior ratios of an organism group (zeros when there are none):
        "training": labelled data / what the model saw (undoes class subsampling, raw scores);
        "proteome": whole proteomes / labelled data (on the tempered type probabilities)."""
        if prior not in PRIORS:
            raise ModelError(f"unknown prior {prior!r}; expected one of {', '.join(PRIORS)}")
        shifts = self.meta.get("calibration", {}).get("log_prior_shift", {}).get(prior, {})
        if organism not in shifts:
            return np.zeros(len(grammar.SP_TYPES))
        return np.asarray(shifts[organism], dtype=np.float64)

    def decoder_crf(self, organism: str, prior: str = "proteome") -> dict[str, np.ndarray]:
        """The CRF scores to decode with: the organism's type prior shift added to the start
        scores of each type's block.

        Every path stays in one type's block, so adding log w_t to the block's start scores
        multiplies the posterior of type t by w_t (renormalised): Bayes' prior shift, exact.
        """
        if prior not in PRIORS:
            raise ModelError(f"unknown prior {prior!r}; expected one of {', '.join(PRIORS)}")
        shift = self.log_prior_shift(organism, "training")
        if prior == "proteome":
            # Estimated on tempered posteriors: T log w here is log w after tempering.
            shift = shift + self.temperature * self.log_prior_shift(organism, "proteome")
        return {**self.crf, "start": self.crf["start"] + shift[grammar.STATE_TYPE]}


def model_config(meta: dict) -> dict:
    """The model config `metadata` spread over model.json, gathered back (ModelConfig's keys)."""
    return {
        **meta["peft"],
        "backbone": meta["backbone"],
        "backbone_shape": meta["backbone_shape"],
        "window": meta["window"],
        "kingdom_conditioning": meta["kingdom_conditioning"],
        "kingdom_input": meta.get("kingdom_input", False),
        "sequence_rules": meta.get("sequence_rules", False),
    }


def default_model_dir() -> Path:
    """$PEFTSP_MODEL, else the embedded default model."""
    env = os.environ.get(MODEL_ENV)
    return Path(env) if env else DEFAULT_MODEL


def metadata(
    *,
    name: str,
    config: dict,
    crf: dict[str, np.ndarray],
    checks: dict,
    metrics: dict | None,
    training: dict | None,
    cpu_precision: str = "fp32",
    int8_weight_bits: int | None = None,
    int8_activations: str | None = None,
    int8_method: str | None = None,
) -> dict:
    """model.json content without the file checksums. `config` is the model config
    (backbone, backbone_shape, window, kingdom_conditioning, sequence_rules, PEFT settings)."""
    config = dict(config)
    return {
        "format": FORMAT,
        "format_version": VERSIONS[-1],
        "peftsp_version": __version__,
        "name": name,
        "backbone": config.pop("backbone"),
        "backbone_shape": config.pop("backbone_shape"),
        "window": config.pop("window"),
        "kingdom_conditioning": config.pop("kingdom_conditioning"),
        **({"kingdom_input": True} if config.pop("kingdom_input", False) else {}),
        "sequence_rules": config.pop("sequence_rules", False),
        "peft": config,
        "states": list(grammar.STATES),
        "sp_types": list(grammar.SP_TYPES),
        "organism_ids": ORGANISM_IDS,
        "crf": {key: np.asarray(value).tolist() for key, value in crf.items()},
        "export_check": checks,
        "cpu_precision": cpu_precision,
        **({} if int8_weight_bits is None else {"int8_weight_bits": int8_weight_bits}),
        **({} if int8_activations is None else {"int8_activations": int8_activations}),
        **({} if int8_method is None else {"int8_method": int8_method}),
        "metrics": metrics,
        "training": training or {},
    }


def write_metadata(directory: Path, meta: dict, precisions: dict[str, str]) -> dict:
    """Write model.json into a bundle directory with the checksum of every other file in it.

    precisions maps graph file names to their precision; other files are listed as data.
    """
    meta = dict(meta)
    meta["files"] = {
        f.name: {"sha256": sha256_file(f), "precision": precisions.get(f.name, "data")}
        for f in sorted(directory.iterdir())
        if f.name != "model.json" and not f.name.startswith(".")
    }
    with atomic_write(directory / "model.json") as handle:
        handle.write(json.dumps(meta, indent=1) + "\n")
    return meta


def load_bundle(path: str | Path | None = None) -> Bundle:
    """Read and check a bundle: format, states, CRF shapes, calibration and every checksum."""
    path = Path(path) if path is not None else default_model_dir()
    meta_path = path / "model.json"
    if not meta_path.is_file():
        hint = "" if path != DEFAULT_MODEL else " (the embedded model is missing; reinstall)"
        raise ModelError(f"{path}: not a model bundle, no model.json{hint}")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ModelError(f"{meta_path}: unreadable ({err})") from err
    check_metadata(meta, meta_path)
    for name, entry in meta["files"].items():
        file = path / name
        if not file.is_file():
            raise ModelError(f"{file}: listed in model.json but missing")
        if sha256_file(file) != entry.get("sha256"):
            raise ModelError(f"{file}: checksum does not match model.json (corrupt or replaced)")
    try:
        crf = {
            key: np.asarray(meta["crf"][key], dtype=np.float32)
            for key in ("transitions", "start", "end")
        }
    except (TypeError, ValueError) as err:
        raise ModelError(f"{meta_path}: CRF scores are not numbers ({err})") from err
    k = grammar.NUM_STATES
    if crf["transitions"].shape != (k, k) or crf["start"].shape != (k,) or crf["end"].shape != (k,):
        raise ModelError(f"{meta_path}: CRF scores do not have {k} states")
    return Bundle(path, meta, crf)


def _check_structure(meta: dict, where: Path) -> None:
    """The types of the fields prediction reads (a hand-edited model.json is named, not a
    traceback)."""
    window = meta["window"]
    if isinstance(window, bool) or not isinstance(window, int) or not 1 <= window <= MAX_WINDOW:
        raise ModelError(
            f"{where}: window {window!r} is not a whole number of residues 1-{MAX_WINDOW}"
        )
    crf = meta["crf"]
    if not isinstance(crf, dict) or any(k not in crf for k in ("transitions", "start", "end")):
        raise ModelError(f"{where}: crf must hold transitions, start and end scores")
    ids = meta["organism_ids"]
    if not isinstance(ids, dict) or any(
        isinstance(ids.get(o), bool) or not isinstance(ids.get(o), int) or ids[o] < 0
        for o in grammar.ORGANISMS
    ):
        raise ModelError(
            f"{where}: organism_ids must give a non-negative integer for each of "
            f"{', '.join(grammar.ORGANISMS)}"
        )
    files = meta["files"]
    if not isinstance(files, dict) or not all(
        isinstance(entry, dict) and isinstance(entry.get("sha256"), str) for entry in files.values()
    ):
        raise ModelError(f"{where}: files must map each graph file to its sha256")


def check_metadata(meta: object, where: Path) -> None:
    """Refuse model.json content this PEFT-SP cannot use correctly."""
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelError(f"{where}: not a PEFT-SP model bundle")
    if meta.get("format_version") not in VERSIONS:
        raise ModelError(
            f"{where}: bundle format version {meta.get('format_version')} is not supported by "
            f"this PEFT-SP (supports {VERSIONS})"
        )
    missing = [k for k in ("states", "crf", "files", "window", "organism_ids") if k not in meta]
    if missing:
        raise ModelError(f"{where}: missing {', '.join(missing)}")
    if meta["states"] != list(grammar.STATES):
        raise ModelError(f"{where}: the bundle's CRF states differ from this PEFT-SP's grammar")
    _check_structure(meta, where)
    if meta.get("cpu_precision", "fp32") not in PRECISIONS:
        raise ModelError(
            f"{where}: cpu_precision {meta['cpu_precision']!r} is not one of {PRECISIONS}"
        )
    if meta.get("int8_weight_bits", 7) not in INT8_WEIGHT_BITS:
        raise ModelError(
            f"{where}: int8_weight_bits {meta['int8_weight_bits']!r} is not one of "
            f"{INT8_WEIGHT_BITS}"
        )
    if meta.get("int8_activations", "dynamic") not in INT8_ACTIVATIONS:
        raise ModelError(
            f"{where}: int8_activations {meta['int8_activations']!r} is not one of "
            f"{INT8_ACTIVATIONS}"
        )
    calibration = meta.get("calibration", {})
    temperature = calibration.get("temperature", 1.0)
    if not isinstance(temperature, int | float) or not 0.05 <= temperature <= 50:
        raise ModelError(f"{where}: calibration temperature {temperature!r} is not usable")
    for prior, shifts in calibration.get("log_prior_shift", {}).items():
        for organism, shift in shifts.items():
            if prior not in PRIORS or organism not in ORGANISM_IDS:
                raise ModelError(f"{where}: unknown prior shift {prior!r} for {organism!r}")
            values = np.asarray(shift, dtype=np.float64)
            if values.shape != (len(grammar.SP_TYPES),) or not np.all(np.isfinite(values)):
                raise ModelError(f"{where}: {prior} prior shift for {organism!r} is malformed")
