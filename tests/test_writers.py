"""Output files: SignalP 6.0's table in both organism layouts, valid GFF3 split like SignalP's
(checked by BCBio's parser and, when installed, genometools with the Sequence Ontology), mature
sequences, JSON round trip, rounding done once, summary page and MultiQC files, per-protein
plots, escaping, and no partial files on failure."""

import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from BCBio import GFF

from peftsp import grammar, plots, report, writers
from peftsp.decoding import Prediction
from peftsp.errors import InputError, PeftSPError
from peftsp.grammar import Region

RUN = {"model": "m", "organism": "other", "peftsp_version": "9.9.9"}
EPOCH = "1700000000"  # 2023-11-14 22:13:20 UTC
STAMP = "20231114221320"


@pytest.fixture(autouse=True)
def _fixed_time(monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)


def _prediction(ident, sp_type="SP", cs=22, length=60, regions=None, notes=(), probabilities=None):
    if probabilities is None:
        probabilities = [0.01] * 6
        probabilities[grammar.SP_TYPES.index(sp_type)] = 0.95
    has_cs = sp_type != "NO_SP" and cs is not None
    return Prediction(
        id=ident,
        header=f"{ident} some description",
        sequence=("MKKLLLLAVLAAALLASQA" + "EDKNQSTGPRHY" * 10)[:length],
        sp_type=sp_type,
        probabilities=tuple(probabilities),
        cs=cs if sp_type != "NO_SP" else None,
        cs_probability=0.8731 if has_cs else None,
        cs_marginal=0.9627 if has_cs else None,
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
FIRST_LINE = re.compile(
    r"^# SignalP-6\.0 format, PEFT-SP 9\.9\.9, model m, organism (\w+)"
    r"(, DEMO MODEL: [^\t]+)?\tOrganism: (Other|Eukarya)\tTimestamp: (\d{14})$"
)


@pytest.fixture
def outdir(tmp_path):
    out = tmp_path / "out"
    writers.write_outputs(PREDICTIONS, out, RUN)
    return out


def _lines(path):
    return path.read_text().splitlines()


def test_every_file_is_written_and_no_temporary_is_left(outdir):
    assert sorted(p.name for p in outdir.iterdir()) == sorted(writers.OUTPUT_FILES)


def test_other_mode_table_has_signalp6_first_line_and_nine_columns(outdir):
    lines = _lines(outdir / "prediction_results.txt")
    match = FIRST_LINE.match(lines[0])
    assert match and match.group(1) == "other" and match.group(2) is None
    assert match.group(3) == "Other" and match.group(4) == STAMP
    assert lines[1].split("\t") == [
        "# ID", "Prediction", "OTHER", "SP(Sec/SPI)", "LIPO(Sec/SPII)", "TAT(Tat/SPI)",
        "TATLIPO(Tat/SPII)", "PILIN(Sec/SPIII)", "CS Position",
    ]  # fmt: skip
    rows = [line.split("\t") for line in lines[2:]]
    assert all(len(r) == 9 for r in rows)
    assert [r[0] for r in rows] == [p.id for p in PREDICTIONS]
    assert [r[1] for r in rows] == ["SP", "LIPO", "OTHER", "TAT", "PILIN", "TATLIPO"]
    assert rows[0][2:8] == ["0.010000", "0.950000", "0.010000", "0.010000", "0.010000", "0.010000"]
    # SignalP 6.0's CS probability (the marginal), not PEFT-SP's exact-cleavage one.
    assert rows[0][8] == "CS pos: 22-23. Pr: 0.9627"
    assert rows[2][8] == "" and rows[3][8] == ""


def test_eukarya_table_has_five_columns_and_folds_sp_types_into_sec_spi(tmp_path):
    folded = _prediction("L1", "LIPO", cs=20, probabilities=[0.1, 0.3, 0.4, 0.1, 0.05, 0.05])
    predictions = [PREDICTIONS[0], PREDICTIONS[2], folded]
    writers.write_outputs(predictions, tmp_path / "e", {**RUN, "organism": "eukarya"})
    lines = _lines(tmp_path / "e" / "prediction_results.txt")
    match = FIRST_LINE.match(lines[0])
    assert match and match.group(1) == "eukarya" and match.group(3) == "Eukarya"
    assert lines[1].split("\t") == ["# ID", "Prediction", "OTHER", "SP(Sec/SPI)", "CS Position"]
    rows = [line.split("\t") for line in lines[2:]]
    assert rows == [
        ["P1", "SP", "0.010000", "0.990000", "CS pos: 22-23. Pr: 0.9627"],
        ["P3", "NO_SP", "0.950000", "0.050000", ""],
        ["L1", "SP", "0.100000", "0.900000", "CS pos: 20-21. Pr: 0.9627"],
    ]
    gff = _rows(tmp_path / "e" / "output.gff3")
    assert [(r[0], r[2], r[5]) for r in gff] == [
        ("P1", "signal_peptide", "0.990000"),
        ("L1", "signal_peptide", "0.900000"),
    ]
    assert all("Note=SP;" in r[8] for r in gff)


def test_demo_model_is_named_in_the_table_json_and_summary(tmp_path):
    writers.write_outputs(PREDICTIONS[:1], tmp_path / "d", {**RUN, "demo_model": True})
    first = _lines(tmp_path / "d" / "prediction_results.txt")[0]
    assert FIRST_LINE.match(first).group(2).startswith(", DEMO MODEL: the embedded demo model")
    data = json.loads((tmp_path / "d" / "output.json").read_text())
    assert data["model_notice"] == writers.DEMO_NOTICE
    assert "Demo model." in (tmp_path / "d" / "summary.html").read_text()
    writers.write_outputs(PREDICTIONS[:1], tmp_path / "r", {**RUN, "demo_model": False})
    assert json.loads((tmp_path / "r" / "output.json").read_text())["model_notice"] is None
    assert "Demo model." not in (tmp_path / "r" / "summary.html").read_text()


def test_timestamp_is_now_unless_source_date_epoch_is_set(tmp_path, monkeypatch):
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    before = writers.run_timestamp()
    writers.write_outputs(PREDICTIONS[:1], tmp_path / "now", RUN)
    stamp = FIRST_LINE.match(_lines(tmp_path / "now" / "prediction_results.txt")[0]).group(4)
    assert stamp >= before.strftime("%Y%m%d%H%M%S") and stamp != STAMP
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(PeftSPError, match="SOURCE_DATE_EPOCH"):
        writers.write_outputs(PREDICTIONS[:1], tmp_path / "bad", RUN)
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())


