"""Output files of a prediction run, written in input order and committed all at once.

Files (DESIGN §3), in SignalP 6.0's layout where SignalP 6.0 has the file:

- prediction_results.txt: SignalP 6.0's table. Line 1 starts like SignalP's (`# SignalP-6.0`)
  and names PEFT-SP, the model and, for the embedded demo model, says so; then its tab fields
  `Organism: Eukarya|Other` and `Timestamp: YYYYMMDDhhmmss` (UTC, or SOURCE_DATE_EPOCH when set,
  for reproducible files). Line 2 is the column header. Eukarya: 5 columns, `NO_SP`/`SP`, and
  SP(Sec/SPI) = the sum of every SP type's probability (SignalP 6.0 folds the other types into
  Sec/SPI for eukaryotes). Every other organism: 9 columns, `OTHER`/`SP`/`LIPO`/... The CS
  column is `CS pos: 22-23. Pr: 0.9731` with SignalP 6.0's probability (the posterior marginal
  of the path's state at the last SP residue), or empty.
- output.gff3: one signal_peptide (SO:0000418) or lipoprotein_signal_peptide (SO:0100009) row
  per protein with an SP; region_output.gff3: its n/h/c regions (SO:0100014, SO:0100016,
  SO:0100015), as separate features. SignalP 6.0 splits them the same way, and Sequence
  Ontology makes the regions part_of signal_peptide only, so a lipoprotein SP cannot be their
  parent (`gt gff3validator -typecheck so` checks it). `##sequence-region` before each protein.
- processed_entries.fasta: mature sequences (SP removed) of the proteins with an SP.
- output.json: everything per protein, both CS probabilities, the run information, the sample.
  (`peftsp-signalp6` writes SignalP 6.0's output.json layout instead: peftsp.signalp6.)
- summary.html, peftsp_mqc.json, peftsp_general_stats_mqc.json: peftsp.report.
- plots/: per-protein plots when asked for (peftsp.plots).

Probabilities are rounded here, once, before anything is written (type probabilities to 6
decimals, CS probabilities to 4): every file derives from the same rounded values, so outputs
are byte-identical whatever the batch size or thread count, and `peftsp merge` (which reads the
rounded values back from output.json) writes the same bytes as a direct run.

Predictions are streamed into hidden temporary files in the output directory; only when every
protein is written are the files renamed into place, so a failed run leaves no file under a
final name.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from peftsp import __version__, grammar
from peftsp.decoding import Prediction
from peftsp.errors import InputError, PeftSPError
from peftsp.files import make_temp
from peftsp.grammar import Region
from peftsp.report import MULTIQC, MULTIQC_STATS, SUMMARY, PageInfo, Summary

RESULTS = "prediction_results.txt"
GFF3 = "output.gff3"
REGIONS_GFF3 = "region_output.gff3"
MATURE = "processed_entries.fasta"
JSON = "output.json"
PLOTS = "plots"
# Every file `peftsp predict` and `peftsp merge` write (plots/ only when asked for).
OUTPUT_FILES = (RESULTS, GFF3, REGIONS_GFF3, MATURE, JSON, SUMMARY, MULTIQC, MULTIQC_STATS)
# The files of SignalP 6.0's layout (`peftsp-signalp6`), before per-protein plot files.
SIGNALP6_FILES = (RESULTS, GFF3, REGIONS_GFF3, MATURE, JSON)
JSON_FORMAT = "peftsp-predictions"

PROBABILITY_DIGITS = 6  # type probabilities, everywhere
CS_PROBABILITY_DIGITS = 4  # CS probabilities, everywhere

DEMO_NOTICE = (
    "the embedded demo model: a small ESM-2-shaped model trained from random weights (no "
    "pretrained protein language model), for trying PEFT-SP out, not for annotation; train "
    "a real ESM-2 with LoRA and pass --model"
)
CS_DEFINITIONS = {
    "cs_marginal": "SignalP 6.0's CS probability (the Pr of prediction_results.txt): posterior "
    "marginal probability of the predicted path's state at residue cs, the last SP residue",
    "cs_probability": "PEFT-SP's CS probability: posterior probability that the signal peptide "
    "ends exactly after residue cs (better calibrated)",
}

# SignalP 6.0's names: the Prediction column (other mode) and the GFF3 Note attribute.
PREDICTION_NAMES = dict(
    zip(grammar.SP_TYPES, ("OTHER", "SP", "LIPO", "TAT", "TATLIPO", "PILIN"), strict=True)
)
# Eukarya mode's Prediction column (SignalP 6.0 writes NO_SP there).
EUKARYA_PREDICTION_NAMES = {"NO_SP": "NO_SP", "SP": "SP"}
EUKARYA_COLUMNS = ("OTHER", "SP(Sec/SPI)")
# Sequence Ontology: lipoprotein SPs have their own term; Tat and pilin SPs have none.
SP_FEATURES = {
    "SP": ("signal_peptide", "SO:0000418"),
    "LIPO": ("lipoprotein_signal_peptide", "SO:0100009"),
    "TAT": ("signal_peptide", "SO:0000418"),
    "TATLIPO": ("lipoprotein_signal_peptide", "SO:0100009"),
    "PILIN": ("signal_peptide", "SO:0000418"),
}
REGION_FEATURES = {
    "n": ("n_terminal_region", "SO:0100014"),
    "h": ("central_hydrophobic_region_of_signal_peptide", "SO:0100016"),
    "c": ("c_terminal_region", "SO:0100015"),
}
# GFF3 column 1 may hold these unescaped; everything else is percent-encoded (UTF-8 bytes).
_SEQID_SAFE = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.:^*$@!+_?-|"
)
# Column 9 values: percent-encode the separators, '%' itself and control characters.
_ATTRIBUTE_RESERVED = frozenset(";=&,%\t\n\r")
FASTA_WIDTH = 60
GFF_SOURCE = "PEFT-SP"


# --- values --------------------------------------------------------------------------------


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(float(value), digits)


def canonical(p: Prediction) -> Prediction:
    """`p` with its probabilities rounded as every output file prints them."""
    return dataclasses.replace(
        p,
        probabilities=tuple(round(float(v), PROBABILITY_DIGITS) for v in p.probabilities),
        cs_probability=_round(p.cs_probability, CS_PROBABILITY_DIGITS),
        cs_marginal=_round(p.cs_marginal, CS_PROBABILITY_DIGITS),
    )


def _clip(value: float) -> float:
    return min(1.0, max(0.0, value))


@dataclass(frozen=True)
class Reported:
    """A (canonical) prediction as SignalP 6.0 reports it for an organism."""

    sp_type: str  # grammar.SP_TYPES value after the organism rule
    prediction: str  # the Prediction column
    columns: tuple[float, ...]  # the probability columns
    probability: float  # of the reported type (GFF3 score)


def reported(p: Prediction, organism: str) -> Reported:
    """SignalP 6.0's view: for eukarya every SP type is reported as Sec/SPI with the sum of
    the SP types' probabilities; other organisms keep the six types."""
    if organism == "eukarya":
        sp_type = "NO_SP" if p.sp_type == "NO_SP" else "SP"
        sp = _clip(round(sum(p.probabilities[1:]), PROBABILITY_DIGITS))
        columns = (_clip(p.probabilities[0]), sp)
        return Reported(
            sp_type, EUKARYA_PREDICTION_NAMES[sp_type], columns, columns[sp_type == "SP"]
        )
    columns = tuple(_clip(v) for v in p.probabilities)
    return Reported(
        p.sp_type, PREDICTION_NAMES[p.sp_type], columns, columns[grammar.SP_TYPES.index(p.sp_type)]
    )


