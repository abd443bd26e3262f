"""Output files of a prediction run, written in input order and committed all at once.

Files (DESIGN §3): prediction_results.txt (SignalP 6.0's table), output.gff3,
processed_entries.fasta (mature sequences of the predicted SPs), output.json (everything, per
protein, plus the run information), summary.html (counts per type, SP lengths) and
peftsp_mqc.json (the same counts for MultiQC). Predictions are streamed into hidden temporary
files in the output directory; only when every protein is written are the files renamed into
place, so a failed run leaves no file under a final name. The same writer serves `peftsp
predict` and `peftsp merge`, which is why a merged run is byte-identical to a direct one.
"""

from __future__ import annotations

import html
import json
import os
from collections import Counter
from pathlib import Path
from typing import IO

from peftsp import __version__, grammar
from peftsp.decoding import Prediction
from peftsp.errors import InputError
from peftsp.files import make_temp
from peftsp.grammar import Region

RESULTS = "prediction_results.txt"
GFF3 = "output.gff3"
MATURE = "processed_entries.fasta"
JSON = "output.json"
SUMMARY = "summary.html"
MULTIQC = "peftsp_mqc.json"
OUTPUT_FILES = (RESULTS, GFF3, MATURE, JSON, SUMMARY, MULTIQC)
JSON_FORMAT = "peftsp-predictions"

# SignalP 6.0's names: the Prediction column and the type attribute of GFF3 rows.
PREDICTION_NAMES = dict(
    zip(grammar.SP_TYPES, ("OTHER", "SP", "LIPO", "TAT", "TATLIPO", "PILIN"), strict=True)
)
TYPE_DESCRIPTIONS = {
    "NO_SP": "Other",
    "SP": "Sec/SPI",
    "LIPO": "Sec/SPII",
    "TAT": "Tat/SPI",
    "TATLIPO": "Tat/SPII",
    "PILIN": "Sec/SPIII",
}
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


def results_header() -> str:
    columns = ["# ID", "Prediction", *grammar.TYPE_COLUMNS, "CS Position"]
    return f"# PEFT-SP {__version__}\n" + "\t".join(columns) + "\n"


def results_line(p: Prediction) -> str:
    """One row of prediction_results.txt (tab-separated, SignalP 6.0 columns)."""
    cs = ""
    if p.cs is not None:
        cs = f"CS pos: {p.cs}-{p.cs + 1}. Pr: {p.cs_probability:.4f}"
    probabilities = [f"{value:.6f}" for value in p.probabilities]
    return "\t".join([p.id, PREDICTION_NAMES[p.sp_type], *probabilities, cs]) + "\n"


def gff3_lines(p: Prediction) -> str:
    """GFF3 rows of one protein: the SP (when it has a cleavage site) and its regions."""
    if p.sp_type == "NO_SP" or p.cs is None:
        return ""
    seqid = escape_seqid(p.id)
    feature, term = SP_FEATURES[p.sp_type]
    parent = escape_attribute(f"{p.id}.sp")
    attributes = [
        f"ID={parent}",
        f"Name={escape_attribute(p.id)}",
        f"Note={PREDICTION_NAMES[p.sp_type]}",
        f"sp_type={escape_attribute(TYPE_DESCRIPTIONS[p.sp_type])}",
        f"cs_prob={p.cs_probability:.4f}",
        f"Ontology_term={term}",
    ]
    rows = [_gff_row(seqid, feature, 1, p.cs, f"{p.probability:.4f}", ";".join(attributes))]
    for region in _sorted_regions(p.regions, p.cs):
        name, region_term = REGION_FEATURES[region.name]
        child = f"Parent={parent};Ontology_term={region_term}"
        rows.append(_gff_row(seqid, name, region.start, region.end, ".", child))
    return "".join(rows)


def _sorted_regions(regions: list[Region], cs: int) -> list[Region]:
    """The n/h/c regions that lie inside the SP, in order (never end < start or <= 0)."""
    keep = [r for r in regions if r.name in REGION_FEATURES and 1 <= r.start <= r.end <= cs]
    return sorted(keep, key=lambda r: (r.start, r.end))


def _gff_row(seqid: str, feature: str, start: int, end: int, score: str, attributes: str) -> str:
    return (
        "\t".join([seqid, "PEFT-SP", feature, str(start), str(end), score, ".", ".", attributes])
        + "\n"
    )


def mature_record(p: Prediction) -> str:
    """processed_entries.fasta record: the protein after its SP ("" without a cleavage site)."""
    if p.sp_type == "NO_SP" or p.cs is None or p.cs >= p.length:
        return ""
    mature = p.sequence[p.cs :]
    body = "\n".join(mature[i : i + FASTA_WIDTH] for i in range(0, len(mature), FASTA_WIDTH))
    return f">{p.header} [mature: residues {p.cs + 1}-{p.length}]\n{body}\n"


def prediction_to_dict(p: Prediction) -> dict:
    return {
        "id": p.id,
        "header": p.header,
        "length": p.length,
        "sequence": p.sequence,
        "prediction": p.sp_type,
        "type": TYPE_DESCRIPTIONS[p.sp_type],
        "probabilities": dict(zip(grammar.SP_TYPES, p.probabilities, strict=True)),
        "cs": p.cs,
        "cs_probability": p.cs_probability,
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
        regions=[Region(r["name"], r["start"], r["end"]) for r in d["regions"]],
        notes=list(d["notes"]),
    )


