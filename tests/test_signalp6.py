"""`peftsp-signalp6`: SignalP 6.0's command line and files, the same predictions as `peftsp
predict`, and bad option values refused before any output."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from peftsp import signalp6, writers
from peftsp.cli import main as peftsp_main

AA = "ACDEFGHIKLMNPQRSTVWY"


@pytest.fixture(autouse=True)
def _reproducible_timestamp(monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")


def proteome(path: Path, n: int = 9) -> Path:
    import random

    rng = random.Random(5)
    records = []
    for i in range(n):
        head = "MKKLLLLAVLAAALLASQA" if i % 2 == 0 else "M"
        body = "".join(rng.choice(AA) for _ in range(rng.randint(20, 120)))
        records.append(f">sp|Q{i}|PROT{i} protein {i} OS=Test\n{head}{body}\n")
    path.write_text("".join(records))
    return path


def signalp(fasta: Path, out: Path, model: Path, *extra: str) -> int:
    argv = ["--fastafile", str(fasta), "--output_dir", str(out), "--peftsp_model", str(model)]
    return signalp6.main([*argv, "--peftsp_device", "cpu", "--quiet", *extra])


def test_same_predictions_as_peftsp_predict_for_eukarya(tmp_path, model_bundle):
    fasta = proteome(tmp_path / "in.faa")
    sp6, direct = tmp_path / "sp6", tmp_path / "direct"
    argv = ("--organism", "euk", "--format", "txt", "--mode", "fast")
    assert signalp(fasta, sp6, model_bundle, *argv) == 0
    predict = ["predict", "--fasta", str(fasta), "--outdir", str(direct), "--model"]
    assert peftsp_main([*predict, str(model_bundle), "--organism", "eukarya", "--quiet"]) == 0
    for name in ("prediction_results.txt", "output.gff3", "region_output.gff3",
                 "processed_entries.fasta"):  # fmt: skip
        assert (sp6 / name).read_bytes() == (direct / name).read_bytes(), name
    table = (sp6 / "prediction_results.txt").read_text().splitlines()
    assert table[0].startswith("# SignalP-6.0") and "\tOrganism: Eukarya\t" in table[0]
    assert table[1] == "# ID\tPrediction\tOTHER\tSP(Sec/SPI)\tCS Position"
    # output.json in SignalP 6.0's layout, agreeing with PEFT-SP's own
    theirs = json.loads((sp6 / "output.json").read_text())
    ours = json.loads((direct / "output.json").read_text())["predictions"]
    assert list(theirs["SEQUENCES"]) == [p["id"] for p in ours]
    for p in ours:
        entry = theirs["SEQUENCES"][p["id"]]
        assert entry["Name"] == p["header"]
        expected = "Other" if p["prediction"] == "NO_SP" else "Signal Peptide (Sec/SPI)"
        assert entry["Prediction"] == expected
        assert entry["Protein_types"] == ["Other", "Signal Peptide (Sec/SPI)"]
        assert len(entry["Likelihood"]) == 2
        assert entry["Likelihood"][0] == p["probabilities"]["NO_SP"]
        if p["cs"] is not None and p["prediction"] != "NO_SP":
            assert entry["CS_pos"] == f"Cleavage site between pos. {p['cs']} and {p['cs'] + 1}"
            assert entry["CS_marginal"] == p["cs_marginal"]
        else:
            assert entry["CS_pos"] == ""
        assert entry["Plot_txt"] == f"output_sp_Q{ours.index(p)}_PROT{ours.index(p)}_plot.txt"
    # exactly SignalP 6.0's files: the tables and one txt plot per protein
    plots = sorted(f"output_sp_Q{i}_PROT{i}_plot.txt" for i in range(9))
    assert sorted(p.name for p in sp6.iterdir()) == sorted([*writers.SIGNALP6_FILES, *plots])


def test_other_mode_has_nine_columns_and_all_types(tmp_path, model_bundle):
    fasta = proteome(tmp_path / "in.faa")
    assert signalp(fasta, tmp_path / "o", model_bundle, "--format", "none") == 0
    table = (tmp_path / "o" / "prediction_results.txt").read_text().splitlines()
    assert "\tOrganism: Other\t" in table[0]
    assert all(len(line.split("\t")) == 9 for line in table[1:])
    entry = next(
        iter(json.loads((tmp_path / "o" / "output.json").read_text())["SEQUENCES"].values())
    )
    assert len(entry["Likelihood"]) == 6 and entry["Plot_txt"] == ""
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == sorted(writers.SIGNALP6_FILES)


def test_signalp5_style_aliases_and_compat_options(tmp_path, model_bundle, caplog):
    fasta = proteome(tmp_path / "in.faa", 3)
    argv = ["-fasta", str(fasta), "-od", str(tmp_path / "o"), "-org", "euk", "-format", "none"]
    argv += ["-batch", "2", "--write_procs", "4", "--torch_num_threads", "1", "--skip_resolve"]
    argv += ["--mode", "slow-sequential", "--model_dir", str(tmp_path), "--peftsp_device", "cpu"]
    assert signalp6.main([*argv, "--peftsp_model", str(model_bundle)]) == 0
    assert "is not a PEFT-SP model bundle" in caplog.text
    assert "\tOrganism: Eukarya\t" in (tmp_path / "o" / "prediction_results.txt").read_text()
    # --model_dir that is a PEFT-SP bundle is used as the model
    argv = ["-ff", str(fasta), "-od", str(tmp_path / "m"), "--model_dir", str(model_bundle)]
    assert signalp6.main([*argv, "--format", "none", "--quiet", "--peftsp_device", "cpu"]) == 0
    meta = json.loads((model_bundle / "model.json").read_text())
    name = meta.get("name", model_bundle.name)
    first = (tmp_path / "m" / "prediction_results.txt").read_text().splitlines()[0]
    assert f", model {name}, " in first


def test_an_existing_output_dir_is_written_into_with_a_warning(tmp_path, model_bundle, caplog):
    fasta = proteome(tmp_path / "in.faa", 2)
    out = tmp_path / "out"
    out.mkdir()
    (out / "prediction_results.txt").write_text("old")
    (out / "keep.txt").write_text("mine")
    assert signalp(fasta, out, model_bundle, "--format", "none") == 0
    assert "is not empty" in caplog.text
    assert (out / "prediction_results.txt").read_text().startswith("# SignalP-6.0")
    assert (out / "keep.txt").read_text() == "mine"


BAD_OPTIONS = {
    "batch size 0": (("--bsize", "0"), "--bsize must be at least 1"),
    "batch size text": (("--bsize", "ten"), "--bsize must be a whole number"),
    "write procs 0": (("--write_procs", "0"), "--write_procs must be at least 1"),
    "threads negative": (("--torch_num_threads", "-1"), "--torch_num_threads must be at least 1"),
    "organism": (("--organism", "plant"), "invalid choice: 'plant'"),
    "format": (("--format", "pdf"), "invalid choice: 'pdf'"),
    "mode": (("--mode", "turbo"), "invalid choice: 'turbo'"),
    "device": (("--peftsp_device", "tpu"), "invalid choice: 'tpu'"),
}


@pytest.mark.parametrize("case", sorted(BAD_OPTIONS))
def test_bad_option_values_are_clear_errors_before_any_output(case, tmp_path, model_bundle, capsys):
    extra, message = BAD_OPTIONS[case]
    fasta = proteome(tmp_path / "in.faa", 2)
    with pytest.raises(SystemExit) as exit:
        signalp(fasta, tmp_path / "out", model_bundle, *extra)
    assert exit.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_missing_required_options_are_usage_errors(capsys):
    with pytest.raises(SystemExit) as exit:
        signalp6.main(["--output_dir", "x"])
    assert exit.value.code == 2 and "--fastafile" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b">c1\nACGTTGCAAGGCTTACGATCGATCGGCTAACGATTTAGC\n", "nucleotide"),
        (b"", "no FASTA records"),
        (b">a\nMKV\n>a\nMKV\n", "duplicate ID"),
    ],
)
def test_bad_fasta_is_an_error_naming_the_file_with_no_output(
    content, message, tmp_path, model_bundle, capsys
):
    fasta = tmp_path / "in.faa"
    fasta.write_bytes(content)
    assert signalp(fasta, tmp_path / "out", model_bundle) == 1
    err = capsys.readouterr().err
    assert err.startswith("peftsp-signalp6: error: ") and str(fasta) in err and message in err
    assert not (tmp_path / "out").exists()


def test_image_formats_without_matplotlib_fail_before_any_output(
    tmp_path, model_bundle, capsys, monkeypatch
):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    fasta = proteome(tmp_path / "in.faa", 2)
    for fmt in ("png", "eps", "all"):
        assert signalp(fasta, tmp_path / "out", model_bundle, "--format", fmt) == 1
        assert "pip install 'peftsp[plot]'" in capsys.readouterr().err
        assert not (tmp_path / "out").exists()


def test_png_format_writes_txt_and_png_per_protein(tmp_path, model_bundle):
    pytest.importorskip("matplotlib")
    fasta = proteome(tmp_path / "in.faa", 2)
    assert signalp(fasta, tmp_path / "o", model_bundle, "--format", "png") == 0
    names = {p.name for p in (tmp_path / "o").iterdir()} - set(writers.SIGNALP6_FILES)
    assert names == {
        f"output_sp_Q{i}_PROT{i}_plot.{ext}" for i in range(2) for ext in ("txt", "png")
    }
    entry = json.loads((tmp_path / "o" / "output.json").read_text())["SEQUENCES"]["sp|Q0|PROT0"]
    assert entry["Plot_png"] == "output_sp_Q0_PROT0_plot.png"


def test_linked_as_signalp6_on_the_path(tmp_path, model_bundle):
    """A pipeline that runs `signalp6` finds this command when it is linked under that name."""
    script = Path(sys.executable).with_name("peftsp-signalp6")
    if not script.exists():
        pytest.skip("the package is not installed with its console scripts")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "signalp6").symlink_to(script)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    version = subprocess.run(["signalp6", "--version"], capture_output=True, text=True, env=env)
    assert version.returncode == 0 and version.stdout.startswith("SignalP 6.0 format, PEFT-SP")
    assert version.stdout.split()[-1].startswith("6.0")  # `awk '{print $NF}'` gives a version
    fasta = proteome(tmp_path / "in.faa", 2)
    argv = ["signalp6", "--fastafile", str(fasta), "--output_dir", str(tmp_path / "o")]
    argv += ["--organism", "euk", "--format", "none", "--peftsp_model", str(model_bundle)]
    result = subprocess.run(argv, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "o" / "prediction_results.txt").is_file()


def test_an_output_dir_that_is_a_file_is_refused(tmp_path, model_bundle, capsys):
    fasta = proteome(tmp_path / "in.faa", 2)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert signalp(fasta, blocker, model_bundle) == 1
    assert "is not a directory" in capsys.readouterr().err and blocker.read_text() == "x"
