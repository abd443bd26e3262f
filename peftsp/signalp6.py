"""`peftsp-signalp6`: a SignalP 6.0 drop-in for pipelines that call `signalp6`.

It takes SignalP 6.0's command line (and its SignalP-5-style aliases) and writes the files
SignalP 6.0 writes, under the same names, into --output_dir: prediction_results.txt,
output.gff3, region_output.gff3, processed_entries.fasta, output.json (SignalP 6.0's layout:
run information and SEQUENCES, keyed like column 1 of output.gff3) and, per --format, one
output_<ID>_plot.txt/.png/.eps per protein. Link or copy it as `signalp6` on the PATH of a
pipeline (funannotate, predector, InterProScan 6, your own scripts).

Differences a pipeline may notice, all deliberate: the ID in every file is the first word of
the FASTA header (SignalP 6.0 writes the whole header; consumers split on the first space, which
gives the same ID); GFF3 follows the specification (`##gff-version 3`, escaped seqids, Sequence
Ontology region names such as n_terminal_region instead of n-region); a protein with an SP type
but no resolvable cleavage site gets no GFF3 row (SignalP 6.0 writes end -1).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import IO

from peftsp import __version__, grammar
from peftsp.cli import entry_point
from peftsp.decoding import Prediction
from peftsp.errors import PeftSPError
from peftsp.runtime import DEVICES

log = logging.getLogger("peftsp")

ORGANISMS = (
    "other",
    "eukarya",
    "euk",
    *(o for o in grammar.ORGANISMS if o not in ("other", "eukarya")),
)
# --format -> per-protein files (SignalP 6.0: txt plots, then png/eps images on top).
FORMAT_FILES = {
    "txt": ("txt",),
    "png": ("txt", "png"),
    "eps": ("txt", "eps"),
    "all": ("txt", "png", "eps"),
    "none": (),
}
SIGNALP_PREDICTIONS = {
    "NO_SP": "Other",
    "SP": "Signal Peptide (Sec/SPI)",
    "LIPO": "Lipoprotein signal peptide (Sec/SPII)",
    "TAT": "Tat signal peptide (Tat/SPI)",
    "TATLIPO": "Tat lipoprotein signal peptide (Tat/SPII)",
    "PILIN": "Pilin-like signal peptide (Sec/SPIII)",
}
VERSION = (
    f"SignalP 6.0 format, PEFT-SP {__version__}: signal peptide prediction 6.0-peftsp{__version__}"
)


class SignalPJson:
    """output.json in SignalP 6.0's layout, streamed: INFO, PEFT_SP, then SEQUENCES.

    SEQUENCES is keyed by the protein's output.gff3 column 1 (its escaped ID), so a reader that
    looks a GFF3 row up in it (InterProScan 6 does) finds it. Each entry holds SignalP 6.0's
    Name, Prediction ("Signal Peptide (Sec/SPI)", ...), Likelihood (the table's probability
    columns), Protein_types (their names), CS_pos ("Cleavage site between pos. 22 and 23" or
    "") and Plot_txt/Plot_png/Plot_eps (file names or ""), plus CS_marginal (the table's Pr),
    CS_probability (PEFT-SP's) and Regions.
    """

    def __init__(self, handle: IO[str], writer) -> None:
        from peftsp.writers import CS_DEFINITIONS

        self.handle = handle
        self.first = True
        eukarya = writer.organism == "eukarya"
        self.types = ("NO_SP", "SP") if eukarya else grammar.SP_TYPES
        info = {
            "organism": "Eukarya" if eukarya else "Other",
            "timestamp": f"{writer.created:%Y%m%d%H%M%S}",
            "format": "SignalP-6.0 output.json layout, written by PEFT-SP",
            "failed_batches": [],
        }
        peftsp = {
            "version": __version__,
            "sample": writer.sample,
            "source": writer.source,
            "model_notice": writer.model_notice,
            "definitions": CS_DEFINITIONS,
            "run": writer.run_info,
        }
        head = {"INFO": info, "PEFT_SP": peftsp}
        handle.write(json.dumps(head, ensure_ascii=False)[:-1] + ', "SEQUENCES": {\n')

    def add(self, p: Prediction, rep, plots: dict[str, str]) -> None:
        from peftsp.writers import escape_seqid

        cs = p.cs if rep.sp_type != "NO_SP" else None
        entry = {
            "Name": p.header,
            "Prediction": SIGNALP_PREDICTIONS[rep.sp_type],
            "Likelihood": list(rep.columns),
            "Protein_types": [SIGNALP_PREDICTIONS[t] for t in self.types],
            "CS_pos": "" if cs is None else f"Cleavage site between pos. {cs} and {cs + 1}",
            "CS_marginal": p.cs_marginal if cs is not None else None,
            "CS_probability": p.cs_probability if cs is not None else None,
            "Regions": [
                {"name": r.name, "start": r.start, "end": r.end} for r in (p.regions if cs else [])
            ],
            "Plot_txt": plots.get("txt", ""),
            "Plot_png": plots.get("png", ""),
            "Plot_eps": plots.get("eps", ""),
        }
        separator = "" if self.first else ",\n"
        key = json.dumps(escape_seqid(p.id), ensure_ascii=False)
        self.handle.write(f"{separator}{key}: {json.dumps(entry, ensure_ascii=False)}")
        self.first = False

    def finish(self) -> None:
        self.handle.write("\n}}\n")


def _positive(name: str):
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{name} must be a whole number, not {value!r}"
            ) from None
        if number < 1:
            raise argparse.ArgumentTypeError(f"{name} must be at least 1, not {number}")
        return number

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="peftsp-signalp6",
        allow_abbrev=False,
        description="SignalP 6.0's command line, answered by PEFT-SP: writes SignalP 6.0's "
        "files (prediction_results.txt, output.gff3, region_output.gff3, "
        "processed_entries.fasta, output.json, output_<ID>_plot.*) so that a pipeline calling "
        "`signalp6` works when this command is linked as `signalp6`.",
        epilog="Exit status 0 on success; 1 with a message naming the file, record and line on "
        "bad input, and then no output file is left.",
    )
    parser.add_argument(
        "--fastafile", "-ff", "-fasta", required=True, metavar="FASTA",
        help="protein FASTA file (plain or gzip)",
    )  # fmt: skip
    parser.add_argument(
        "--output_dir", "-od", required=True, metavar="DIR",
        help="output directory (created; SignalP 6.0's files in it are replaced, with a warning)",
    )  # fmt: skip
    parser.add_argument(
        "--organism", "-org", choices=ORGANISMS, default="other", metavar="ORGANISM",
        help="other (default), eukarya or euk: as SignalP 6.0 (eukarya reports only Sec/SPI, "
        "with the other SP types' probabilities added to it); PEFT-SP's archaea, "
        "gram_positive and gram_negative are accepted too",
    )  # fmt: skip
    parser.add_argument(
        "--format", "-fmt", "-format", choices=tuple(FORMAT_FILES), default="txt",
        help="per-protein files: txt (default) output_<ID>_plot.txt; png and eps add that "
        "image; all: txt, png and eps; none: only the tables. png/eps need matplotlib "
        "(pip install 'peftsp[plot]'). One file per protein is slow on proteomes: use none.",
    )  # fmt: skip
    parser.add_argument(
        "--mode", "-m", choices=("fast", "slow", "slow-sequential"), default="fast",
        help="accepted for compatibility, no effect: PEFT-SP has one model, whatever the mode",
    )  # fmt: skip
    parser.add_argument(
        "--bsize", "-bs", "-batch", type=_positive("--bsize"), default=10, metavar="N",
        help="proteins per batch (default 10); outputs do not depend on it",
    )  # fmt: skip
    parser.add_argument(
        "--write_procs", "-wp", type=_positive("--write_procs"), default=8, metavar="N",
        help="accepted for compatibility, no effect: PEFT-SP writes in one process",
    )  # fmt: skip
    parser.add_argument(
        "--torch_num_threads", "-tt", type=_positive("--torch_num_threads"), default=None,
        metavar="N", help="CPU threads of ONNX Runtime (default: all cores); no torch is used",
    )  # fmt: skip
    parser.add_argument(
        "--model_dir", "-md", default=None, metavar="DIR",
        help="a PEFT-SP model bundle directory (holding model.json) is used; any other "
        "directory, such as SignalP 6.0's own weights, is ignored with a warning and the "
        "embedded model (or --peftsp_model) is used",
    )  # fmt: skip
    parser.add_argument(
        "--skip_resolve", action="store_true",
        help="accepted for compatibility, no effect: PEFT-SP's cleavage site always belongs to "
        "the predicted type",
    )  # fmt: skip
    parser.add_argument("--version", action="version", version=VERSION)
    parser.add_argument(
        "--peftsp_model", default=None, metavar="DIR",
        help="PEFT-SP model bundle (default: the embedded model)",
    )  # fmt: skip
    parser.add_argument(
        "--peftsp_device", choices=DEVICES, default="auto",
        help="PEFT-SP execution device (default auto: TensorRT, CUDA, then CPU)",
    )  # fmt: skip
    parser.add_argument("--quiet", action="store_true", help="no progress bar or info messages")
    return parser


def _model(args: argparse.Namespace) -> str | None:
    if args.model_dir is not None:
        if (Path(args.model_dir) / "model.json").is_file():
            if args.peftsp_model is not None:
                raise PeftSPError("give --model_dir or --peftsp_model, not both")
            return args.model_dir
        log.warning(
            "--model_dir %s is not a PEFT-SP model bundle (no model.json): ignored", args.model_dir
        )
    return args.peftsp_model


def run(args: argparse.Namespace) -> None:
    """Predict --fastafile into --output_dir in SignalP 6.0's layout."""
    from peftsp.bundle import load_bundle
    from peftsp.plots import PlotWriter
    from peftsp.predict import default_sample, predict_into, run_information, warn_demo_model
    from peftsp.runtime import Session

    organism = "eukarya" if args.organism == "euk" else args.organism
    formats = FORMAT_FILES[args.format]
    plots = PlotWriter(formats) if formats else None
    outdir = Path(args.output_dir)
    if outdir.exists() and not outdir.is_dir():
        raise PeftSPError(f"{outdir}: --output_dir exists and is not a directory")
    if outdir.is_dir() and any(outdir.iterdir()):
        log.warning("%s is not empty: SignalP 6.0's files there will be replaced", outdir)
    bundle = load_bundle(_model(args))
    session = Session(
        bundle,
        device=args.peftsp_device,
        precision="auto",
        threads=args.torch_num_threads,
        batch_size=args.bsize,
        trt_cache=None,
    )
    run_info = run_information(bundle, organism, session.precision)
    warn_demo_model(bundle, run_info)
    if args.mode != "fast":
        log.info("--mode %s: PEFT-SP has one model; it is used for every mode", args.mode)
    summary = predict_into(
        args.fastafile,
        outdir,
        session,
        run_info,
        args.bsize,
        args.quiet,
        layout="signalp6",
        sample=default_sample(args.fastafile),
        source=str(args.fastafile),
        plots=plots,
    )
    log.info("%d proteins written to %s", summary.total, outdir)


def main(argv: list[str] | None = None) -> int:
    """Entry point of `peftsp-signalp6`. Returns the exit status."""
    return entry_point("peftsp-signalp6", run, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
