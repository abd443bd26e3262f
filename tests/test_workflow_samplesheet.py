"""The samplesheet of `peftsp pipeline --input` (peftsp.workflow.samplesheet): CSV, TSV, JSON
and YAML by extension, with assets/schema_input.json's columns and rules, checked against
tests/nf_schema.py (nf-schema's validation in Python) on the cases where they could differ."""

from __future__ import annotations

import json
from pathlib import Path

import nf_schema
import pytest
from workflow_fixtures import make_fasta

from peftsp.errors import InputError
from peftsp.predict import SAMPLE_PATTERN
from peftsp.workflow import samplesheet
from peftsp.workflow.samplesheet import Sample, cell_value, read_samplesheet

REPO = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((REPO / "assets" / "schema_input.json").read_text())


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """tmp_path as the working directory, with a.faa and b.faa in it."""
    monkeypatch.chdir(tmp_path)
    make_fasta(tmp_path / "a.faa", 2, seed=1)
    make_fasta(tmp_path / "b.faa", 2, seed=2)
    return tmp_path


def write_sheet(directory: Path, kind: str, rows: list[dict]) -> Path:
    """A samplesheet of `rows` (dicts of cell text) in one of the four formats."""
    path = directory / f"sheet.{kind}"
    columns = list(dict.fromkeys(k for row in rows for k in row))
    if kind in ("csv", "tsv"):
        separator = "," if kind == "csv" else "\t"
        lines = [separator.join(columns)]
        lines += [separator.join(row.get(c, "") for c in columns) for row in rows]
        path.write_text("\n".join(lines) + "\n")
    elif kind == "json":
        path.write_text(json.dumps(rows, indent=1))
    else:
        text = "".join(
            "- " + "\n  ".join(f"{k}: {json.dumps(v)}" for k, v in row.items()) + "\n"
            for row in rows
        )
        path.write_text(text)
    return path


ROWS = [
    {"sample": "A", "fasta": "a.faa", "organism": "eukarya"},
    {"sample": "B", "fasta": "b.faa", "organism": ""},
    {"sample": "C", "fasta": "a.faa", "organism": "euk"},
]


@pytest.mark.parametrize("kind", ["csv", "tsv", "json", "yaml"])
def test_every_format_gives_the_same_samples(in_tmp, kind):
    sheet = write_sheet(in_tmp, kind, ROWS)
    assert read_samplesheet(sheet, "archaea") == [
        Sample("A", Path("a.faa"), "eukarya"),
        Sample("B", Path("b.faa"), "archaea"),  # empty organism: --organism
        Sample("C", Path("a.faa"), "eukarya"),  # SignalP 6.0's spelling
    ]


def test_yml_extension_and_an_absent_organism_column(in_tmp):
    sheet = in_tmp / "sheet.yml"
    sheet.write_text("- sample: A\n  fasta: a.faa\n- {sample: 7, fasta: b.faa}\n")
    assert read_samplesheet(sheet, "other") == [
        Sample("A", Path("a.faa"), "other"),
        Sample("7", Path("b.faa"), "other"),
    ]


def test_organism_spellings_go_through_the_cli_rule(in_tmp):
    sheet = in_tmp / "sheet.csv"
    sheet.write_text(
        "sample,fasta,organism\nA,a.faa, Eukarya \nB,a.faa,EUK\nC,a.faa,gram_negative\n"
    )
    assert [s.organism for s in read_samplesheet(sheet, "other")] == [
        "eukarya",
        "eukarya",
        "gram_negative",
    ]


def test_the_sample_id_rule_is_the_schemas_and_predicts():
    assert SCHEMA["items"]["properties"]["sample"]["pattern"] == samplesheet.SAMPLE_ID_PATTERN
    assert f"^{SAMPLE_PATTERN}$" == samplesheet.SAMPLE_ID_PATTERN


CELLS = [
    "", "12", "007", "0", "-3", "-0", "1.5", "1.", ".5", "1e5", "1E5", "1e+5", "1.5e-3", "1.5.2",
    "1e", "e5", "v1.5", "true", "FALSE", "null", "Null", "0x10", "12abc", "ecoli", "a b",
]  # fmt: skip


