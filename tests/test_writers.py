"""Output files: SignalP 6.0 columns, valid GFF3 (checked by BCBio's parser), mature
sequences, JSON round trip, escaping, and no partial files on failure."""

import json

import pytest
from BCBio import GFF

from peftsp import grammar, writers
from peftsp.decoding import Prediction
from peftsp.errors import InputError
from peftsp.grammar import Region


def _prediction(ident, sp_type="SP", cs=22, length=60, regions=None, notes=()):
    probabilities = [0.01] * 6
    probabilities[grammar.SP_TYPES.index(sp_type)] = 0.95
    return Prediction(
        id=ident,
        header=f"{ident} some description",
        sequence=("MKKLLLLAVLAAALLASQA" + "EDKNQSTGPRHY" * 10)[:length],
        sp_type=sp_type,
        probabilities=tuple(probabilities),
        cs=cs if sp_type != "NO_SP" else None,
        cs_probability=0.8731 if sp_type != "NO_SP" and cs else None,
        regions=regions
        if regions is not None
        else [Region("n", 1, 4), Region("h", 5, 16), Region("c", 17, 22)],
        notes=list(notes),
    )


PREDICTIONS = [
    _prediction("P1"),
    _prediction(
        "weird;id=1%x\u00e9",
        "LIPO",
        cs=20,
        regions=[Region("n", 1, 3), Region("h", 4, 17), Region("c", 18, 20)],
    ),
    _prediction("P3", "NO_SP", regions=[]),
    _prediction("P4", "TAT", cs=None, regions=[]),  # SP type but no cleavage site found
    _prediction("P5", "PILIN", cs=5, regions=[]),
    _prediction(
        "P6", "TATLIPO", cs=60, length=60, regions=[Region("n", 1, 10)]
    ),  # SP = whole protein
]


@pytest.fixture
def outdir(tmp_path):
    out = tmp_path / "out"
    writers.write_outputs(PREDICTIONS, out, {"model": "m", "organism": "other"})
    return out


def test_every_file_is_written_and_no_temporary_is_left(outdir):
    assert sorted(p.name for p in outdir.iterdir()) == sorted(writers.OUTPUT_FILES)


def test_prediction_results_has_signalp6_columns(outdir):
    lines = (outdir / "prediction_results.txt").read_text().splitlines()
    assert lines[0].startswith("# PEFT-SP ")
    assert lines[1].split("\t") == [
        "# ID", "Prediction", "OTHER", "SP(Sec/SPI)", "LIPO(Sec/SPII)", "TAT(Tat/SPI)",
        "TATLIPO(Tat/SPII)", "PILIN(Sec/SPIII)", "CS Position",
    ]  # fmt: skip
    rows = [line.split("\t") for line in lines[2:]]
    assert [r[0] for r in rows] == [p.id for p in PREDICTIONS]
    assert [r[1] for r in rows] == ["SP", "LIPO", "OTHER", "TAT", "PILIN", "TATLIPO"]
    assert rows[0][2:8] == ["0.010000", "0.950000", "0.010000", "0.010000", "0.010000", "0.010000"]
    assert rows[0][8] == "CS pos: 22-23. Pr: 0.8731"
    assert rows[2][8] == "" and rows[3][8] == ""
    assert all(len(r) == 9 for r in rows)


def test_gff3_parses_and_follows_the_conventions(outdir):
    text = (outdir / "output.gff3").read_text()
    assert text.splitlines()[0] == "##gff-version 3"
    rows = [line.split("\t") for line in text.splitlines()[1:]]
    assert all(len(r) == 9 for r in rows)
    assert all(1 <= int(r[3]) <= int(r[4]) for r in rows)
    features = {(r[0], r[2]) for r in rows}
    # NO_SP and a type without a cleavage site get no rows; the seqid is escaped.
    assert {seqid for seqid, _ in features} == {"P1", "weird%3Bid%3D1%25x%C3%A9", "P5", "P6"}
    assert ("weird%3Bid%3D1%25x%C3%A9", "lipoprotein_signal_peptide") in features
    assert ("P6", "lipoprotein_signal_peptide") in features
    assert ("P5", "signal_peptide") in features
    with open(outdir / "output.gff3") as handle:
        records = {rec.id: rec for rec in GFF.parse(handle)}
    sp = records["P1"].features[0]
    assert sp.type == "signal_peptide"
    assert sp.qualifiers["Ontology_term"] == ["SO:0000418"]
    assert sp.qualifiers["sp_type"] == ["Sec/SPI"]
    assert float(sp.qualifiers["score"][0]) == pytest.approx(0.95)
    children = [(c.type, int(c.location.start) + 1, int(c.location.end)) for c in sp.sub_features]
    assert children == [
        ("n_terminal_region", 1, 4),
        ("central_hydrophobic_region_of_signal_peptide", 5, 16),
        ("c_terminal_region", 17, 22),
    ]
    lipo = records["weird%3Bid%3D1%25x%C3%A9"].features[0]
    assert lipo.qualifiers["Ontology_term"] == ["SO:0100009"]
    assert lipo.qualifiers["Name"] == ["weird;id=1%x\u00e9"]  # unescaped by the parser


def test_processed_entries_hold_exactly_the_mature_sp_proteins(outdir):
    text = (outdir / "processed_entries.fasta").read_text()
    records = [r.split("\n", 1) for r in text.split(">")[1:]]
    assert [h.split()[0] for h, _ in records] == ["P1", "weird;id=1%x\u00e9", "P5"]
    by_id = {h.split()[0]: body.replace("\n", "") for h, body in records}
    for p in PREDICTIONS:
        if p.id in by_id:
            assert by_id[p.id] == p.sequence[p.cs :]


def test_json_round_trips_every_field(outdir):
    info, predictions = writers.read_predictions_json(outdir / "output.json")
    assert info == {"model": "m", "organism": "other"}
    assert predictions == PREDICTIONS
    data = json.loads((outdir / "output.json").read_text())
    assert data["predictions"][1]["type"] == "Sec/SPII"


def test_summary_counts_types(outdir):
    page = (outdir / "summary.html").read_text()
    assert "<td>Sec/SPII</td><td>1</td>" in page and "<td>Other</td><td>1</td>" in page
    mqc = json.loads((outdir / "peftsp_mqc.json").read_text())
    assert mqc["data"]["proteins"]["Sec/SPI"] == 1 and sum(mqc["data"]["proteins"].values()) == 6


def test_a_failure_while_writing_leaves_no_file(tmp_path):
    def broken():
        yield PREDICTIONS[0]
        raise InputError("bad record", "in.fa", "P2", 7)

    out = tmp_path / "out"
    with pytest.raises(InputError):
        writers.write_outputs(broken(), out, {})
    assert list(out.iterdir()) == []


def test_an_unwritable_directory_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="cannot write the outputs"):
        writers.write_outputs(PREDICTIONS, blocker / "out", {})
