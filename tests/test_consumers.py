"""The tools that read SignalP 6.0's files read ours.

Run for real where they install from a package registry: MultiQC (over a 3-sample `peftsp
pipeline` run), pandas (users' own scripts), BCBio-GFF and genometools' gff3validator with the
Sequence Ontology type check (`apt-get install genometools`; skipped when `gt` is missing).

funannotate's SignalP 6 parser (not in funannotate 1.8.5, the last release on PyPI),
predector-utils (not on PyPI) and InterProScan 6 (a Nextflow pipeline) cannot be installed
here, so the behaviour they rely on is tested as their documentation and issue threads state
it, on our files and on a SignalP 6.0 reference table of the same predictions written by this
test from SignalP 6.0's documented layout (fteufel/signalp-6.0#27, funannotate#650); the same
parse of both is the drop-in criterion. bench/signalp6_consumers.py runs the real parsers from
source checkouts.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from peftsp import signalp6
from peftsp.cli import main as peftsp_main
from peftsp.fasta import read_labelled_list

AA = "ACDEFGHIKLMNPQRSTVWY"
SIGNAL = "MKKTAIAIAVALAGFATVAQA"


@pytest.fixture(autouse=True)
def _reproducible_timestamp(monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")


def make_fasta(path: Path, count: int, seed: int) -> Path:
    rng = random.Random(seed)
    records = []
    for i in range(count):
        body = "".join(rng.choice(AA) for _ in range(rng.randint(30, 120)))
        records.append(f">{path.stem}_{i} protein {i}\n{SIGNAL if i % 2 == 0 else 'M'}{body}\n")
    path.write_text("".join(records))
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory, model_bundle, synthetic_file):
    """peftsp-signalp6 outputs for eukarya and other on one proteome, with predict's JSON. The
    proteome is random proteins plus the synthetic records the tiny model was fitted to, so that
    it calls some of each type whatever it makes of the random ones."""
    root = tmp_path_factory.mktemp("consumers")
    fasta = make_fasta(root / "proteome.faa", 16, seed=11)
    learned = read_labelled_list(synthetic_file)
    with fasta.open("a") as handle:
        handle.writelines(f">{r.accession} synthetic {r.sp_type}\n{r.sequence}\n" for r in learned)
    out = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SOURCE_DATE_EPOCH", "1700000000")
        for organism in ("euk", "other"):
            directory = root / organism
            argv = ["--fastafile", str(fasta), "--output_dir", str(directory)]
            argv += ["--organism", organism, "--peftsp_model", str(model_bundle)]
            argv += ["--format", "none", "--peftsp_device", "cpu", "--quiet"]
            assert signalp6.main(argv) == 0
            out[organism] = directory
    return out


# --- SignalP 6.0's documented layout, for the reference table --------------------------------


def reference_table(directory: Path, organism: str) -> str:
    """SignalP 6.0's prediction_results.txt of the predictions in `directory`/output.json,
    written from the documented layout: `# SignalP-6.0<TAB>Organism: ...<TAB>Timestamp: ...`,
    the column header, then per protein the ID, NO_SP/SP (eukarya) or OTHER/SP/LIPO/...
    (other), probabilities with 6 decimals and `CS pos: a-b. Pr: p` or nothing."""
    sequences = json.loads((directory / "output.json").read_text())["SEQUENCES"]
    eukarya = organism == "euk"
    names = {"Other": "NO_SP" if eukarya else "OTHER", "Signal Peptide (Sec/SPI)": "SP",
             "Lipoprotein signal peptide (Sec/SPII)": "LIPO",
             "Tat signal peptide (Tat/SPI)": "TAT",
             "Tat lipoprotein signal peptide (Tat/SPII)": "TATLIPO",
             "Pilin-like signal peptide (Sec/SPIII)": "PILIN"}  # fmt: skip
    columns = ["OTHER", "SP(Sec/SPI)"]
    if not eukarya:
        columns += ["LIPO(Sec/SPII)", "TAT(Tat/SPI)", "TATLIPO(Tat/SPII)", "PILIN(Sec/SPIII)"]
    lines = [
        f"# SignalP-6.0\tOrganism: {'Eukarya' if eukarya else 'Other'}\tTimestamp: 20240212172549",
        "\t".join(["# ID", "Prediction", *columns, "CS Position"]),
    ]
    for key, entry in sequences.items():
        cs = ""
        if entry["CS_pos"]:
            a, b = re.findall(r"\d+", entry["CS_pos"])
            cs = f"CS pos: {a}-{b}. Pr: {entry['CS_marginal']:.4f}"
        values = [f"{v:.6f}" for v in entry["Likelihood"]]
        lines.append("\t".join([key, names[entry["Prediction"]], *values, cs]))
    return "\n".join(lines) + "\n"


# --- funannotate, as documented --------------------------------------------------------------


def funannotate_secreted(text: str) -> dict[str, int]:
    """What funannotate takes from a SignalP table, as its issues and docs describe: the
    version from a first line starting `# SignalP-6`, then per data row (tab-separated, '#'
    lines skipped) the proteins predicted `SP` and their cleavage site, noted as
    SECRETED:SignalP(1-<cs>). A SignalP 6 table whose rows lack the columns fails (#650)."""
    lines = text.splitlines()
    if not lines[0].startswith("# SignalP-6"):
        raise ValueError("not a SignalP 6 table")
    secreted = {}
    for line in lines[1:]:
        if line.startswith("#"):
            continue
        col = line.rstrip("\n").split("\t")
        if col[1] == "SP":
            secreted[col[0].split()[0]] = int(col[-1].split("CS pos: ")[1].split("-")[0])
    return secreted


@pytest.mark.parametrize("organism", ["euk", "other"])
def test_funannotate_reads_our_table_as_signalp6s(runs, organism):
    ours = (runs[organism] / "prediction_results.txt").read_text()
    reference = reference_table(runs[organism], organism)
    assert funannotate_secreted(ours) == funannotate_secreted(reference)
    if organism == "euk":
        assert funannotate_secreted(ours)  # some proteins are secreted: the check compares


def test_funannotate_version_check_fails_on_the_old_first_line(runs):
    old = (
        "# PEFT-SP 0.1.0\n" + (runs["euk"] / "prediction_results.txt").read_text().split("\n", 1)[1]
    )
    with pytest.raises(ValueError):
        funannotate_secreted(old)


# --- predector-utils, as documented ----------------------------------------------------------


def predector_signalp6(text: str) -> list[tuple[str, str, float, float, int | None, float | None]]:
    """predector (which runs SignalP 6 with --organism euk) parses each non-'#' row after
    stripping its line end into 4 fields (no CS) or 5 (with CS): anything else is the error
    'Expected 4 or 5 but got N'. Returns (id, prediction, other, sp, cs, cs prob)."""
    rows = []
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        fields = line.strip().split("\t")
        if len(fields) not in (4, 5):
            raise ValueError(f"Expected 4 or 5 but got {len(fields)}")
        cs = pr = None
        if len(fields) == 5:
            match = re.fullmatch(r"CS pos: (\d+)-(\d+)\. Pr: ([0-9.]+)", fields[4])
            assert match, fields[4]
            cs, pr = int(match.group(1)), float(match.group(3))
        rows.append((fields[0], fields[1], float(fields[2]), float(fields[3]), cs, pr))
    return rows


def test_predector_reads_our_eukarya_table_as_signalp6s(runs):
    ours = (runs["euk"] / "prediction_results.txt").read_text()
    parsed = predector_signalp6(ours)
    assert parsed == predector_signalp6(reference_table(runs["euk"], "euk"))
    proteins = (runs["euk"].parent / "proteome.faa").read_text().count(">")
    assert {row[1] for row in parsed} == {"NO_SP", "SP"} and len(parsed) == proteins
    with pytest.raises(ValueError, match=r"Expected 4 or 5 but got [89]"):  # other layout
        predector_signalp6((runs["other"] / "prediction_results.txt").read_text())


# --- InterProScan 6, as documented ------------------------------------------------------------


IPS_SIGNATURES = {"Sec/SPI", "Sec/SPII", "Tat/SPI", "Tat/SPII", "Sec/SPIII"}


def interproscan_hits(directory: Path) -> dict[str, tuple[int, int, float, str]]:
    """InterProScan 6 runs SignalP 6.0 with --format none, then reads output.gff3 (skips '#'
    lines, asserts 9 tab-separated columns, seqid = the first word of column 1, start, end,
    score = column 6) and looks column 1 up in output.json ["SEQUENCES"][...]["Prediction"],
    whose parenthesised part names the signature (Sec/SPI, ...)."""
    sequences = json.loads((directory / "output.json").read_text())["SEQUENCES"]
    hits = {}
    for line in (directory / "output.gff3").read_text().splitlines():
        if line.startswith("#"):
            continue
        fields = line.split("\t")
        assert len(fields) == 9
        prediction = sequences[fields[0]]["Prediction"]
        sp_type = re.search(r"\(([a-zA-Z]+/[a-zA-Z]+)\)", prediction).group(1)
        assert sp_type in IPS_SIGNATURES
        hits[fields[0].split()[0]] = (int(fields[3]), int(fields[4]), float(fields[5]), sp_type)
    return hits


@pytest.mark.parametrize("organism", ["euk", "other"])
def test_interproscan_reads_our_gff3_and_json(runs, organism):
    hits = interproscan_hits(runs[organism])
    table = [
        line.split("\t")
        for line in (runs[organism] / "prediction_results.txt").read_text().splitlines()
        if not line.startswith("#")
    ]
    with_cs = {row[0]: row for row in table if row[-1]}
    assert set(hits) == set(with_cs) and hits
    for ident, (start, end, score, _) in hits.items():
        assert start == 1 and f"CS pos: {end}-{end + 1}." in with_cs[ident][-1]
        assert 0 <= score <= 1
    if organism == "euk":
        assert {h[3] for h in hits.values()} == {"Sec/SPI"}


# --- pandas: users' own scripts --------------------------------------------------------------


@pytest.mark.parametrize("organism", ["euk", "other"])
def test_pandas_reads_our_table_like_signalp6s(runs, organism):
    pd = pytest.importorskip("pandas")
    path = runs[organism] / "prediction_results.txt"
    reference = path.with_name("reference.txt")
    reference.write_text(reference_table(runs[organism], organism))
    ours = pd.read_csv(path, sep="\t", skiprows=1)  # the common idiom: skip line 1
    theirs = pd.read_csv(reference, sep="\t", skiprows=1)
    pd.testing.assert_frame_equal(ours, theirs)
    assert list(ours.columns)[:2] == ["# ID", "Prediction"]
    assert len(ours.columns) == (5 if organism == "euk" else 9)
    assert all(ours[c].dtype == float for c in ours.columns[2:-1])
    headerless = pd.read_csv(path, sep="\t", comment="#", header=None)  # the other idiom
    pd.testing.assert_frame_equal(
        headerless, pd.read_csv(reference, sep="\t", comment="#", header=None)
    )


# --- GFF3 parsers and validators ------------------------------------------------------------


@pytest.mark.skipif(shutil.which("gt") is None, reason="genometools (gt) is not installed")
@pytest.mark.parametrize("organism", ["euk", "other"])
def test_genometools_validates_both_gff3_files_with_the_sequence_ontology(runs, organism):
    for name in ("output.gff3", "region_output.gff3"):
        path = runs[organism] / name
        assert any(not line.startswith("#") for line in path.read_text().splitlines())
        result = subprocess.run(
            ["gt", "gff3validator", "-typecheck", "so", str(path)], capture_output=True, text=True
        )
        assert result.returncode == 0, (name, result.stderr)


@pytest.mark.parametrize("organism", ["euk", "other"])
def test_bcbio_reads_both_gff3_files(runs, organism):
    from BCBio import GFF

    for name in ("output.gff3", "region_output.gff3"):
        with open(runs[organism] / name) as handle:
            records = list(GFF.parse(handle))
        assert records and all(f.location.start >= 0 for r in records for f in r.features)


# --- MultiQC over a 3-sample pipeline run -----------------------------------------------------


def _multiqc(directory: Path, out: Path) -> dict:
    command = [sys.executable, "-m", "multiqc", str(directory), "-o", str(out), "--no-ai"]
    command += ["--cl-config", "no_version_check: true", "--force", "--quiet"]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return json.loads((out / "multiqc_data" / "multiqc_data.json").read_text())


def test_multiqc_over_a_three_sample_pipeline_run_reports_three_samples(
    tmp_path, model_bundle, monkeypatch
):
    pytest.importorskip("multiqc")
    monkeypatch.chdir(tmp_path)
    sheet = tmp_path / "samples.csv"
    rows = ["sample,fasta,organism"]
    for i, name in enumerate(("gut", "liver", "soil")):
        make_fasta(tmp_path / f"{name}.faa", 3, seed=i)
        rows.append(f"{name},{name}.faa,{'eukarya' if i == 0 else ''}")
    sheet.write_text("\n".join(rows) + "\n")
    argv = ["pipeline", "--input", str(sheet), "--outdir", str(tmp_path / "results")]
    argv += ["--model", str(model_bundle), "--shard-size", "2", "--device", "cpu", "--quiet"]
    assert peftsp_main(argv) == 0
    data = _multiqc(tmp_path / "results", tmp_path / "mqc")
    general = data["report_general_stats_data"]
    samples = {s for section in general.values() for s in section}
    assert samples == {"gut", "liver", "soil"}
    types = data["report_saved_raw_data"]["multiqc_peftsp_types"]
    assert set(types) == {"gut", "liver", "soil"}
    assert all(sum(v.values()) == 3 for v in types.values())
    # the check can fail: the same sample name in every run collapses them into one sample
    for name in ("gut", "liver", "soil"):
        for file in ("peftsp_mqc.json", "peftsp_general_stats_mqc.json"):
            path = tmp_path / "results" / name / file
            path.write_text(path.read_text().replace(f'"{name}"', '"proteins"'))
    collapsed = _multiqc(tmp_path / "results", tmp_path / "mqc_collapsed")
    assert set(collapsed["report_saved_raw_data"]["multiqc_peftsp_types"]) == {"proteins"}
