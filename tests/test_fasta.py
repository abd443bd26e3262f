"""FASTA and three-line labelled FASTA reading: cleaning, streaming and every hostile input."""

from __future__ import annotations

import bz2
import gzip
import os
import random
from pathlib import Path

import pytest
from synthetic import make_dataset, make_record

from peftsp.errors import InputError
from peftsp.fasta import (
    COMMENT_ID_NOTE,
    NUCLEOTIDE_NOTE,
    LabelledRecord,
    looks_like_nucleotide,
    numbered_lines,
    read_labelled,
    read_labelled_list,
    read_proteins,
)


def write(tmp_path: Path, content: str | bytes, name: str = "in.fasta") -> Path:
    path = tmp_path / name
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def read_error(reader, path: Path, *, line: int | None = None, record: str | None = None):
    """The InputError that reading `path` raises, checked to name the file, line and record."""
    with pytest.raises(InputError) as info:
        list(reader(path))
    err = info.value
    assert err.path == str(path)
    assert str(path) in str(err)
    assert err.line == line
    assert err.record == record
    return err


# --- valid input ----------------------------------------------------------------------------


def test_reads_records_in_order_with_ids_headers_and_lines(tmp_path):
    path = write(
        tmp_path,
        ">sp|P1|A desc one\nMKV\nLLA\n\n>P2\tsecond protein\nMAAA\n\n\n>P3\nM\n",
    )
    proteins = list(read_proteins(path))
    assert [p.id for p in proteins] == ["sp|P1|A", "P2", "P3"]
    assert [p.header for p in proteins] == ["sp|P1|A desc one", "P2\tsecond protein", "P3"]
    assert [p.sequence for p in proteins] == ["MKVLLA", "MAAA", "M"]
    assert [p.line for p in proteins] == [1, 5, 9]
    assert all(p.notes == [] for p in proteins)


def test_crlf_bom_and_trailing_whitespace_are_silent(tmp_path):
    path = write(tmp_path, "\ufeff>P1 desc  \r\nMKV  \r\nLLA\r\n\r\n>P2\r\nMA\r\n")
    proteins = list(read_proteins(path))
    assert [(p.id, p.header, p.sequence, p.line) for p in proteins] == [
        ("P1", "P1 desc", "MKVLLA", 1),
        ("P2", "P2", "MA", 5),
    ]
    assert all(p.notes == [] for p in proteins)


@pytest.mark.parametrize(
    ("lines", "sequence", "notes"),
    [
        (["MKV LLA", "\tAAA"], "MKVLLAAAA", ["whitespace removed"]),
        (["1 MKVLL AAAGG", "11 LLK"], "MKVLLAAAGGLLK", ["whitespace removed", "digits removed"]),
        (["mkvLLa"], "MKVLLA", ["lower case converted"]),
        (["MKVLLA*"], "MKVLLA", ["terminal '*' removed"]),
        (["MKV*LLA"], "MKVXLLA", ["internal '*' replaced by 'X'"]),
        (["MKJLLj"], "MKXLLX", ["lower case converted", "'J' replaced by 'X'"]),
        (["MK-V..LLA-"], "MKVLLA", ["gap characters removed"]),
        (["MXBZUOLA"], "MXBZUOLA", []),
    ],
)
def test_sequence_cleaning_and_notes(tmp_path, lines, sequence, notes):
    path = write(tmp_path, ">P1\n" + "\n".join(lines) + "\n")
    (protein,) = read_proteins(path)
    assert protein.sequence == sequence
    assert protein.notes == notes


def test_ids_keep_special_and_non_ascii_characters(tmp_path):
    ids = ["a;b=c%20", "prot\u00e9ine_\u03b1", "x|y|z"]
    path = write(tmp_path, "".join(f">{i} some description\nMKV\n" for i in ids))
    assert [p.id for p in read_proteins(path)] == ids


def test_one_residue_and_100000_residue_proteins(tmp_path):
    long = "ACDEFGHIKLMNPQRSTVWY" * 5000
    wrapped = "\n".join(long[i : i + 60] for i in range(0, len(long), 60))
    path = write(tmp_path, f">tiny\nM\n>huge\n{wrapped}\n")
    tiny, huge = read_proteins(path)
    assert tiny.sequence == "M"
    assert huge.sequence == long