def _rows(path):
    return [line.split("\t") for line in _lines(path) if not line.startswith("#")]


def test_gff3_files_are_split_like_signalp6_and_follow_the_conventions(outdir):
    sp_text = (outdir / "output.gff3").read_text()
    region_text = (outdir / "region_output.gff3").read_text()
    for text in (sp_text, region_text):
        assert text.splitlines()[0] == "##gff-version 3"
    sp_rows, region_rows = _rows(outdir / "output.gff3"), _rows(outdir / "region_output.gff3")
    assert all(len(r) == 9 for r in sp_rows + region_rows)
    assert all(1 <= int(r[3]) <= int(r[4]) for r in sp_rows + region_rows)
    # One SP row per protein with a cleavage site; NO_SP and a type without a CS get none.
    weird = "weird%3Bid%3D1%25x%C3%A9"
    assert [(r[0], r[2]) for r in sp_rows] == [
        ("P1", "signal_peptide"),
        (weird, "lipoprotein_signal_peptide"),
        ("P5", "signal_peptide"),
        ("P6", "lipoprotein_signal_peptide"),
    ]
    assert {r[2] for r in region_rows} == {
        "n_terminal_region",
        "central_hydrophobic_region_of_signal_peptide",
        "c_terminal_region",
    }
    assert all("Parent=" not in r[8] for r in region_rows)  # SO: not part_of a lipoprotein SP
    # A ##sequence-region line before each protein, with its full length.
    for text, ids in ((sp_text, ["P1", weird, "P5", "P6"]), (region_text, ["P1", weird, "P6"])):
        regions = [line.split() for line in text.splitlines() if line.startswith("##sequence")]
        assert [(r[1], r[2], r[3]) for r in regions] == [(i, "1", "60") for i in ids]


