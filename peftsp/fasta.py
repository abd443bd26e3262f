"""Reading protein FASTA and SignalP 6.0 three-line labelled FASTA, plain or gzip.

Both readers stream: records are yielded one at a time as the file is read, so a problem late
in a file is raised after the earlier records were yielded (callers that write outputs collect
or validate first, so that no partial output is left). Every problem raises
peftsp.errors.InputError naming the file, and the line and record where they are known.

Decided behaviour for hostile input (product decisions, each covered by a test):

- Missing or unreadable file, or a directory: InputError naming the file.
- Compression is recognised by its magic bytes, never by the extension. gzip is read; bzip2, xz,
  zstd and zip are refused by name. A corrupt or truncated gzip stream raises InputError naming
  the file when the reader gets there (records before it may already have been yielded).
- Empty file (0 bytes), or only blank lines: "no FASTA records".
- Not FASTA: the first non-blank line does not start with '>' ("looks like GFF" when it starts
  with ##gff-version). Binary data (a NUL byte, or bytes that are not UTF-8): InputError with the
  line. A UTF-8 byte order mark at the start is ignored. A carriage return inside a line
  (classic Mac line endings) is refused, so that line numbers agree with any text reader.
- CRLF line endings, trailing whitespace and blank lines are ignored silently.
- Header: the ID is the first whitespace-delimited word (tabs split like spaces); an empty ID
  (">" or "> desc") is an error. IDs are kept as they are, including ';', '=', '%' and non-ASCII
  characters (writers escape them). A duplicate ID is an error naming both lines. A control
  character other than tab, or a Unicode line or paragraph separator, anywhere in a header is
  an error naming its column. An ID starting with '#' is read, with the note COMMENT_ID_NOTE
  (the command line warns): its row of prediction_results.txt looks like a comment line.
- A header without sequence lines (followed by another header or the end of the file) is an
  error naming the record and its line.
- Sequence cleaning, each change recorded in Protein.notes: whitespace inside sequence lines and
  digits (GenBank-style numbering) removed; lower case upper-cased; terminal '*' (stop) removed;
  internal '*' -> 'X'; 'J' -> 'X' (ESM-2 has no J token); gaps '-' and '.' removed. X, B, Z, U
  and O are kept (ESM-2 has tokens for them). Any other character is an error naming the
  record, the line and the character. A sequence left empty by cleaning is an error.
- No length limits: 1-residue and 100,000-residue proteins are read alike.
- Nucleotide sequences given by mistake (a genome, transcripts, CDS): a record is
  nucleotide-like when it has at least NUCLEOTIDE_MIN_LENGTH residues after cleaning, at least
  NUCLEOTIDE_FRACTION of them are A/C/G/T/U/N and at least three of the bases A, C, G, T/U
  occur (so poly-Ala or poly-Asn stretches are not taken for DNA). The decision is made on the
  first records, streaming: the reader holds back at most NUCLEOTIDE_REFUSE records while every
  record so far is nucleotide-like; when the first NUCLEOTIDE_REFUSE records (or every record of
  a shorter file) are all nucleotide-like, the file is refused with an InputError naming it and
  its first record, before any record is yielded. Otherwise a nucleotide-like record anywhere
  in the file is read like any other, with the note NUCLEOTIDE_NOTE (the command line warns).

The labelled reader is strict instead of cleaning, since labels must stay aligned with residues:
header ACCESSION|KINGDOM|TYPE|PARTITION, exactly one sequence line (residue letters only) and one
label line (SLTPIMO) of the same length, which the region grammar must accept.
"""

from __future__ import annotations

import gzip
import os
import string
import unicodedata
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import BinaryIO

from peftsp import grammar
from peftsp.errors import InputError
from peftsp.labels import LABEL_LETTERS, LabelError, region_bitmap
from peftsp.tokens import RESIDUES

PathLike = str | os.PathLike[str]