def run_timestamp() -> datetime:
    """The run's time (UTC): SOURCE_DATE_EPOCH when set (reproducible outputs), else now."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch is None:
        return datetime.fromtimestamp(int(time.time()), UTC)
    try:
        return datetime.fromtimestamp(int(epoch), UTC)
    except (ValueError, OverflowError, OSError) as err:
        raise PeftSPError(
            f"SOURCE_DATE_EPOCH={epoch!r} is not a time in seconds since 1970-01-01"
        ) from err


def is_demo_model(run_info: dict) -> bool:
    return bool(run_info.get("demo_model"))


# --- GFF3 escaping ---------------------------------------------------------------------------


def escape_seqid(text: str) -> str:
    """A GFF3 column-1 value: unsafe characters as %XX of their UTF-8 bytes."""
    return "".join(ch if ch in _SEQID_SAFE else _percent(ch) for ch in text)


def escape_attribute(text: str) -> str:
    """A GFF3 column-9 value: separators, '%' and control characters as %XX."""
    return "".join(
        _percent(ch) if ch in _ATTRIBUTE_RESERVED or ord(ch) < 32 or ord(ch) == 127 else ch
        for ch in text
    )


def _percent(ch: str) -> str:
    return "".join(f"%{byte:02X}" for byte in ch.encode("utf-8"))


def _one_line(text: str) -> str:
    """Text for a tab-separated field: tabs and line breaks become spaces."""
    return " ".join(text.split())


# --- prediction_results.txt ------------------------------------------------------------------


def results_header(run_info: dict, timestamp: datetime) -> str:
    """Lines 1-2 of prediction_results.txt: SignalP 6.0's first line and column header."""
    organism = run_info.get("organism", "other")
    first = f"# SignalP-6.0 format, PEFT-SP {run_info.get('peftsp_version', __version__)}"
    first += f", model {_one_line(str(run_info.get('model', '?')))}, organism {organism}"
    if is_demo_model(run_info):
        first += f", DEMO MODEL: {DEMO_NOTICE}"
    signalp_organism = "Eukarya" if organism == "eukarya" else "Other"
    line1 = f"{first}\tOrganism: {signalp_organism}\tTimestamp: {timestamp:%Y%m%d%H%M%S}"
    types = EUKARYA_COLUMNS if organism == "eukarya" else grammar.TYPE_COLUMNS
    return line1 + "\n" + "\t".join(["# ID", "Prediction", *types, "CS Position"]) + "\n"