def test_gff3_parses_with_bcbio(outdir):
    with open(outdir / "output.gff3") as handle:
        records = {rec.id: rec for rec in GFF.parse(handle)}
    sp = records["P1"].features[0]
    assert sp.type == "signal_peptide"
    assert sp.qualifiers["Ontology_term"] == ["SO:0000418"]
    assert sp.qualifiers["sp_type"] == ["Sec/SPI"]
    assert sp.qualifiers["cs_marginal"] == ["0.9627"]
    assert sp.qualifiers["cs_probability"] == ["0.8731"]
    assert float(sp.qualifiers["score"][0]) == pytest.approx(0.95)
    lipo = records["weird%3Bid%3D1%25x%C3%A9"].features[0]
    assert lipo.qualifiers["Ontology_term"] == ["SO:0100009"]
    assert lipo.qualifiers["Name"] == ["weird;id=1%x\u00e9"]  # unescaped by the parser
    with open(outdir / "region_output.gff3") as handle:
        regions = {rec.id: rec for rec in GFF.parse(handle)}
    spans = [
        (f.type, int(f.location.start) + 1, int(f.location.end)) for f in regions["P1"].features
    ]
    assert spans == [
        ("n_terminal_region", 1, 4),
        ("central_hydrophobic_region_of_signal_peptide", 5, 16),
        ("c_terminal_region", 17, 22),
    ]


def test_processed_entries_hold_exactly_the_mature_sp_proteins(outdir):
    text = (outdir / "processed_entries.fasta").read_text()
    records = [r.split("\n", 1) for r in text.split(">")[1:]]
    assert [h.split()[0] for h, _ in records] == ["P1", "weird;id=1%x\u00e9", "P5"]
    by_id = {h.split()[0]: body.replace("\n", "") for h, body in records}
    for p in PREDICTIONS:
        if p.id in by_id:
            assert by_id[p.id] == p.sequence[p.cs :]


def test_json_round_trips_every_field_with_both_cs_probabilities(outdir):
    info, predictions = writers.read_predictions_json(outdir / "output.json")
    assert info == RUN
    assert predictions == PREDICTIONS
    data = json.loads((outdir / "output.json").read_text())
    assert data["predictions"][1]["type"] == "Sec/SPII"
    assert data["predictions"][0]["cs_marginal"] == 0.9627
    assert data["predictions"][0]["cs_probability"] == 0.8731
    assert set(data["definitions"]) == {"cs_marginal", "cs_probability"}
    assert data["created"] == "2023-11-14T22:13:20Z" and data["sample"] == "out"


def test_probabilities_are_rounded_once_so_merged_files_equal_direct_ones(tmp_path):
    rng = np.random.default_rng(0)
    raw = []
    for i in range(200):
        probabilities = rng.dirichlet(np.ones(6) * 0.3)
        sp_type = grammar.SP_TYPES[int(probabilities.argmax())]
        p = _prediction(f"r{i}", sp_type, probabilities=probabilities.astype(np.float32))
        # values that sit near a rounding boundary of the printed digits
        p.cs_marginal = float(rng.integers(0, 10**4)) / 10**4 + 0.00005 * rng.choice([-1, 1])
        p.cs_probability = float(rng.random())
        raw.append(p)
    for organism in ("other", "eukarya"):
        run = {**RUN, "organism": organism}
        writers.write_outputs(raw, tmp_path / f"direct_{organism}", run)
        _, read_back = writers.read_predictions_json(
            tmp_path / f"direct_{organism}" / "output.json"
        )
        writers.write_outputs(
            read_back, tmp_path / f"direct_{organism}_again", run, sample="direct_" + organism
        )
        for name in writers.OUTPUT_FILES:
            a = (tmp_path / f"direct_{organism}" / name).read_bytes()
            b = (tmp_path / f"direct_{organism}_again" / name).read_bytes()
            assert a == b, (organism, name)


def test_summary_page_has_sample_counts_plots_and_links(outdir):
    page = (outdir / "summary.html").read_text()
    assert "<h1>PEFT-SP summary: out</h1>" in page
    assert "Sec/SPII</td><td>1</td>" in page and "Other</td><td>1</td>" in page
    assert page.count("<svg ") == 5  # types, SP lengths, type probability, two CS probabilities
    for name in ("prediction_results.txt", "output.gff3", "region_output.gff3", "output.json"):
        assert f'<a href="{name}">' in page
    assert "2023-11-14T22:13:20Z" in page
    for svg in re.findall(r"<svg .*?</svg>", page, flags=re.S):
        ET.fromstring(svg)  # well-formed XML