def test_cells_are_typed_as_nf_schema_types_them():
    for cell in CELLS:
        value = cell_value(cell)
        expected = nf_schema.string_to_value(cell)
        assert (type(value), value) == (type(expected), expected), cell


SAMPLE_IDS = [
    "ecoli", "GCF_000005845.2", "12", "007", "0", "1.5", "1e5", "1E5", "1.", "1.5.2", "v1.5",
    "true", "-3", ".hidden", "_x", "a b", "a/b", "1e", "x" * 200,
]  # fmt: skip


@pytest.mark.parametrize("kind", ["csv", "tsv", "json"])
@pytest.mark.parametrize("sample", SAMPLE_IDS)
def test_a_sample_id_is_accepted_exactly_when_nf_schema_accepts_it(in_tmp, kind, sample):
    sheet = write_sheet(in_tmp, kind, [{"sample": sample, "fasta": "a.faa"}])
    validator = nf_schema.make_validator(SCHEMA, in_tmp, REPO)
    nf_errors = list(validator.iter_errors(nf_schema.read_samplesheet(sheet)))
    if kind != "json" and isinstance(cell_value(sample), float):
        # Python's jsonschema takes a float without fraction (1e5, "1.") for an "integer";
        # decimal-looking ids are refused as nf-schema refuses them (and meta.id.toString()
        # of such a number would not be the text written)
        nf_errors = nf_errors or ["a decimal number"]
    try:
        (read,) = read_samplesheet(sheet, "other")
    except InputError as error:
        assert nf_errors, f"{sample!r}: refused ({error}), nf-schema accepts it"
        assert "bad sample id" in error.reason and error.path == str(sheet)
    else:
        assert not nf_errors, f"{sample!r}: accepted, nf-schema refuses it"
        assert read.id == sample or (kind in ("csv", "tsv") and read.id == str(int(sample)))


@pytest.mark.parametrize(
    ("kind", "text", "problem"),
    [
        ("csv", "sample,fasta\n1.5,a.faa\n", "decimal number"),
        ("csv", "sample,fasta\n1e5,a.faa\n", "decimal number"),
        ("csv", "sample,fasta\nTrue,a.faa\n", "boolean"),
        ("json", '[{"sample": 1.5, "fasta": "a.faa"}]', "decimal number"),
        ("json", '[{"sample": true, "fasta": "a.faa"}]', "boolean"),
        ("json", '[{"sample": -1, "fasta": "a.faa"}]', "bad sample id -1"),
        # unquoted 1e5 is a number in YAML 1.2 (PyYAML alone would make it a string)
        ("yaml", "- {sample: 1e5, fasta: a.faa}\n", "decimal number"),
        ("yaml", "- {sample: 1.5, fasta: a.faa}\n", "decimal number"),
        ("yaml", "- {sample: yes, fasta: a.faa}\n", "boolean"),
    ],
)
def test_ids_that_read_as_numbers_or_booleans_are_refused(in_tmp, kind, text, problem):
    sheet = in_tmp / f"sheet.{kind}"
    sheet.write_text(text)
    with pytest.raises(InputError, match="bad sample id") as error:
        read_samplesheet(sheet, "other")
    assert problem in error.value.reason