def test_gzip_is_detected_by_magic_bytes_not_extension(tmp_path):
    text = ">P1\nMKV\n>P2\nLLA\n"
    zipped = write(tmp_path, gzip.compress(text.encode()), "named_plain.fasta")
    plain = write(tmp_path, text, "named_zipped.fasta.gz")
    expected = [("P1", "MKV"), ("P2", "LLA")]
    assert [(p.id, p.sequence) for p in read_proteins(zipped)] == expected
    assert [(p.id, p.sequence) for p in read_proteins(plain)] == expected


def test_numbered_lines_keeps_line_endings(tmp_path):
    path = write(tmp_path, gzip.compress(b">a\r\nMK\n\nV"))
    assert list(numbered_lines(path)) == [(1, ">a\r\n"), (2, "MK\n"), (3, "\n"), (4, "V")]


# --- streaming ------------------------------------------------------------------------------


def test_first_record_is_yielded_before_a_later_bad_record_is_read(tmp_path):
    good = "".join(f">P{i}\n{'MKV' * 20}\n" for i in range(2000))
    path = write(tmp_path, good + ">bad\nMK@V\n")
    proteins = read_proteins(path)
    assert next(proteins).id == "P0"
    with pytest.raises(InputError, match="'@'"):
        list(proteins)