class Summary:
    """Counts per type and the distribution of SP lengths, accumulated per protein."""

    def __init__(self) -> None:
        self.types: Counter[str] = Counter()
        self.sp_lengths: Counter[int] = Counter()
        self.normalised = 0

    def add(self, p: Prediction) -> None:
        self.types[p.sp_type] += 1
        if p.sp_type != "NO_SP" and p.cs is not None:
            self.sp_lengths[p.cs] += 1
        self.normalised += bool(p.notes)

    @property
    def total(self) -> int:
        return sum(self.types.values())

    def multiqc(self) -> dict:
        """A MultiQC custom-content section (bar graph of predicted types)."""
        return {
            "id": "peftsp",
            "section_name": "PEFT-SP signal peptides",
            "description": f"Predicted signal-peptide types (PEFT-SP {__version__}).",
            "plot_type": "bargraph",
            "pconfig": {"id": "peftsp_types", "title": "PEFT-SP: predicted types"},
            "data": {"proteins": {TYPE_DESCRIPTIONS[t]: self.types[t] for t in grammar.SP_TYPES}},
        }

    def html(self, run_info: dict) -> str:
        """A self-contained HTML page: the run, counts per type, SP length histogram."""
        rows = "".join(
            f"<tr><td>{TYPE_DESCRIPTIONS[t]}</td><td>{self.types[t]}</td>"
            f"<td>{_share(self.types[t], self.total)}</td></tr>"
            for t in grammar.SP_TYPES
        )
        top = max(self.sp_lengths.values(), default=1)
        bars = "".join(
            f'<tr><td>{length}</td><td>{count}</td><td><div class="bar" '
            f'style="width:{300 * count // top}px"></div></td></tr>'
            for length, count in sorted(self.sp_lengths.items())
        )
        info = "".join(
            f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>"
            for k, v in sorted(run_info.items())
        )
        return (
            '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>PEFT-SP summary</title>'
            "<style>body{font-family:sans-serif}td{padding:0 8px}"
            ".bar{background:#4a7;height:10px}</style></head><body>\n"
            f"<h1>PEFT-SP summary</h1><p>{self.total} proteins; {self.normalised} with input "
            "normalisations (see output.json notes).</p>\n"
            f"<h2>Run</h2><table>{info}</table>\n"
            f"<h2>Predicted types</h2><table><tr><th>Type</th><th>Proteins</th><th>Share</th></tr>"
            f"{rows}</table>\n"
            "<h2>Signal peptide lengths (cleavage site)</h2><table><tr><th>Length</th>"
            f"<th>Proteins</th><th></th></tr>{bars}</table>\n</body></html>\n"
        )


def _share(count: int, total: int) -> str:
    return f"{100 * count / total:.1f}%" if total else "-"


class OutputWriter:
    """Streams predictions into the output files; `commit` renames them into place.

    Use as a context manager: leaving it by an exception removes every temporary file, and
    leaving it normally commits.
    """

    def __init__(self, outdir: str | Path, run_info: dict) -> None:
        self.outdir = Path(outdir)
        self.run_info = run_info
        self.summary = Summary()
        self._temps: dict[str, Path] = {}
        self._handles: dict[str, IO[str]] = {}
        self._first_json = True
        try:
            self.outdir.mkdir(parents=True, exist_ok=True)
            for name in (RESULTS, GFF3, MATURE, JSON):
                self._handles[name] = self._open_temp(name)
        except OSError as err:
            self.abort()
            raise InputError(
                f"cannot write the outputs there ({err.strerror})", str(self.outdir)
            ) from err
        self._handles[RESULTS].write(results_header())
        self._handles[GFF3].write("##gff-version 3\n")
        head = {"format": JSON_FORMAT, "peftsp_version": __version__, "run": run_info}
        self._handles[JSON].write(json.dumps(head, sort_keys=True)[:-1] + ', "predictions": [\n')

    def _open_temp(self, name: str) -> IO[str]:
        fd, self._temps[name] = make_temp(self.outdir, name)
        return os.fdopen(fd, "w", encoding="utf-8", newline="\n")

    def add(self, p: Prediction) -> None:
        """Write one protein to every file (call in input order)."""
        self._handles[RESULTS].write(results_line(p))
        self._handles[GFF3].write(gff3_lines(p))
        self._handles[MATURE].write(mature_record(p))
        separator = "" if self._first_json else ",\n"
        self._handles[JSON].write(separator + json.dumps(prediction_to_dict(p), ensure_ascii=False))
        self._first_json = False
        self.summary.add(p)

    def commit(self) -> None:
        """Finish every file and rename all of them into place."""
        self._handles[JSON].write("\n]}\n")
        self._handles[SUMMARY] = self._open_temp(SUMMARY)
        self._handles[SUMMARY].write(self.summary.html(self.run_info))
        self._handles[MULTIQC] = self._open_temp(MULTIQC)
        json.dump(self.summary.multiqc(), self._handles[MULTIQC], indent=1, sort_keys=True)
        self._handles[MULTIQC].write("\n")
        for handle in self._handles.values():
            handle.close()
        for name in OUTPUT_FILES:
            os.replace(self._temps.pop(name), self.outdir / name)

    def abort(self) -> None:
        """Close and remove every temporary file."""
        for handle in self._handles.values():
            handle.close()
        for tmp in self._temps.values():
            tmp.unlink(missing_ok=True)
        self._temps.clear()

    def __enter__(self) -> OutputWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def write_outputs(predictions, outdir: str | Path, run_info: dict) -> None:
    """Write every output file for `predictions` (an iterable, in input order)."""
    with OutputWriter(outdir, run_info) as writer:
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
        raise InputError(f"malformed prediction ({err})", str(path)) from err