_GZIP_MAGIC = b"\x1f\x8b"
_REFUSED_COMPRESSION = {
    b"BZh": "bzip2",
    b"\xfd7zXZ\x00": "xz",
    b"\x28\xb5\x2f\xfd": "zstd",
    b"PK\x03\x04": "zip",
}
_LABEL_LETTERS = frozenset(LABEL_LETTERS)
# Nucleotide FASTA given by mistake (see the module docstring).
NUCLEOTIDE_MIN_LENGTH = 20
NUCLEOTIDE_FRACTION = 0.9
NUCLEOTIDE_REFUSE = 3
NUCLEOTIDE_NOTE = "looks like a nucleotide sequence (90% or more A/C/G/T/U/N)"
COMMENT_ID_NOTE = (
    "ID starts with '#': readers that skip '#' comment lines of prediction_results.txt "
    "(pandas comment='#', grep -v '^#') drop this row"
)
_NUCLEOTIDE_LETTERS = "ACGTUN"
_RESIDUE_SET = frozenset(RESIDUES)

# Characters that cleaning removes, each with the note it leaves.
_REMOVED = (
    (frozenset(" \t"), "whitespace removed"),
    (frozenset(string.digits), "digits removed"),
    (frozenset("-."), "gap characters removed"),
)
_REMOVE_TABLE = str.maketrans("", "", "".join("".join(chars) for chars, _ in _REMOVED))
_LOWER = frozenset(RESIDUES.lower() + "j")
# Everything a raw sequence line may contain; anything else is an error.
_ACCEPTED = frozenset(RESIDUES + "J*").union(_LOWER, *(chars for chars, _ in _REMOVED))


@dataclass
class Protein:
    """One protein of a FASTA file."""

    id: str  # first whitespace-delimited word of the header
    header: str  # the header line without '>'
    sequence: str  # cleaned, upper case
    line: int  # 1-based line number of the header
    notes: list[str] = field(default_factory=list)  # normalisations applied, human-readable


@dataclass
class LabelledRecord:
    """One record of SignalP 6.0's three-line labelled FASTA."""

    accession: str
    kingdom: str  # EUKARYA, ARCHAEA, POSITIVE or NEGATIVE
    sp_type: str  # one of grammar.SP_TYPES
    partition: int
    sequence: str
    labels: str  # one of S, L, T, P, I, M, O per residue
    line: int  # 1-based line number of the header


def read_proteins(path: PathLike) -> Iterator[Protein]:
    """Yield the proteins of a FASTA file (plain or gzip) in file order, cleaned.

    Raises InputError for the cases listed in the module docstring, while iterating; a file of
    nucleotide sequences is refused before its first record is yielded.
    """
    name = str(path)
    held: list[Protein] = []  # the first records, while every one is nucleotide-like
    deciding = True
    for protein in _cleaned_proteins(path):
        nucleotide = looks_like_nucleotide(protein.sequence)
        if nucleotide:
            protein.notes.append(NUCLEOTIDE_NOTE)
        if deciding:
            if nucleotide:
                held.append(protein)
                if len(held) < NUCLEOTIDE_REFUSE:
                    continue
                raise _nucleotide_file(name, held)
            deciding = False
            yield from held
            held.clear()
        yield protein
    if held:  # a short file whose records are all nucleotide-like
        raise _nucleotide_file(name, held)


def looks_like_nucleotide(sequence: str) -> bool:
    """True when a cleaned sequence reads as DNA/RNA rather than protein (module docstring)."""
    if len(sequence) < NUCLEOTIDE_MIN_LENGTH:
        return False
    counts = {c: sequence.count(c) for c in _NUCLEOTIDE_LETTERS}  # str.count: C speed
    if sum(counts.values()) < NUCLEOTIDE_FRACTION * len(sequence):
        return False
    return sum(1 for c in "ACG" if counts[c]) + bool(counts["T"] or counts["U"]) >= 3


def _nucleotide_file(name: str, held: list[Protein]) -> InputError:
    first = held[0]
    return InputError(
        f"this looks like a nucleotide FASTA, not proteins: its first {len(held)} record(s) "
        "are 90% or more A/C/G/T/U/N (translate the sequences to proteins first)",
        name,
        first.id,
        first.line,
    )