def test_quoted_decimal_looking_ids_are_text_in_json_and_yaml(in_tmp):
    (in_tmp / "sheet.json").write_text('[{"sample": "1.5", "fasta": "a.faa"}]')
    assert read_samplesheet(in_tmp / "sheet.json", "other")[0].id == "1.5"
    (in_tmp / "sheet.yaml").write_text("- {sample: '1e5', fasta: a.faa}\n")
    assert read_samplesheet(in_tmp / "sheet.yaml", "other")[0].id == "1e5"


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("sample,organism\nA,eukarya\n", 1, "missing column(s) fasta"),
        ("sample,fasta,kingdom\nA,a.faa,x\n", 1, "unknown column(s) 'kingdom'"),
        ("sample,fasta,sample\nA,a.faa,B\n", 1, "repeated column(s) sample"),
        ("sample,fasta\nA,a.faa\nB,a.faa\nA,a.faa\n", 4, "already used on line 2"),
        ("sample,fasta\nA,missing.faa\n", 2, "no such FASTA file"),
        ("sample,fasta\nA,.\n", 2, "no such FASTA file"),  # a directory
        ("sample,fasta\nA,12\n", 2, "is not a file path"),
        ("sample,fasta\nA,my a.faa\n", 2, "must not contain whitespace"),  # the file exists
        ("sample,fasta,organism\nA,a.faa,eukarya\nB,a.faa,plant\n", 3, "unknown organism"),
        ("sample,fasta\n../up,a.faa\n", 2, "bad sample id"),
        ("sample,fasta\n,a.faa\n", 2, "no sample"),
        ("sample,fasta\nA,a.faa,extra\n", 2, "expected 2 comma-separated fields, found 3"),
        ("sample,fasta,organism\nA\n", 2, "expected 3 comma-separated fields, found 1"),
        ("\nsample,fasta\n\nA,a.faa\nA,b.faa\n", 5, "already used on line 4"),
    ],
)
def test_samplesheet_errors_name_the_line(in_tmp, text, line, message):
    make_fasta(in_tmp / "my a.faa", 2)
    sheet = in_tmp / "sheet.csv"
    sheet.write_text(text)
    with pytest.raises(InputError) as error:
        read_samplesheet(sheet, "other")
    assert error.value.line == line
    assert message in error.value.reason
    assert error.value.path == str(sheet)


@pytest.mark.parametrize(
    ("kind", "text", "message"),
    [
        ("json", '{"sample": "A", "fasta": "a.faa"}', "a list of objects"),
        ("json", '[{"sample": "A", "fasta": "a.faa"}, "B"]', "entry 2: expected an object"),
        ("json", '[{"sample": "A", "fasta": "a.faa", "kingdom": "x"}]', "entry 1: unknown field"),
        ("json", '[{"sample": 12, "fasta": "a.faa"}, {"sample": "12", "fasta": "b.faa"}]',
         "entry 2: sample id already used on entry 1"),
        ("json", '[{"sample": "A"}]', "entry 1: no fasta"),
        ("json", '[{"sample": "A", "fasta": "a.faa"', "not valid JSON"),
        ("yaml", "- sample: A\n  fasta: [a.faa\n", "not valid YAML"),
    ],
)  # fmt: skip
def test_json_and_yaml_errors_name_the_entry(in_tmp, kind, text, message):
    sheet = in_tmp / f"sheet.{kind}"
    sheet.write_text(text)
    with pytest.raises(InputError) as error:
        read_samplesheet(sheet, "other")
    assert message in error.value.reason and error.value.path == str(sheet)


def test_trailing_empty_columns_of_a_spreadsheet_export_are_ignored(in_tmp):
    sheet = in_tmp / "sheet.csv"
    sheet.write_text("sample,fasta,organism,,\nA,a.faa,eukarya,,\nB,b.faa,,,\n")
    assert [s.id for s in read_samplesheet(sheet, "other")] == ["A", "B"]


def test_a_fasta_or_unknown_extension_given_as_samplesheet_points_to_fasta(in_tmp):
    for name in ("a.faa", "sheet.txt", "sheet"):
        with pytest.raises(InputError, match="give a single protein FASTA with --fasta"):
            read_samplesheet(in_tmp / name, "other")


def test_empty_or_missing_samplesheet_is_an_error(in_tmp):
    sheet = in_tmp / "sheet.csv"
    for text in ("", "\n\n", "sample,fasta\n"):
        sheet.write_text(text)
        with pytest.raises(InputError):
            read_samplesheet(sheet, "other")
    for kind, text in (("json", "[]"), ("yaml", "")):
        (in_tmp / f"sheet.{kind}").write_text(text)
        with pytest.raises(InputError, match="no samples"):
            read_samplesheet(in_tmp / f"sheet.{kind}", "other")
    with pytest.raises(InputError, match="no such file"):
        read_samplesheet(in_tmp / "missing.csv", "other")
