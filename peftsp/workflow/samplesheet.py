"""The proteomes of `peftsp pipeline --input`: a samplesheet in CSV, TSV, JSON or YAML.

The columns and rules are assets/schema_input.json's, which Nextflow's nf-schema applies to the
same file (tests compare the two): the file type comes from the extension; columns `sample`
and `fasta` are required, `organism` optional. CSV/TSV cells are stripped and typed as
nf-schema types them (an empty cell is absent; `12` is an integer, `1.5` and `1e5` are
decimal numbers, `true` a boolean); JSON and YAML values keep their own types (YAML as
PyYAML reads it, `yes` a boolean, but `1e5` a number as in YAML 1.2). Then:

- sample: a string of letters, digits, '.', '_' and '-' not starting with '.', '_' or '-', or
  a non-negative integer (used as its decimal text); a decimal number or a boolean is refused,
  as nf-schema refuses it. Sample ids are unique; each names an output directory (and is
  passed to predict as --sample, hence at most 200 characters).
- fasta: a path without whitespace to an existing file, relative to the working directory
  (Nextflow's launch directory).
- organism: empty or absent takes --organism; otherwise one of peftsp.grammar.ORGANISMS, or
  SignalP 6.0's `euk`, in any case (peftsp.cli.organism_name, as --organism reads it).

Stricter than nf-schema, as typos: an unknown or repeated column, and a CSV/TSV row whose
number of fields differs from the header's (empty columns at the end of the header, e.g. from
a spreadsheet, are ignored with their empty cells, as nf-schema ignores them). Errors name the
samplesheet and the line (CSV/TSV) or entry (JSON/YAML).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peftsp.cli import organism_name
from peftsp.errors import InputError
from peftsp.grammar import ORGANISMS

# Samplesheet columns (assets/schema_input.json describes the same for Nextflow; a test checks).
SAMPLESHEET_COLUMNS = ("sample", "fasta", "organism")
REQUIRED_COLUMNS = ("sample", "fasta")
# A sample id names its output directory (the schema's pattern; predict's --sample rule).
SAMPLE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
SAMPLE_ID_MAX_LENGTH = 200
# A FASTA path has no whitespace (the schema's pattern): Nextflow's task scripts pass it as one
# unquoted word.
FASTA_PATH_PATTERN = r"^\S+$"
FASTA_PATH_RULE = (
    "a FASTA path must not contain whitespace (Nextflow's tasks pass it unquoted); rename the file"
)
# File type by extension, as nf-schema reads it.
FORMATS = {".csv": "csv", ".tsv": "tsv", ".json": "json", ".yaml": "yaml", ".yml": "yaml"}

# CSV/TSV cells that nf-schema types as numbers (org.json's JSONObject.stringToValue).
_INTEGER = re.compile(r"-?(0|[1-9][0-9]*)")
_DECIMAL = re.compile(r"-?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?")
# YAML 1.2 and Java's SnakeYAML read 1e5 as a number; PyYAML (YAML 1.1) would read it as text.
_YAML_EXPONENT = re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$")


@dataclass(frozen=True)
class Sample:
    """One proteome of a run."""

    id: str
    fasta: Path
    organism: str


@dataclass(frozen=True)
class _Row:
    values: dict[str, Any]  # typed; absent values left out
    raw: dict[str, str]  # CSV/TSV: the cells as written
    path: str
    line: int | None  # CSV/TSV
    entry: int  # 1-based row number

    def error(self, message: str, record: str | None = None) -> InputError:
        if self.line is None:
            message = f"entry {self.entry}: {message}"
        return InputError(message, path=self.path, record=record, line=self.line)


def stageable(fasta: str) -> bool:
    """Whether a FASTA path follows the schema's pattern (FASTA_PATH_PATTERN)."""
    return re.fullmatch(FASTA_PATH_PATTERN, fasta) is not None


def samplesheet_format(path: Path) -> str | None:
    """csv, tsv, json or yaml by the file's extension; None for any other file."""
    return FORMATS.get(path.suffix.lower())


def read_samplesheet(path: Path, organism: str) -> list[Sample]:
    """The samples of a samplesheet, in order; `organism` for rows without one."""
    kind = samplesheet_format(path)
    if kind is None:
        raise InputError(
            "--input is a samplesheet (.csv, .tsv, .json, .yaml or .yml); give a single "
            "protein FASTA with --fasta",
            path=str(path),
        )
    if not path.is_file():
        raise InputError("no such file", path=str(path))
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"cannot read the samplesheet ({err})", path=str(path)) from err
    rows = _table_rows(text, path, kind) if kind in ("csv", "tsv") else _data_rows(text, path, kind)
    samples: list[Sample] = []
    first: dict[str, _Row] = {}
    for row in rows:
        sample = _sample(row, organism)
        if sample.id in first:
            earlier = first[sample.id]
            where = f"line {earlier.line}" if earlier.line else f"entry {earlier.entry}"
            raise row.error(f"sample id already used on {where}", record=sample.id)
        first[sample.id] = row
        samples.append(sample)
    if not samples:
        raise InputError("samplesheet has no samples", path=str(path))
    return samples


# --- reading ---------------------------------------------------------------------------------


def cell_value(text: str) -> Any:
    """A stripped CSV/TSV cell typed as nf-schema types it: None (empty or `null`, i.e.
    absent), a boolean, an integer, a decimal number, or the text."""
    if text == "" or text.lower() == "null":
        return None
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if text[0].isdigit() or text[0] == "-":
        if any(c in text for c in ".eE") or text == "-0":
            if _DECIMAL.fullmatch(text):
                return float(text)
        elif _INTEGER.fullmatch(text):
            return int(text)
    return text