def _cleaned_proteins(path: PathLike) -> Iterator[Protein]:
    name = str(path)
    seen: dict[str, int] = {}
    for line, header, body in _records(path):
        ident = _first_word(header)
        if not ident:
            raise InputError("header has no ID (nothing right after '>')", name, line=line)
        _check_header(header, name, ident, line)
        if ident in seen:
            raise InputError(f"duplicate ID, first seen on line {seen[ident]}", name, ident, line)
        seen[ident] = line
        sequence, notes = _clean(body, name, ident, line)
        if ident.startswith("#"):
            notes.append(COMMENT_ID_NOTE)
        yield Protein(ident, header, sequence, line, notes)


def _check_header(header: str, name: str, ident: str, line: int) -> None:
    """Refuse control characters (a tab is whitespace) and Unicode line or paragraph separators
    in a header: they would be copied into the output tables and the terminal."""
    for column, char in enumerate(header, start=2):
        if char != "\t" and unicodedata.category(char) in ("Cc", "Zl", "Zp"):
            raise InputError(
                f"control or line-separator character U+{ord(char):04X} in the header at "
                f"column {column}",
                name,
                ident,
                line,
            )


def read_labelled(path: PathLike) -> Iterator[LabelledRecord]:
    """Yield the records of a SignalP 6.0 three-line labelled FASTA file (plain or gzip)."""
    name = str(path)
    for line, header, body in _records(path):
        yield _labelled(name, line, header, body)


def read_labelled_list(
    path: PathLike, partitions: Iterable[int] | None = None
) -> list[LabelledRecord]:
    """All labelled records of a file, or those in `partitions`, in file order."""
    records = read_labelled(path)
    if partitions is None:
        return list(records)
    wanted = set(partitions)
    return [r for r in records if r.partition in wanted]


def numbered_lines(path: PathLike) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, decoded line with its line ending) of a plain or gzip file.

    Lines end at '\\n' only. Raises InputError for an unreadable, binary, non-UTF-8, corrupt or
    truncated file.
    """
    name = str(path)
    with open_binary(path, name) as handle:
        try:
            for number, raw in enumerate(handle, start=1):
                yield number, _decode(raw, name, number)
        except (OSError, EOFError, zlib.error) as err:
            gzipped = isinstance(handle, gzip.GzipFile)
            what = "corrupt or truncated gzip data" if gzipped else "read error"
            raise InputError(f"{what} ({err})", name) from err


@contextmanager
def open_binary(path: PathLike, name: str) -> Iterator[BinaryIO]:
    """The file's bytes, gunzipped when it starts with the gzip magic number."""
    try:
        handle = open(path, "rb")  # noqa: SIM115 (closed by the with below)
    except OSError as err:
        raise InputError(f"cannot open: {err.strerror or err}", name) from err
    with handle:
        head = handle.peek(8)[:8]
        for magic, kind in _REFUSED_COMPRESSION.items():
            if head.startswith(magic):
                raise InputError(f"{kind}-compressed; only plain or gzip files are read", name)
        if head.startswith(_GZIP_MAGIC):
            with gzip.GzipFile(fileobj=handle) as unzipped:
                yield unzipped
        else:
            yield handle


def _decode(raw: bytes, name: str, number: int) -> str:
    if b"\0" in raw:
        raise InputError("binary data (NUL byte): not a text FASTA file", name, line=number)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(
            f"not UTF-8 text (byte 0x{raw[err.start]:02x} at column {err.start + 1}): "
            "not a text FASTA file",
            name,
            line=number,
        ) from err
    if number == 1:
        text = text.removeprefix("\ufeff")
    if "\r" in text.rstrip("\r\n"):
        raise InputError(
            "carriage return inside a line (classic Mac line endings are not supported)",
            name,
            line=number,
        )
    return text


def _records(path: PathLike) -> Iterator[tuple[int, str, list[tuple[int, str]]]]:
    """Yield (header line number, header without '>', [(line number, line), ...]) per record.

    Lines are stripped of trailing whitespace; blank lines are skipped. Every record has at
    least one body line.
    """
    name = str(path)
    start, header, body = 0, None, []
    for number, text in numbered_lines(path):
        text = text.rstrip()
        if text.startswith(">"):
            if header is not None:
                yield _checked(name, start, header, body)
            start, header, body = number, text[1:], []
        elif not text:
            continue
        elif header is None:
            raise _not_fasta(name, number, text)
        else:
            body.append((number, text))
    if header is None:
        raise InputError("no FASTA records", name)
    yield _checked(name, start, header, body)