def test_records_before_a_truncated_gzip_stream_are_yielded_first(tmp_path):
    text = "".join(f">P{i}\n{'MKVLLA' * 50}\n" for i in range(3000)).encode()
    data = gzip.compress(text)
    path = write(tmp_path, data[: len(data) // 2])
    proteins = read_proteins(path)
    assert next(proteins).id == "P0"
    with pytest.raises(InputError, match="truncated gzip") as info:
        list(proteins)
    assert info.value.path == str(path)


# --- hostile input: the file ----------------------------------------------------------------


def test_missing_file(tmp_path):
    err = read_error(read_proteins, tmp_path / "absent.fasta")
    assert "cannot open" in err.reason


def test_directory(tmp_path):
    err = read_error(read_proteins, tmp_path)
    assert "cannot open" in err.reason


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files without read permission")
def test_unreadable_file(tmp_path):
    path = write(tmp_path, ">P1\nMKV\n")
    path.chmod(0)
    err = read_error(read_proteins, path)
    assert "cannot open" in err.reason


@pytest.mark.parametrize("content", [b"", b"\n\n  \n\r\n", gzip.compress(b"")])
def test_no_records(tmp_path, content):
    err = read_error(read_proteins, write(tmp_path, content))
    assert err.reason == "no FASTA records"


def test_plain_text_is_not_fasta(tmp_path):
    path = write(tmp_path, "\n\nThis is a letter, not a FASTA file.\n>P1\nMKV\n")
    err = read_error(read_proteins, path, line=3)
    assert "does not start with '>'" in err.reason
    assert "GFF" not in err.reason


def test_gff_given_by_mistake(tmp_path):
    path = write(tmp_path, "##gff-version 3\nseq1\t.\tgene\t1\t90\t.\t+\t.\tID=g1\n")
    err = read_error(read_proteins, path, line=1)
    assert "looks like GFF" in err.reason


def test_nul_byte_is_binary(tmp_path):
    path = write(tmp_path, b">P1\nMKV\nLL\x00A\n")
    err = read_error(read_proteins, path, line=3)
    assert "binary" in err.reason


def test_bytes_that_are_not_utf8(tmp_path):
    path = write(tmp_path, b">P1\nMKV\n>P2 caf\xe9\nMKV\n")
    err = read_error(read_proteins, path, line=3)
    assert "not UTF-8" in err.reason
    assert "0xe9" in err.reason


def test_carriage_return_inside_a_line(tmp_path):
    path = write(tmp_path, b">P1\rMKV\r>P2\rMKV\r")
    err = read_error(read_proteins, path, line=1)
    assert "carriage return" in err.reason


def test_truncated_gzip(tmp_path):
    data = gzip.compress("".join(f">P{i}\nMKV\n" for i in range(100)).encode())
    path = write(tmp_path, data[:-12])
    err = read_error(read_proteins, path)
    assert "corrupt or truncated gzip" in err.reason


def test_corrupt_gzip(tmp_path):
    data = bytearray(gzip.compress(b">P1\nMKV\n>P2\nLLA\n"))
    data[12:20] = b"\xff" * 8  # inside the deflate stream
    err = read_error(read_proteins, write(tmp_path, bytes(data)))
    assert "corrupt or truncated gzip" in err.reason


def test_other_compression_is_refused_by_name(tmp_path):
    path = write(tmp_path, bz2.compress(b">P1\nMKV\n"), "proteins.fasta")
    err = read_error(read_proteins, path)
    assert "bzip2" in err.reason


# --- hostile input: records -----------------------------------------------------------------


@pytest.mark.parametrize("header", [">", "> description only", ">\tdescription"])
def test_header_with_empty_id(tmp_path, header):
    path = write(tmp_path, f">P1\nMKV\n{header}\nMKV\n")
    err = read_error(read_proteins, path, line=3)
    assert "no ID" in err.reason


def test_header_followed_by_another_header(tmp_path):
    path = write(tmp_path, ">P1\nMKV\n>P2 empty\n\n>P3\nMKV\n")
    err = read_error(read_proteins, path, line=3, record="P2")
    assert "no sequence" in err.reason


def test_header_at_end_of_file(tmp_path):
    path = write(tmp_path, ">P1\nMKV\n>P2\n")
    err = read_error(read_proteins, path, line=3, record="P2")
    assert "no sequence" in err.reason


@pytest.mark.parametrize("char", ["@", "#", "é", "\x0b", ";"])
def test_unexpected_character(tmp_path, char):
    path = write(tmp_path, f">P1\nMKV\n>P2\nMKVLL\nAA{char}A\n")
    err = read_error(read_proteins, path, line=5, record="P2")
    assert repr(char) in err.reason
    assert "column 3" in err.reason


@pytest.mark.parametrize("body", ["*", "---", "12 34", "..*"])
def test_sequence_empty_after_cleaning(tmp_path, body):
    path = write(tmp_path, f">P1\nMKV\n>P2\n{body}\n")
    err = read_error(read_proteins, path, line=3, record="P2")
    assert "empty" in err.reason


def test_duplicate_ids_name_both_lines(tmp_path):
    path = write(tmp_path, ">P1 a\nMKV\n>P2\nMKV\n>P1 b\nLLA\n")
    err = read_error(read_proteins, path, line=5, record="P1")
    assert "first seen on line 1" in err.reason


@pytest.mark.parametrize(
    ("header", "record", "char"),
    [
        (">P2 x\x1b]0;title\x07", "P2", "\x1b"),
        (">P2\x7f", "P2\x7f", "\x7f"),
        (">P2 a\u2028b", "P2", "\u2028"),
        (">P2\x85x", "P2", "\x85"),
    ],
)
def test_control_characters_in_a_header_are_refused(tmp_path, header, record, char):
    path = write(tmp_path, f">P1 tab\tis fine\nMKV\n{header}\nMKV\n")
    err = read_error(read_proteins, path, line=3, record=record)
    assert f"U+{ord(char):04X}" in err.reason
    assert f"column {header.index(char) + 1}" in err.reason


def test_an_id_starting_with_hash_is_read_with_a_note(tmp_path):
    path = write(tmp_path, ">#P1 x\nMKV\n>P2\nMKV\n")
    first, second = read_proteins(path)
    assert first.id == "#P1" and first.notes == [COMMENT_ID_NOTE]
    assert second.notes == []


# --- three-line labelled FASTA --------------------------------------------------------------


def test_labelled_records(tmp_path):
    lines = make_dataset(per_type=2, seed=1)
    path = write(tmp_path, "\n".join(lines) + "\n")
    records = list(read_labelled(path))
    assert len(records) == len(lines) // 3
    first = records[0]
    accession, kingdom, sp_type, partition = lines[0][1:].split("|")
    assert first == LabelledRecord(
        accession, kingdom, sp_type, int(partition), lines[1], lines[2], line=1
    )
    assert [r.line for r in records] == list(range(1, len(lines), 3))
    assert {r.sp_type for r in records} == {"NO_SP", "SP", "LIPO", "TAT", "TATLIPO", "PILIN"}


def test_labelled_gzip_crlf_and_partition_filter(tmp_path):
    lines = make_dataset(per_type=2, seed=2, partitions=3)
    path = write(tmp_path, gzip.compress(("\r\n".join(lines) + "\r\n").encode()), "set.fa")
    every = read_labelled_list(path)
    assert len(every) == len(lines) // 3
    chosen = read_labelled_list(path, partitions=[0, 2])
    assert chosen == [r for r in every if r.partition in (0, 2)]
    assert {r.partition for r in chosen} == {0, 2}


def _labelled_file(tmp_path, header: str, body: list[str]) -> Path:
    seq, labels = make_record(random.Random(0), "SP", length=30)
    good = [">OK1|NEGATIVE|SP|0", seq, labels]
    return write(tmp_path, "\n".join([*good, header, *body]) + "\n")


SEQ, LABELS = "MKKLLLLLLLLLLASAQAEDKT", "S" * 16 + "O" * 6


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (">P2|EUKARYA|SP", "ACCESSION|KINGDOM|TYPE|PARTITION"),
        (">P2|EUKARYA|SP|0|extra", "ACCESSION|KINGDOM|TYPE|PARTITION"),
        (">|EUKARYA|SP|0", "ACCESSION|KINGDOM|TYPE|PARTITION"),
    ],
)
def test_labelled_bad_header_shape(tmp_path, header, message):
    path = _labelled_file(tmp_path, header, [SEQ, LABELS])
    err = read_error(read_labelled, path, line=4)
    assert message in err.reason


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (">P2|BACTERIA|SP|0", "unknown kingdom 'BACTERIA'"),
        (">P2|EUKARYA|SEC|0", "unknown type 'SEC'"),
        (">P2|EUKARYA|SP|x", "partition 'x'"),
        (">P2|EUKARYA|SP|-1", "partition '-1'"),
    ],
)
def test_labelled_bad_header_field(tmp_path, header, message):
    path = _labelled_file(tmp_path, header, [SEQ, LABELS])
    err = read_error(read_labelled, path, line=4, record="P2")
    assert message in err.reason