def cs_text(p: Prediction, rep: Reported) -> str:
    """The CS Position field: `CS pos: 22-23. Pr: 0.9731` (SignalP 6.0's Pr) or ''."""
    if rep.sp_type == "NO_SP" or p.cs is None:
        return ""
    if p.cs_marginal is None:
        raise ValueError(f"{p.id}: a cleavage site without its marginal probability")
    return f"CS pos: {p.cs}-{p.cs + 1}. Pr: {p.cs_marginal:.{CS_PROBABILITY_DIGITS}f}"


def results_line(p: Prediction, organism: str) -> str:
    """One row of prediction_results.txt (tab-separated, SignalP 6.0's columns)."""
    rep = reported(p, organism)
    probabilities = [f"{value:.{PROBABILITY_DIGITS}f}" for value in rep.columns]
    return "\t".join([p.id, rep.prediction, *probabilities, cs_text(p, rep)]) + "\n"


# --- GFF3 ----------------------------------------------------------------------------------


def _gff_row(seqid: str, feature: str, start: int, end: int, score: str, attributes: str) -> str:
    return (
        "\t".join([seqid, GFF_SOURCE, feature, str(start), str(end), score, ".", ".", attributes])
        + "\n"
    )


def _sequence_region(seqid: str, p: Prediction) -> str:
    return f"##sequence-region {seqid} 1 {p.length}\n"


def gff3_sp_lines(p: Prediction, organism: str) -> str:
    """output.gff3 lines of one protein: its SP row ('' without an SP or a cleavage site)."""
    rep = reported(p, organism)
    if rep.sp_type == "NO_SP" or p.cs is None:
        return ""
    seqid = escape_seqid(p.id)
    feature, term = SP_FEATURES[rep.sp_type]
    attributes = [
        f"ID={escape_attribute(p.id)}.sp",
        f"Name={escape_attribute(p.id)}",
        f"Note={PREDICTION_NAMES[rep.sp_type]}",
        f"sp_type={escape_attribute(grammar.TYPE_NAMES[rep.sp_type])}",
    ]
    for name in ("cs_marginal", "cs_probability"):
        value = getattr(p, name)
        if value is not None:
            attributes.append(f"{name}={value:.{CS_PROBABILITY_DIGITS}f}")
    attributes.append(f"Ontology_term={term}")
    score = f"{rep.probability:.{PROBABILITY_DIGITS}f}"
    return _sequence_region(seqid, p) + _gff_row(
        seqid, feature, 1, p.cs, score, ";".join(attributes)
    )


