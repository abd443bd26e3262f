"""The `peftsp` command line: argument definitions and dispatch.

Each subcommand's implementation is imported only when that subcommand runs, so `peftsp
predict` (onnxruntime + numpy) never imports torch.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from peftsp import __version__
from peftsp.bundle import INT8_METHODS, PRECISION_CHOICES, PRECISIONS, PRIORS
from peftsp.errors import PeftSPError
from peftsp.grammar import ORGANISMS
from peftsp.runtime import DEVICES

# SignalP 6.0's organism spellings that are not ours.
ORGANISM_ALIASES = {"euk": "eukarya"}
# The local runner's state directory inside --outdir (peftsp.workflow.runner.WORK_DIR; a test
# checks).
RUNNER_WORK_DIR = ".peftsp-work"

# subcommand -> "module:function" taking the parsed arguments.
_HANDLERS = {
    "pretrain": "peftsp.train.pretrain:pretrain_command",
    "train": "peftsp.train.training:train_command",
    "crossval": "peftsp.train.crossval:crossval_command",
    "evaluate": "peftsp.evaluation:evaluate_command",
    "calibrate": "peftsp.calibration:calibrate_command",
    "average": "peftsp.train.training:average_command",
    "export": "peftsp.train.export:export_command",
    "recover": "peftsp.train.recover:recover_command",
    "predict": "peftsp.predict:predict_command",
    "shard": "peftsp.workflow.shard:shard_command",
    "merge": "peftsp.workflow.merge:merge_command",
    "pipeline": "peftsp.workflow.runner:pipeline_command",
}

# Proteins per model call. bench/throughput.py on E. coli, the default model's int8 graph, 2
# cores: 653 / 691 / 667 proteins/s at batch 16 / 32 / 64, peak RSS 108 / 141 / 191 MiB.
DEFAULT_BATCH_SIZE = 32

PRECISION_HELP = (
    "graph of the bundle to run; auto: fp16 on a GPU when the bundle has it (else fp32), on a "
    "CPU the precision the bundle was exported for (chosen by measuring its held-out "
    "accuracy; fp32 instead of an int8 graph with 8-bit weights on a CPU without VNNI or Arm "
    "dotprod), else fp32"
)

# Default learning rate of each PEFT method (LoRA: the paper's 3B setting).
DEFAULT_LR: dict[str, float] = {"lora": 0.0067, "adapter": 0.001, "prompt": 0.01, "full": 0.001}


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bars or info messages")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")


def _add_training_options(p: argparse.ArgumentParser, one_model: bool = False) -> None:
    p.add_argument("--data", required=True, help="SignalP 6.0 three-line FASTA (plain or .gz)")
    if one_model:
        p.add_argument(
            "--init",
            default=None,
            metavar="CHECKPOINT",
            help="start from the weights of a PEFT-SP checkpoint (model.pt of an earlier "
            "`peftsp train`); its backbone, PEFT method and head are used, so --backbone and "
            "the architecture options are not given",
        )
        p.add_argument(
            "--resume",
            action="store_true",
            help="continue an interrupted run in --outdir from its last finished epoch "
            "(outdir/last.pt), with the same options",
        )
    p.add_argument(
        "--backbone",
        required=not one_model,
        help="ESM-2 model name (e.g. esm2_t33_650M_UR50D, downloaded when online), a local "
        "fair-esm checkpoint .pt, a Hugging Face ESM-2 directory (config.json + "
        "model.safetensors; an HF cache snapshot works), hf:facebook/esm2_t33_650M_UR50D (HF "
        "cache; downloaded when online, HF_HUB_OFFLINE respected), or random:NAME / "
        "random:L6-E320-H20 for random weights",
    )
    p.add_argument("--peft", choices=("lora", "adapter", "prompt", "full"), default="lora")
    p.add_argument(
        "--lora-layers", type=int, default=None, help="LoRA on the last N layers (default: all)"
    )
    p.add_argument("--lora-rank", type=int, default=8)
    p.add_argument("--lora-alpha", type=float, default=8.0)
    p.add_argument("--lora-dropout", type=float, default=0.1)
    p.add_argument(
        "--adapter-layers",
        type=int,
        default=None,
        help="adapters in the last N layers (default: all)",
    )
    p.add_argument("--adapter-size", type=int, default=None, help="bottleneck (default: E/2)")
    p.add_argument("--prompt-length", type=int, default=10, help="soft prompt tokens")
    p.add_argument(
        "--kingdom-conditioning",
        action="store_true",
        help="learn a kingdom embedding added before the emission layer",
    )
    p.add_argument(
        "--kingdom-input",
        action="store_true",
        help="also add a kingdom embedding to every input token, so every layer sees the "
        "kingdom (needs --kingdom-conditioning; with --init it is added, at zero, to the "
        "starting model)",
    )
    p.add_argument(
        "--region-weight",
        type=float,
        default=0.5,
        help="weight of the n/h, h/c composition regulariser (0 = off)",
    )
    p.add_argument(
        "--sequence-rules",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="constrain the CRF by the sequence (Cys at +1 of lipoproteins, [RK]R in Tat SPs, "
        "shortest SP per type), in training and in every decode of the model (default: on)",
    )
    p.add_argument(
        "--majority-fraction",
        type=float,
        default=1.0,
        help="train each epoch on a fresh random share of the largest (kingdom, type) class",
    )
    p.add_argument(
        "--class-balance",
        type=float,
        default=1.0,
        help="draw each (kingdom, type) class n^B times per epoch, its records repeated "
        "(1: as in the data; 0.5: square-root balancing); the largest class keeps its size",
    )
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=20)
    p.add_argument(
        "--lr",
        type=float,
        default=None,
        help="learning rate (default per method: "
        + ", ".join(f"{m} {lr:g}" for m, lr in DEFAULT_LR.items())
        + ")",
    )
    p.add_argument(
        "--lr-schedule",
        choices=("constant", "cosine"),
        default="constant",
        help="learning rate over the run: constant, or cosine annealing from --lr to 0 at the "
        "last batch of --epochs (resume with the same --epochs)",
    )
    p.add_argument("--weight-decay", type=float, default=1.2e-6)
    p.add_argument("--clip", type=float, default=0.25, help="gradient-norm clip")
    p.add_argument("--dropout", type=float, default=0.1, help="dropout before the emissions")
    p.add_argument(
        "--layer-dropout",
        type=float,
        default=0.0,
        help="dropout of each backbone layer's attention and feed-forward outputs in training "
        "(regularises a small model trained from random weights; default: none, as ESM-2)",
    )
    p.add_argument(
        "--residue-mask",
        type=float,
        default=0.0,
        help="share of residues read as <mask> in training, drawn afresh for every batch "
        "(augmentation; default: none)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--window", type=int, default=70, help="residues seen by the model")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu")
    p.add_argument(
        "--limit", type=int, default=None, help="use only the first N training records (quick runs)"
    )


def organism_name(value: str) -> str:
    """An --organism value: ours, or SignalP 6.0's spelling (`euk`) mapped to ours."""
    value = value.strip().lower()
    return ORGANISM_ALIASES.get(value, value)