@pytest.mark.parametrize("body", [[SEQ], [SEQ, LABELS, LABELS]])
def test_labelled_wrong_number_of_lines(tmp_path, body):
    path = _labelled_file(tmp_path, ">P2|EUKARYA|SP|0", body)
    err = read_error(read_labelled, path, line=4, record="P2")
    assert f"found {len(body)} line" in err.reason


def test_labelled_header_without_lines(tmp_path):
    path = _labelled_file(tmp_path, ">P2|EUKARYA|SP|0", [])
    err = read_error(read_labelled, path, line=4, record="P2|EUKARYA|SP|0")
    assert "no sequence" in err.reason


@pytest.mark.parametrize("sequence", [SEQ[:5] + "j" + SEQ[6:], SEQ[:5] + "*" + SEQ[6:]])
def test_labelled_sequence_is_not_cleaned(tmp_path, sequence):
    path = _labelled_file(tmp_path, ">P2|EUKARYA|SP|0", [sequence, LABELS])
    err = read_error(read_labelled, path, line=5, record="P2")
    assert repr(sequence[5]) in err.reason


def test_labelled_unknown_label_letter(tmp_path):
    path = _labelled_file(tmp_path, ">P2|EUKARYA|SP|0", [SEQ, LABELS[:-1] + "X"])
    err = read_error(read_labelled, path, line=6, record="P2")
    assert "'X'" in err.reason


def test_labelled_length_mismatch(tmp_path):
    path = _labelled_file(tmp_path, ">P2|EUKARYA|SP|0", [SEQ, LABELS + "O"])
    err = read_error(read_labelled, path, line=6, record="P2")
    assert f"{len(LABELS) + 1} labels for {len(SEQ)} residues" in err.reason


@pytest.mark.parametrize(
    ("header", "labels"),
    [
        (">P2|EUKARYA|SP|0", "I" * len(SEQ)),  # SP type but no SP letters
        (">P2|EUKARYA|NO_SP|0", LABELS),  # NO_SP with an SP
        (">P2|NEGATIVE|LIPO|0", LABELS),  # Sec/SPI letters for a lipoprotein
    ],
)
def test_labelled_labels_rejected_by_the_grammar(tmp_path, header, labels):
    path = _labelled_file(tmp_path, header, [SEQ, labels])
    err = read_error(read_labelled, path, line=6, record="P2")
    assert "region grammar" in err.reason


def test_labelled_reader_reports_file_level_errors_too(tmp_path):
    path = write(tmp_path, gzip.compress(b">P1|EUKARYA|SP|0\nMKV\nSSO\n")[:-10])
    err = read_error(read_labelled, path)
    assert "truncated gzip" in err.reason