def gff3_region_lines(p: Prediction, organism: str) -> str:
    """region_output.gff3 lines of one protein: its n/h/c regions ('' when it has none)."""
    rep = reported(p, organism)
    if rep.sp_type == "NO_SP" or p.cs is None:
        return ""
    regions = _sorted_regions(p.regions, p.cs)
    if not regions:
        return ""
    seqid = escape_seqid(p.id)
    common = (
        f"Name={escape_attribute(p.id)};Note={PREDICTION_NAMES[rep.sp_type]};"
        f"sp_type={escape_attribute(grammar.TYPE_NAMES[rep.sp_type])}"
    )
    rows = [_sequence_region(seqid, p)]
    for region in regions:
        name, term = REGION_FEATURES[region.name]
        attributes = f"{common};Ontology_term={term}"
        rows.append(_gff_row(seqid, name, region.start, region.end, ".", attributes))
    return "".join(rows)


def _sorted_regions(regions: list[Region], cs: int) -> list[Region]:
    """The n/h/c regions that lie inside the SP, in order (never end < start or <= 0)."""
    keep = [r for r in regions if r.name in REGION_FEATURES and 1 <= r.start <= r.end <= cs]
    return sorted(keep, key=lambda r: (r.start, r.end))


# --- processed_entries.fasta -----------------------------------------------------------------


def mature_record(p: Prediction, organism: str) -> str:
    """processed_entries.fasta record: the protein after its SP ("" without a cleavage site)."""
    if reported(p, organism).sp_type == "NO_SP" or p.cs is None or p.cs >= p.length:
        return ""
    mature = p.sequence[p.cs :]
    body = "\n".join(mature[i : i + FASTA_WIDTH] for i in range(0, len(mature), FASTA_WIDTH))
    return f">{p.header} [mature: residues {p.cs + 1}-{p.length}]\n{body}\n"


# --- output.json (PEFT-SP layout) ------------------------------------------------------------


def prediction_to_dict(p: Prediction) -> dict:
    return {
        "id": p.id,
        "header": p.header,
        "length": p.length,
        "sequence": p.sequence,
        "prediction": p.sp_type,
        "type": grammar.TYPE_NAMES[p.sp_type],
        "probabilities": dict(zip(grammar.SP_TYPES, p.probabilities, strict=True)),
        "cs": p.cs,
        "cs_probability": p.cs_probability,
        "cs_marginal": p.cs_marginal,
        "regions": [{"name": r.name, "start": r.start, "end": r.end} for r in p.regions],
        "notes": p.notes,
    }


def prediction_from_dict(d: dict) -> Prediction:
    return Prediction(
        id=d["id"],
        header=d["header"],
        sequence=d["sequence"],
        sp_type=d["prediction"],
        probabilities=tuple(float(d["probabilities"][t]) for t in grammar.SP_TYPES),
        cs=d["cs"],
        cs_probability=d["cs_probability"],
        cs_marginal=d["cs_marginal"],
        regions=[Region(r["name"], r["start"], r["end"]) for r in d["regions"]],
        notes=list(d["notes"]),
    )


class _PeftspJson:
    """output.json in PEFT-SP's layout: run information, then one object per protein."""

    def __init__(self, handle: IO[str], head: dict) -> None:
        self.handle = handle
        self.first = True
        handle.write(json.dumps(head, sort_keys=True, ensure_ascii=False)[:-1])
        handle.write(', "predictions": [\n')

    def add(self, p: Prediction, rep: Reported, plots: dict[str, str]) -> None:
        separator = "" if self.first else ",\n"
        self.handle.write(separator + json.dumps(prediction_to_dict(p), ensure_ascii=False))
        self.first = False

    def finish(self) -> None:
        self.handle.write("\n]}\n")


# --- the writer ----------------------------------------------------------------------------