def _table_rows(text: str, path: Path, kind: str) -> Iterator[_Row]:
    separator = "," if kind == "csv" else "\t"
    name = "comma" if kind == "csv" else "tab"
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=separator)
    header: list[str] | None = None
    entry = 0
    for cells in reader:
        cells = [c.strip() for c in cells]
        if not any(cells):
            continue  # a blank line
        if header is None:
            header = cells
            while header and header[-1] == "":
                header.pop()
            _check_columns(header, path, reader.line_num)
            continue
        extra = cells[len(header) :]
        if len(cells) < len(header) or any(extra):
            raise InputError(
                f"expected {len(header)} {name}-separated fields, found {len(cells)}",
                path=str(path),
                line=reader.line_num,
            )
        entry += 1
        raw = dict(zip(header, cells, strict=False))
        values = {k: cell_value(v) for k, v in raw.items()}
        values = {k: v for k, v in values.items() if v is not None}
        yield _Row(values, raw, str(path), reader.line_num, entry)
    if header is None:
        raise InputError(
            f"empty samplesheet; expected the header {separator.join(SAMPLESHEET_COLUMNS)}",
            path=str(path),
        )


def _check_columns(columns: list[str], path: Path, line: int) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    unknown = [c for c in columns if c not in SAMPLESHEET_COLUMNS]
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if missing or unknown or repeated:
        problems = []
        if missing:
            problems.append(f"missing column(s) {', '.join(missing)}")
        if unknown:
            problems.append(f"unknown column(s) {', '.join(repr(c) for c in unknown)}")
        if repeated:
            problems.append(f"repeated column(s) {', '.join(repeated)}")
        raise InputError(
            f"{'; '.join(problems)} in the header; expected sample, fasta and optionally organism",
            path=str(path),
            line=line,
        )


def _data_rows(text: str, path: Path, kind: str) -> Iterator[_Row]:
    data = _load_json(text, path) if kind == "json" else _load_yaml(text, path)
    if data is None:
        data = []
    if not isinstance(data, list):
        raise InputError(
            f"a {kind.upper()} samplesheet is a list of objects (one per sample), not a "
            f"{type(data).__name__}",
            path=str(path),
        )
    for entry, values in enumerate(data, start=1):
        row = _Row({}, {}, str(path), None, entry)
        if not isinstance(values, dict):
            raise row.error(f"expected an object with sample, fasta[, organism], not {values!r}")
        keys = [str(k) for k in values]
        unknown = [k for k in keys if k not in SAMPLESHEET_COLUMNS]
        if unknown:
            raise row.error(
                f"unknown field(s) {', '.join(map(repr, unknown))}; expected sample, fasta "
                "and optionally organism"
            )
        values = {str(k): v for k, v in values.items() if v is not None}
        yield _Row(values, {}, str(path), None, entry)


def _load_json(text: str, path: Path) -> Any:
    try:
        return json.loads(text)
    except ValueError as err:
        line = getattr(err, "lineno", None)
        raise InputError(f"not valid JSON ({err})", path=str(path), line=line) from err


def _load_yaml(text: str, path: Path) -> Any:
    import yaml  # imported here: only YAML samplesheets need it

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver("tag:yaml.org,2002:float", _YAML_EXPONENT, list("-+0123456789"))
    try:
        return yaml.load(text, Loader=Loader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise InputError(f"not valid YAML ({err})", path=str(path), line=line) from err


# --- checking --------------------------------------------------------------------------------


def _sample(row: _Row, default_organism: str) -> Sample:
    values = row.values
    for column in REQUIRED_COLUMNS:
        if column not in values:
            raise row.error(f"no {column}")
    sample = _sample_id(row, values["sample"])
    fasta = values["fasta"]
    if not isinstance(fasta, str):
        raise row.error(f"fasta {fasta!r} is not a file path", record=sample)
    if not stageable(fasta):
        raise row.error(f"fasta {fasta!r}: {FASTA_PATH_RULE}", record=sample)
    if not Path(fasta).is_file():
        raise row.error(f"no such FASTA file {fasta!r}", record=sample)
    organism = values.get("organism", "")
    if not isinstance(organism, str):
        raise row.error(f"unknown organism {organism!r}", record=sample)
    organism = organism_name(organism) or default_organism
    if organism not in ORGANISMS:
        raise row.error(
            f"unknown organism {values['organism']!r}; expected one of {', '.join(ORGANISMS)} "
            "(or euk), or empty for --organism",
            record=sample,
        )
    return Sample(id=sample, fasta=Path(fasta), organism=organism)


def _sample_id(row: _Row, value: Any) -> str:
    rule = "letters, digits, '.', '_' and '-', starting with a letter or digit"
    shown = repr(row.raw.get("sample", value))
    if isinstance(value, bool | float):
        kind = "a boolean" if isinstance(value, bool) else "a decimal number"
        raise row.error(
            f"bad sample id {shown}: it reads as {kind}, which nf-schema refuses; use {rule} "
            "that does not read as a number (e.g. put a letter first)"
        )
    if isinstance(value, int) and value >= 0:
        value = str(value)
    if not isinstance(value, str) or not re.fullmatch(SAMPLE_ID_PATTERN, value):
        raise row.error(f"bad sample id {shown}: use {rule}")
    if len(value) > SAMPLE_ID_MAX_LENGTH:
        raise row.error(f"sample id longer than {SAMPLE_ID_MAX_LENGTH} characters")
    return value