def test_multiqc_files_name_the_sample(tmp_path):
    writers.write_outputs(PREDICTIONS, tmp_path / "x", RUN, sample="liver_2")
    mqc = json.loads((tmp_path / "x" / "peftsp_mqc.json").read_text())
    assert mqc["plot_type"] == "bargraph"
    assert list(mqc["data"]) == ["liver_2"]
    assert mqc["data"]["liver_2"]["Sec/SPI"] == 1 and sum(mqc["data"]["liver_2"].values()) == 6
    stats = json.loads((tmp_path / "x" / "peftsp_general_stats_mqc.json").read_text())
    assert stats["plot_type"] == "generalstats"
    assert stats["data"] == {
        "liver_2": {"peftsp_proteins": 6, "peftsp_with_sp": 5, "peftsp_sp_percent": 83.33}
    }
    # the default sample: run information's, else the output directory's name
    writers.write_outputs(PREDICTIONS, tmp_path / "y", {**RUN, "sample": "from_run"})
    assert list(json.loads((tmp_path / "y" / "peftsp_mqc.json").read_text())["data"]) == [
        "from_run"
    ]


def test_a_failure_while_writing_leaves_no_file(tmp_path):
    def broken():
        yield _with_marginals(PREDICTIONS[0])
        raise InputError("bad record", "in.fa", "P2", 7)

    out = tmp_path / "out"
    with pytest.raises(InputError):
        writers.write_outputs(broken(), out, RUN, plots=plots.PlotWriter(("txt",)))
    assert list(out.iterdir()) == []


def test_an_unwritable_directory_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="cannot write the outputs"):
        writers.write_outputs(PREDICTIONS, blocker / "out", RUN)


# --- genometools: the Sequence Ontology type check -----------------------------------------