class OutputWriter:
    """Streams predictions into the output files; `commit` renames them into place.

    layout "peftsp" writes OUTPUT_FILES (and plots/ when `plots` is given); layout "signalp6"
    writes SIGNALP6_FILES with SignalP 6.0's output.json and per-protein plot files beside them.
    `sample` names the run in summary.html and for MultiQC (default: run_info's "sample", else
    the output directory's name); `source` is the input file named in summary.html.

    Use as a context manager: leaving it by an exception removes every temporary file, and
    leaving it normally commits.
    """

    def __init__(
        self,
        outdir: str | Path,
        run_info: dict,
        *,
        sample: str | None = None,
        source: str | None = None,
        layout: str = "peftsp",
        plots=None,
    ) -> None:
        if layout not in ("peftsp", "signalp6"):
            raise ValueError(f"unknown layout {layout!r}")
        self.outdir = Path(outdir)
        self.run_info = run_info
        self.organism = run_info.get("organism", "other")
        self.layout = layout
        self.sample = sample or run_info.get("sample") or self.outdir.resolve().name
        self.source = printable_path(source) if source is not None else None
        self.created = run_timestamp()
        self.summary = Summary()
        self.plots = plots
        self._temps: dict[str, Path] = {}
        self._handles: dict[str, IO[str]] = {}
        self._plot_dir: Path | None = None
        names = (
            SIGNALP6_FILES if layout == "signalp6" else (RESULTS, GFF3, REGIONS_GFF3, MATURE, JSON)
        )
        try:
            self.outdir.mkdir(parents=True, exist_ok=True)
            for name in names:
                self._handles[name] = self._open_temp(name)
            if plots is not None:
                self._plot_dir = Path(tempfile.mkdtemp(prefix=".plots.", dir=self.outdir))
            self._handles[RESULTS].write(results_header(run_info, self.created))
            self._handles[GFF3].write("##gff-version 3\n")
            self._handles[REGIONS_GFF3].write("##gff-version 3\n")
            if layout == "signalp6":
                from peftsp.signalp6 import SignalPJson

                self._json = SignalPJson(self._handles[JSON], self)
            else:
                self._json = _PeftspJson(self._handles[JSON], self.json_head())
        except OSError as err:
            self.abort()
            raise self._write_error(err) from err
        except BaseException:
            self.abort()
            raise

    @property
    def model_notice(self) -> str | None:
        return DEMO_NOTICE if is_demo_model(self.run_info) else None

    @property
    def created_text(self) -> str:
        return self.created.strftime("%Y-%m-%dT%H:%M:%SZ")

    def json_head(self) -> dict:
        return {
            "format": JSON_FORMAT,
            "peftsp_version": __version__,
            "created": self.created_text,
            "sample": self.sample,
            "source": self.source,
            "model_notice": self.model_notice,
            "definitions": CS_DEFINITIONS,
            "run": self.run_info,
        }

    def _open_temp(self, name: str) -> IO[str]:
        fd, self._temps[name] = make_temp(self.outdir, name)
        return os.fdopen(fd, "w", encoding="utf-8", newline="\n")

    def add(self, p: Prediction) -> None:
        """Write one protein to every file (call in input order)."""
        p = canonical(p)
        rep = reported(p, self.organism)
        self._handles[RESULTS].write(results_line(p, self.organism))
        self._handles[GFF3].write(gff3_sp_lines(p, self.organism))
        self._handles[REGIONS_GFF3].write(gff3_region_lines(p, self.organism))
        self._handles[MATURE].write(mature_record(p, self.organism))
        plots = self.plots.write(p, self._plot_dir) if self.plots is not None else {}
        self._json.add(p, rep, plots)
        self.summary.add(
            rep.sp_type, rep.probability, p.cs, p.cs_marginal, p.cs_probability, p.notes
        )

    def commit(self) -> None:
        """Finish every file and rename all of them into place.

        Every file is finished (written, flushed, closed) and every target checked before the
        first rename, so a full disk or a target that cannot be replaced leaves the previous
        outputs as they were and no temporary file behind."""
        try:
            self._json.finish()
            if self.layout == "peftsp":
                self._write_summary()
            for handle in self._handles.values():
                handle.close()
            for name in self._temps:
                target = self.outdir / name
                if target.is_dir() and not target.is_symlink():
                    raise IsADirectoryError(errno.EISDIR, "is a directory", str(target))
        except OSError as err:
            self.abort()
            raise self._write_error(err) from err
        for name in list(self._temps):
            os.replace(self._temps.pop(name), self.outdir / name)
        if self._plot_dir is not None:
            self._commit_plots(self._plot_dir)
            self._plot_dir = None
        elif self.layout == "peftsp":
            _remove_path(self.outdir / PLOTS)  # an earlier run's plots (only with --overwrite)

    def _write_error(self, err: OSError) -> InputError:
        where = os.fsdecode(err.filename) if err.filename else str(self.outdir)
        return InputError(f"cannot write the outputs there ({err.strerror})", where)

    def _write_summary(self) -> None:
        files = [
            (RESULTS, "SignalP 6.0 table"),
            (GFF3, "signal peptides, GFF3"),
            (REGIONS_GFF3, "n/h/c regions, GFF3"),
            (MATURE, "mature sequences"),
            (JSON, "everything, per protein"),
        ]
        if self.plots is not None:
            files.append((f"{PLOTS}/", "per-protein plots"))
        page = PageInfo(
            sample=self.sample,
            created=self.created_text,
            run=self.run_info,
            source=self.source,
            model_notice=self.model_notice,
            files=files,
        )
        self._handles[SUMMARY] = self._open_temp(SUMMARY)
        self._handles[SUMMARY].write(self.summary.html(page))
        for name, content in (
            (MULTIQC, self.summary.multiqc(self.sample)),
            (MULTIQC_STATS, self.summary.multiqc_general_stats(self.sample)),
        ):
            self._handles[name] = self._open_temp(name)
            json.dump(content, self._handles[name], indent=1, sort_keys=True, ensure_ascii=False)
            self._handles[name].write("\n")

    def _commit_plots(self, plot_dir: Path) -> None:
        if self.layout == "signalp6":  # SignalP 6.0 writes them beside the tables
            for path in sorted(plot_dir.iterdir()):
                os.replace(path, self.outdir / path.name)
            plot_dir.rmdir()
            return
        final = self.outdir / PLOTS
        _remove_path(final)  # an earlier run's plots (only with --overwrite)
        os.replace(plot_dir, final)

    def abort(self) -> None:
        """Close and remove every temporary file."""
        for handle in self._handles.values():
            handle.close()
        for tmp in self._temps.values():
            tmp.unlink(missing_ok=True)
        self._temps.clear()
        if self._plot_dir is not None:
            shutil.rmtree(self._plot_dir, ignore_errors=True)
            self._plot_dir = None

    def __enter__(self) -> OutputWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def _remove_path(path: Path) -> None:
    """Remove a file, link or directory tree at `path`, if there is one."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def printable_path(path: str) -> str:
    """`path` as text that any UTF-8 file can hold: bytes of a file name that are not UTF-8
    (which Python keeps as lone surrogates) are written as \\xNN."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def write_outputs(predictions, outdir: str | Path, run_info: dict, **options) -> None:
    """Write every output file for `predictions` (an iterable, in input order); `options` are
    OutputWriter's keyword options."""
    with OutputWriter(outdir, run_info, **options) as writer:
        for p in predictions:
            writer.add(p)


def read_predictions_json(path: str | Path) -> tuple[dict, list[Prediction]]:
    """(run information, predictions) of an output.json written by OutputWriter."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError) as err:
        raise InputError(f"not a readable PEFT-SP output.json ({err})", str(path)) from err
    if not isinstance(data, dict) or data.get("format") != JSON_FORMAT:
        raise InputError("not a PEFT-SP output.json", str(path))
    try:
        return data["run"], [prediction_from_dict(d) for d in data["predictions"]]
    except (KeyError, TypeError, ValueError) as err:
        raise InputError(
            f"malformed prediction (missing or bad {err}; written by an older PEFT-SP?)",
            str(path),
        ) from err