def test_valid_files_read_as_biopython_reads_them(tmp_path):
    """On well-formed FASTA our reader (kept for line numbers and strict errors, which
    Biopython's parsers do not give) agrees with Bio.SeqIO record for record."""
    from Bio import SeqIO

    rng = random.Random(5)
    lines = []
    for i in range(40):
        seq = "".join(rng.choice("ACDEFGHIKLMNPQRSTVWYXBZUO") for _ in range(rng.randint(1, 200)))
        lines.append(f">seq{i} description {i}\tx")
        lines += [seq[j : j + 60] for j in range(0, len(seq), 60)]
    path = tmp_path / "ok.faa"
    path.write_text("\n".join(lines) + "\n")
    ours = [(p.id, p.header, p.sequence) for p in read_proteins(path)]
    theirs = [(r.id, r.description, str(r.seq)) for r in SeqIO.parse(path, "fasta")]
    assert ours == theirs


# --- nucleotide FASTA given by mistake ------------------------------------------------------

DNA = "ATGGCTAGCAAAGGAGAAGAACTTTTCACTGGAGTTGTCCCAATTCTTGTTGAATTAGATGGTGATGTTAATGGG"
PROTEIN = "MKKLLLLAVLAAALLASQAEDKNQSTGPRHY"


def _fasta(records: list[tuple[str, str]]) -> str:
    return "".join(f">{ident} description\n{seq}\n" for ident, seq in records)


@pytest.mark.parametrize("count", [1, 2, 3, 50])
def test_a_nucleotide_file_is_refused_naming_its_first_record(tmp_path, count):
    records = [(f"contig{i}", DNA[i % 7 :] + "ACGT" * i) for i in range(count)]
    path = write(tmp_path, _fasta(records))
    reader = read_proteins(path)
    err = read_error(lambda p: reader, path, line=1, record="contig0")
    assert "nucleotide" in str(err) and f"first {min(count, 3)} record(s)" in str(err)


def test_nothing_is_yielded_before_a_nucleotide_file_is_refused(tmp_path):
    path = write(tmp_path, _fasta([(f"c{i}", DNA) for i in range(5)]))
    reader = read_proteins(path)
    with pytest.raises(InputError, match="nucleotide"):
        next(reader)


@pytest.mark.parametrize(
    "sequence",
    ["acgtacgtacgtnnnnacgtuuuu", "ACGUACGUACGUACGUACGUAC", "ACGTNNNNNNNNNNNNNNNNNNNACGT"],
)
def test_lower_case_rna_and_n_runs_count_as_nucleotide(tmp_path, sequence):
    path = write(tmp_path, _fasta([("x", sequence)]))
    read_error(read_proteins, path, line=1, record="x")


def test_one_nucleotide_record_among_proteins_gets_a_note(tmp_path):
    records = [("p1", PROTEIN), ("dna", DNA), ("p2", PROTEIN), ("dna2", DNA.lower())]
    proteins = list(read_proteins(write(tmp_path, _fasta(records))))
    assert [p.id for p in proteins] == ["p1", "dna", "p2", "dna2"]
    assert [NUCLEOTIDE_NOTE in p.notes for p in proteins] == [False, True, False, True]


def test_nucleotide_records_first_then_a_protein_are_all_yielded(tmp_path):
    records = [("dna1", DNA), ("dna2", DNA), ("p1", PROTEIN), ("dna3", DNA)]
    proteins = list(read_proteins(write(tmp_path, _fasta(records))))
    assert [p.id for p in proteins] == ["dna1", "dna2", "p1", "dna3"]
    assert [NUCLEOTIDE_NOTE in p.notes for p in proteins] == [True, True, False, True]


@pytest.mark.parametrize(
    "sequence",
    [
        "A" * 40,  # poly-Ala
        "N" * 40 + "QQQQ",  # poly-Asn and poly-Gln (e.g. Plasmodium, Dictyostelium)
        "GAGAGAGAGAGAGAGAGAGAGAGA",  # two bases only: collagen-like repeats
        "ACGTACGTACGTACGTAC",  # shorter than NUCLEOTIDE_MIN_LENGTH
        "MACGTACGTACGTACGTACGTLLLKKKPPPEEE",  # under 90%
    ],
)
def test_protein_like_sequences_are_not_taken_for_nucleotides(tmp_path, sequence):
    (protein,) = read_proteins(write(tmp_path, _fasta([("x", sequence)])))
    assert NUCLEOTIDE_NOTE not in protein.notes
    assert not looks_like_nucleotide(protein.sequence)


def test_real_proteome_has_no_nucleotide_like_record():
    path = Path(__file__).parent / "data" / "mgenitalium.faa"
    assert not any(NUCLEOTIDE_NOTE in p.notes for p in read_proteins(path))