@pytest.mark.skipif(shutil.which("gt") is None, reason="genometools (gt) is not installed")
def test_both_gff3_files_pass_genometools_with_the_sequence_ontology(outdir, tmp_path):
    for name in ("output.gff3", "region_output.gff3"):
        result = subprocess.run(
            ["gt", "gff3validator", "-typecheck", "so", str(outdir / name)],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, (name, result.stderr)
    # the check can fail: regions as children of a lipoprotein SP are refused
    bad = tmp_path / "bad.gff3"
    bad.write_text(
        "##gff-version 3\nP\tx\tlipoprotein_signal_peptide\t1\t20\t.\t.\t.\tID=s\n"
        "P\tx\tn_terminal_region\t1\t3\t.\t.\t.\tParent=s\n"
    )
    result = subprocess.run(
        ["gt", "gff3validator", "-typecheck", "so", str(bad)], capture_output=True
    )
    assert result.returncode != 0


# --- per-protein plots ---------------------------------------------------------------------


def _with_marginals(p: Prediction, seed: int = 0) -> Prediction:
    """p with marginals concentrated on a Sec/SPI path n(1-4) h(5-16) c(17-22), then other."""
    rng = np.random.default_rng(seed)
    length = min(p.length, 70)
    m = rng.random((length, grammar.NUM_STATES)) * 0.001
    for i in range(length):
        name = "N" if i < 4 else "H" if i < 16 else "C" if i < 22 else "O"
        m[i, grammar.state("SP", name)] += 1.0
    return Prediction(
        **{**p.__dict__, "marginals": (m / m.sum(1, keepdims=True)).astype(np.float32)}
    )


def test_plot_curves_follow_the_marginals():
    p = _with_marginals(PREDICTIONS[0])
    values = plots.curves(p.marginals)
    assert values["n"][:4].min() > 0.9 and values["h"][4:16].min() > 0.9
    assert values["c"][16:22].min() > 0.9 and values["other"][22:].min() > 0.9
    assert int(values["cs"].argmax()) == 21  # the last SP residue is 22 (1-based)
    assert plots.shown_types(values) == ["SP"]


def test_txt_plots_are_named_like_signalp6_and_unique(tmp_path):
    writer = plots.PlotWriter(("txt",))
    a = writer.write(_with_marginals(PREDICTIONS[0]), tmp_path)
    b = writer.write(_with_marginals(_prediction("P:1")), tmp_path)
    c = writer.write(_with_marginals(_prediction("P.1")), tmp_path)
    assert (a["txt"], b["txt"], c["txt"]) == (
        "output_P1_plot.txt",
        "output_P_1_plot.txt",
        "output_P_1_plot_2.txt",
    )
    rows = (tmp_path / "output_P1_plot.txt").read_text().splitlines()
    assert rows[2].split("\t")[:8] == [
        "pos", "aa", "n-region", "h-region", "c-region", "Sec/SPIII leader", "cleavage site",
        "Other (no SP)",
    ]  # fmt: skip
    assert len(rows) == 3 + 60 and rows[3].startswith("1\tM\t")


@pytest.mark.parametrize("fmt", ["png", "svg", "eps"])
def test_image_plots_are_written_and_reproducible(tmp_path, fmt):
    pytest.importorskip("matplotlib")
    p = _with_marginals(PREDICTIONS[0])
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        plots.PlotWriter((fmt,)).write(p, tmp_path / name)
    first = (tmp_path / "a" / f"output_P1_plot.{fmt}").read_bytes()
    assert first == (tmp_path / "b" / f"output_P1_plot.{fmt}").read_bytes()
    magic = {"png": b"\x89PNG", "svg": b"<?xml", "eps": b"%!PS-Adobe"}[fmt]
    assert first.startswith(magic)


def test_plots_in_the_writer_go_to_plots_dir(tmp_path):
    predictions = [_with_marginals(p, i) for i, p in enumerate(PREDICTIONS)]
    writers.write_outputs(predictions, tmp_path / "o", RUN, plots=plots.PlotWriter(("svg",)))
    names = sorted(p.name for p in (tmp_path / "o" / "plots").iterdir())
    assert len(names) == len(PREDICTIONS) and names[0] == "output_P1_plot.svg"
    assert '<a href="plots/">' in (tmp_path / "o" / "summary.html").read_text()


def test_image_plots_without_matplotlib_are_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails as if not installed
    with pytest.raises(PeftSPError, match=r"pip install 'peftsp\[plot\]'"):
        plots.PlotWriter(("png",))
    plots.PlotWriter(("txt",))  # no matplotlib needed


def test_svg_bars_scale_and_stack():
    svg = report.svg_bars(["a", "b"], {"SP": [2, 0], "LIPO": [2, 4]}, title="t")
    root = ET.fromstring(svg)
    heights = [float(r.get("height")) for r in root.iter("{http://www.w3.org/2000/svg}rect")]
    assert heights == pytest.approx([88.0, 88.0, 176.0])  # plot height 176, peak 4


def test_long_ids_get_plot_names_within_file_system_limits_and_stay_unique(tmp_path):
    writer = plots.PlotWriter(("txt",))
    long_a, long_b = "L" * 300, "L" * 300 + "x"
    a = writer.write(_with_marginals(_prediction(long_a)), tmp_path)["txt"]
    b = writer.write(_with_marginals(_prediction(long_b)), tmp_path)["txt"]
    assert a != b and len(a.encode()) <= 255 and len(b.encode()) <= 255
    assert a.startswith("output_" + "L" * plots.MAX_ID_IN_NAME + "_")
    assert (tmp_path / a).is_file() and (tmp_path / b).is_file()
    # the same ID gives the same name in every run
    assert plots.PlotWriter(("txt",)).stem(long_a) + ".txt" == a


def test_a_source_path_that_is_not_utf8_is_written_escaped(tmp_path):
    source = os.fsdecode(b"/data/bad\xffname.fa")  # a file name of another encoding
    out = tmp_path / "out"
    writers.write_outputs(PREDICTIONS, out, RUN, source=source)
    data = json.loads((out / "output.json").read_text(encoding="utf-8"))
    assert data["source"] == "/data/bad\\xffname.fa"
    assert "bad\\xffname.fa" in (out / "summary.html").read_text(encoding="utf-8")


def test_a_target_that_cannot_be_replaced_keeps_the_previous_outputs(tmp_path):
    out = tmp_path / "out"
    writers.write_outputs(PREDICTIONS, out, RUN)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    (out / "output.json").unlink()
    (out / "output.json" / "x").mkdir(parents=True)  # a directory where a file goes
    del before["output.json"]
    with pytest.raises(InputError, match="is a directory") as err:
        writers.write_outputs(PREDICTIONS[:1], out, RUN)
    assert err.value.path == str(out / "output.json")
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert after == before  # nothing replaced, no temporary file left


def test_a_run_without_plots_removes_an_earlier_runs_plots(tmp_path):
    out = tmp_path / "out"
    predictions = [_with_marginals(p) for p in PREDICTIONS]
    writers.write_outputs(predictions, out, RUN, plots=plots.PlotWriter(("txt",)))
    assert any((out / "plots").iterdir())
    writers.write_outputs(PREDICTIONS, out, RUN)  # as `predict --overwrite` without --plot
    assert not (out / "plots").exists()


def test_a_failure_while_starting_the_files_leaves_no_file(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(TypeError):  # run information that JSON cannot hold
        writers.write_outputs(PREDICTIONS, out, {**RUN, "bad": {1, 2}})
    assert list(out.iterdir()) == []