def _checked(
    name: str, line: int, header: str, body: list[tuple[int, str]]
) -> tuple[int, str, list[tuple[int, str]]]:
    if not body:
        raise InputError("header has no sequence", name, _first_word(header) or None, line)
    return line, header, body


def _not_fasta(name: str, number: int, text: str) -> InputError:
    hint = "; it looks like GFF" if text.startswith("##gff-version") else ""
    return InputError(
        f"not FASTA: the first line with text does not start with '>'{hint}", name, line=number
    )


def _first_word(header: str) -> str:
    """The ID: the header up to the first whitespace ('' when the header starts with one)."""
    return "" if not header or header[0].isspace() else header.split(maxsplit=1)[0]


def _clean(body: list[tuple[int, str]], name: str, record: str, line: int) -> tuple[str, list[str]]:
    """The cleaned sequence of a record's lines and the notes on what cleaning changed."""
    for number, text in body:
        if not _ACCEPTED.issuperset(text):
            column, char = next((i, c) for i, c in enumerate(text, 1) if c not in _ACCEPTED)
            raise InputError(
                f"character {char!r} at column {column} is not an amino acid", name, record, number
            )
    raw = "".join(text for _, text in body)
    present = set(raw)
    notes = [note for chars, note in _REMOVED if present & chars]
    sequence = raw.translate(_REMOVE_TABLE)
    if present & _LOWER:
        sequence = sequence.upper()
        notes.append("lower case converted")
    if sequence.endswith("*"):
        sequence = sequence.rstrip("*")
        notes.append("terminal '*' removed")
    if "*" in sequence:
        sequence = sequence.replace("*", "X")
        notes.append("internal '*' replaced by 'X'")
    if "J" in sequence:
        sequence = sequence.replace("J", "X")
        notes.append("'J' replaced by 'X'")
    if not sequence:
        raise InputError("sequence is empty after cleaning", name, record, line)
    return sequence, notes


def _labelled(name: str, line: int, header: str, body: list[tuple[int, str]]) -> LabelledRecord:
    fields = header.split("|")
    if len(fields) != 4 or not fields[0]:
        raise InputError(
            f"header {header!r} is not ACCESSION|KINGDOM|TYPE|PARTITION", name, line=line
        )
    accession, kingdom, sp_type, partition = fields

    def fail(message: str, at: int = line) -> InputError:
        return InputError(message, name, accession, at)

    if kingdom not in grammar.KINGDOM_TO_ORGANISM:
        kingdoms = ", ".join(grammar.KINGDOM_TO_ORGANISM)
        raise fail(f"unknown kingdom {kingdom!r}; expected {kingdoms}")
    if sp_type not in grammar.SP_TYPES:
        raise fail(f"unknown type {sp_type!r}; expected {', '.join(grammar.SP_TYPES)}")
    if not (partition.isascii() and partition.isdigit()):
        raise fail(f"partition {partition!r} is not a non-negative integer")
    if len(body) != 2:
        raise fail(f"expected a sequence line and a label line, found {len(body)} line(s)")
    (seq_line, sequence), (label_line, labels) = body
    if not _RESIDUE_SET.issuperset(sequence):
        bad = next(c for c in sequence if c not in _RESIDUE_SET)
        raise fail(f"character {bad!r} in the sequence is not an amino acid", seq_line)
    if not _LABEL_LETTERS.issuperset(labels):
        bad = next(c for c in labels if c not in _LABEL_LETTERS)
        raise fail(f"label {bad!r} is not one of S, L, T, P, I, M, O", label_line)
    if len(labels) != len(sequence):
        raise fail(f"{len(labels)} labels for {len(sequence)} residues", label_line)
    try:
        region_bitmap(sequence, labels, sp_type)
    except LabelError as err:
        raise fail(f"labels do not fit the region grammar: {err}", label_line) from err
    return LabelledRecord(accession, kingdom, sp_type, int(partition), sequence, labels, line)