def _add_organism(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--organism",
        type=organism_name,
        choices=ORGANISMS,
        default="other",
        metavar="{" + ",".join((*ORGANISMS, *ORGANISM_ALIASES)) + "}",
        help="organism group (SignalP 6.0's `euk` means eukarya); eukarya reports only "
        "Sec/SPI, as SignalP 6.0 does (default: other)",
    )


def check_pipeline_outdir(args: argparse.Namespace) -> None:
    """`peftsp pipeline` refuses a non-empty --outdir unless --overwrite, or unless it holds
    the runner's work directory: a killed run, which the runner resumes."""
    from peftsp.predict import check_outdir

    outdir = Path(args.outdir)
    if not (outdir / RUNNER_WORK_DIR).is_dir():
        check_outdir(outdir, args.overwrite)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for all subcommands."""
    parser = argparse.ArgumentParser(
        prog="peftsp", description="Signal-peptide prediction with PEFT-tuned ESM-2 + CRF"
    )
    parser.add_argument("--version", action="version", version=f"peftsp {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "pretrain",
        help="masked-language-model pretraining of an ESM-2-shaped backbone on proteins",
    )
    p.add_argument("--fasta", nargs="+", required=True, help="protein FASTA files (plain or .gz)")
    p.add_argument(
        "--data",
        default=None,
        help="also the sequences of this SignalP 6.0 three-line FASTA, outside --test-partition",
    )
    p.add_argument("--test-partition", type=int, default=0, help="left out of --data")
    p.add_argument(
        "--backbone",
        default="random:L4-E256-H8",
        help="the ESM-2 to start from (as for train: random:<shape>, a name, a file, hf:...)",
    )
    p.add_argument("--outdir", required=True)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=4e-4, help="peak learning rate (warm-up, cosine)")
    p.add_argument("--window", type=int, default=70, help="residues per training window")
    p.add_argument("--mask-fraction", type=float, default=0.15)
    p.add_argument(
        "--val-fraction",
        type=float,
        default=0.02,
        help="seeded share of the sequences held out to keep the best epoch",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue the run saved in --outdir")
    _add_common(p)

    p = sub.add_parser("train", help="train one model (one test/validation split)")
    _add_training_options(p, one_model=True)
    p.add_argument("--test-partition", type=int, default=0)
    p.add_argument("--val-partition", type=int, default=1)
    p.add_argument(
        "--val-fraction",
        type=float,
        default=None,
        help="validate on this seeded share of the non-test records instead of a partition "
        "(trains on every partition but the test one)",
    )
    p.add_argument(
        "--val-seed",
        type=int,
        default=0,
        help="seed of the --val-fraction split, apart from --seed so that runs continued with "
        "--init validate on the records their starting model never trained on (default: 0)",
    )
    p.add_argument("--outdir", required=True)
    _add_common(p)

    p = sub.add_parser("crossval", help="train and test the 6 (test, validation) models")
    _add_training_options(p)
    p.add_argument("--outdir", required=True)
    _add_common(p)

    p = sub.add_parser("evaluate", help="SignalP 6.0 metrics of a model on one partition")
    p.add_argument("--data", required=True)
    p.add_argument("--partition", type=int, required=True)
    p.add_argument("--model", required=True, help="training checkpoint (.pt) or model bundle")
    p.add_argument("--out", default=None, help="write the metrics CSV here")
    p.add_argument("--precision", choices=PRECISION_CHOICES, default="auto", help=PRECISION_HELP)
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    p.add_argument(
        "--no-organism-rule",
        action="store_true",
        help="do not mask non-Sec/SPI types for eukarya at decode time",
    )
    _add_common(p)

    p = sub.add_parser(
        "calibrate",
        help="fit a bundle's temperature (validation records) and proteome type priors",
    )
    p.add_argument("--model", required=True, help="model bundle directory (model.json is updated)")
    p.add_argument("--data", required=True, help="the SignalP 6.0 data the model was trained on")
    p.add_argument(
        "--proteomes",
        required=True,
        help="CSV with columns fasta,organism: unlabelled proteomes for the type-prior EM",
    )
    _add_common(p)

    p = sub.add_parser(
        "average",
        help="average the weights of checkpoints of one model (a model soup: epochs or "
        "fine-tuning runs of one training, same architecture)",
    )
    p.add_argument(
        "--checkpoints",
        nargs="+",
        required=True,
        help="model.pt or last.pt files of `peftsp train` runs of the same model",
    )
    p.add_argument("--out", required=True, help="the averaged checkpoint (.pt) to write")
    p.add_argument(
        "--data",
        default=None,
        help="the runs' training data: also print the validation score (the one `peftsp "
        "train` selects epochs by) of each checkpoint and of the average, on the runs' "
        "validation records, and record the average's",
    )
    _add_common(p)

    p = sub.add_parser(
        "recover",
        help="rebuild a training checkpoint from a bundle (full fine-tuning or a random "
        "backbone), to continue it with train --init",
    )
    p.add_argument("--model", required=True, help="model bundle directory")
    p.add_argument("--out", required=True, help="checkpoint to write (.pt)")
    _add_common(p)

    p = sub.add_parser("export", help="merge PEFT weights and export a model bundle (ONNX)")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--outdir", required=True)
    p.add_argument("--fp16", action="store_true", help="also write an fp16 ONNX for CUDA")
    p.add_argument(
        "--int8",
        action="store_true",
        help="also write an int8 ONNX (CPU; static with --int8-calibration, else dynamic)",
    )
    p.add_argument(
        "--int8-weights",
        type=int,
        choices=(8, 7),
        default=8,
        help="weight bits of the int8 graph: 8 (more precise; exact on CPUs with VNNI or Arm "
        "dotprod, where --precision auto runs it) or 7 (exact on every CPU, coarser)",
    )
    p.add_argument(
        "--int8-calibration",
        nargs="+",
        default=None,
        metavar="FASTA",
        help="protein FASTA files whose first proteins (512 in all) calibrate static int8 "
        "activation scales, so that results do not depend on batching; without it the int8 "
        "graph scales activations per batch",
    )
    p.add_argument(
        "--int8-method",
        choices=INT8_METHODS,
        default="minmax",
        help="how --int8-calibration sets each activation range: minmax (the extremes) or "
        "percentile (the 99.999th percentile of |x|)",
    )
    p.add_argument(
        "--cpu-precision",
        choices=PRECISIONS,
        default="fp32",
        help="the graph `--precision auto` runs on a CPU (int8 needs --int8; choose it only "
        "after measuring its held-out metrics against fp32)",
    )
    p.add_argument("--name", default=None, help="model name (default: the checkpoint's folder)")
    p.add_argument(
        "--metrics",
        default=None,
        help="metrics JSON to record in model.json (e.g. test_metrics.json)",
    )
    _add_common(p)

    p = sub.add_parser("predict", help="predict signal peptides for a FASTA file")
    p.add_argument("--fasta", required=True)
    p.add_argument("--outdir", required=True, help="output directory (new or empty)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a non-empty --outdir, replacing the files PEFT-SP writes there",
    )
    p.add_argument("--model", default=None, help="model bundle directory (default: embedded)")
    _add_organism(p)
    p.add_argument(
        "--sample",
        default=None,
        help="sample name in summary.html and for MultiQC (default: the FASTA file name "
        "without its extensions)",
    )
    p.add_argument(
        "--plot",
        choices=("none", "png", "svg"),
        default="none",
        help="per-protein plots of the residue probabilities in OUTDIR/plots/ (png and svg "
        "need matplotlib: pip install 'peftsp[plot]'; one file per protein: slow on proteomes)",
    )
    p.add_argument("--device", choices=DEVICES, default="auto")
    p.add_argument("--precision", choices=PRECISION_CHOICES, default="auto", help=PRECISION_HELP)
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    p.add_argument("--trt-cache", default=None, help="TensorRT engine/timing cache directory")
    p.add_argument(
        "--prior",
        choices=PRIORS,
        default="proteome",
        help="type prior of the probabilities: 'proteome' (whole proteomes of the organism "
        "group, estimated by the model's calibration) or 'training' (the labelled data's)",
    )
    _add_common(p)

    p = sub.add_parser("shard", help="split a FASTA file into numbered shards (workflow step)")
    p.add_argument("--fasta", required=True)
    p.add_argument("--outdir", required=True)
    p.add_argument("--shard-size", type=int, default=5000)
    _add_common(p)

    p = sub.add_parser("merge", help="merge per-shard predictions in order (workflow step)")
    p.add_argument("--outdir", required=True)
    p.add_argument("shards", nargs="+", help="per-shard prediction directories, in order")
    _add_common(p)

    p = sub.add_parser("pipeline", help="run shard -> predict -> merge locally")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--input",
        help="samplesheet (.csv, .tsv, .json, .yaml/.yml) with sample,fasta[,organism]: one "
        "output subdirectory per sample",
    )
    source.add_argument("--fasta", help="one protein FASTA: its outputs directly in --outdir")
    p.add_argument(
        "--outdir",
        required=True,
        help="output directory: new, empty, or a killed run's directory to resume",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a non-empty --outdir, replacing the files PEFT-SP writes there",
    )
    p.add_argument("--shard-size", type=int, default=5000)
    p.add_argument("--model", default=None)
    _add_organism(p)
    p.add_argument("--device", choices=DEVICES, default="auto")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    p.add_argument(
        "--trt-cache",
        default=None,
        help="TensorRT engine/timing cache directory when --device is not cpu (default: in "
        "the run's work directory, removed at the end)",
    )
    _add_common(p)
    return parser


def handler(command: str):
    """The function that runs a subcommand given its parsed arguments (its module is imported
    here, on first use: a command never loads another command's dependencies)."""
    module, function = _HANDLERS[command].split(":")
    return getattr(importlib.import_module(module), function)


def run(args: argparse.Namespace) -> None:
    """Run a parsed command line: the checks `peftsp` makes before a subcommand, then its
    handler. Errors are raised (main() turns them into messages and exit statuses)."""
    if args.command == "pipeline":
        check_pipeline_outdir(args)
    handler(args.command)(args)


def run_command(argv: Sequence[str]) -> None:
    """Run one `peftsp` command line (without the program name) in this process, as `peftsp`
    would, but raising its errors; the local runner runs its steps so."""
    run(build_parser().parse_args(list(argv)))


def entry_point(program: str, command: Callable[[argparse.Namespace], None], args) -> int:
    """Run a parsed command line as `program`: log to stderr, errors the user can fix as one
    line (no traceback) with exit status 1, an interrupt as 130. Returns the exit status."""
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format=f"{program}: %(message)s",
        stream=sys.stderr,
    )
    try:
        command(args)
    except (PeftSPError, OSError) as err:  # OSError: e.g. an output directory not creatable
        print(f"{program}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{program}: interrupted", file=sys.stderr)
        return 130
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `peftsp` command. Returns the exit status."""
    return entry_point("peftsp", run, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
