"""`peftsp predict` and `peftsp pipeline` on hostile input, corrupt bundles and unusable
devices; output order, determinism and the no-torch rule."""

import gzip
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from peftsp import runtime, writers
from peftsp.bundle import DEFAULT_MODEL
from peftsp.cli import main

AA = "ACDEFGHIKLMNPQRSTVWY"
OUTPUTS = set(writers.OUTPUT_FILES)


@pytest.fixture(autouse=True)
def _reproducible_timestamp(monkeypatch):
    """Outputs carry the run's time; a fixed SOURCE_DATE_EPOCH makes runs comparable."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")


def proteome(n: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    records = []
    for i in range(n):
        head = "MKKLLLLAVLAAALLASQA" if i % 3 == 0 else "M"
        body = "".join(rng.choice(AA) for _ in range(rng.randint(5, 150)))
        records.append(f">prot{i} protein {i}\n{head}{body}\n")
    return "".join(records)


def tree(path: Path, source: Path | None = None) -> dict[str, bytes]:
    """Every file of a directory; with `source`, that input path replaced by a placeholder."""
    files = {p.name: p.read_bytes() for p in sorted(path.iterdir())}
    if source is not None:
        files = {k: v.replace(str(source).encode(), b"<input>") for k, v in files.items()}
    return files


def run(command, fasta: Path, out: Path, model: Path, *extra: str) -> int:
    argv = [command, "--fasta", str(fasta), "--outdir", str(out), "--model", str(model)]
    return main([*argv, "--device", "cpu", "--quiet", *extra])


def ids_of(out: Path) -> list[str]:
    return [p["id"] for p in json.loads((out / "output.json").read_text())["predictions"]]


REJECTED = {
    "empty file": (b"", "no FASTA records", None),
    "only blank lines": (b"\n\n  \n", "no FASTA records", None),
    "plain text": (b"Dear colleague,\nplease find\n", "line 1", None),
    "binary": (b"\x00\x01\x02\xff\xfe>", "line 1", None),
    "gff given by mistake": (b"##gff-version 3\nchr1\t.\tgene\t1\t9\t.\t+\t.\tID=g\n", "GFF", None),
    "header without sequence": (b">a\nMKV\n>b\n>c\nMKV\n", "line 3", "b"),
    "header at end of file": (b">a\nMKV\n>b\n", "line 3", "b"),
    "unknown character": (b">a\nMKV\n>b\nMK@V\n", "line 4", "b"),
    "duplicate id": (b">a x\nMKV\n>a y\nMKV\n", "line 3", "a"),
    "empty id": (b">a\nMKV\n> desc\nMKV\n", "line 3", None),
    "only gaps": (b">a\n---\n", "line 1", "a"),
    "nucleotide fasta": (
        b">chr1 genome\nACGTTGCAAGGCTTACGATCGATCGGCTA\nACGATTTAGC\n>chr2\nACGTNNNNACGTACGTTTGACA\n",
        "nucleotide",
        "chr1",
    ),
}


@pytest.mark.parametrize("command", ("predict", "pipeline"))
@pytest.mark.parametrize("case", sorted(REJECTED))
def test_bad_input_is_an_error_naming_file_line_and_record(
    command, case, tmp_path, model_bundle, capsys
):
    content, where, record = REJECTED[case]
    fasta = tmp_path / "in.faa"
    fasta.write_bytes(content)
    out = tmp_path / "out"
    assert run(command, fasta, out, model_bundle) == 1
    err = capsys.readouterr().err
    assert "peftsp: error:" in err and str(fasta) in err and where in err, err
    if record:
        assert f"record {record!r}" in err
    assert not out.exists()


@pytest.mark.parametrize("command", ("predict", "pipeline"))
def test_truncated_gzip_missing_file_and_other_compression(command, tmp_path, model_bundle, capsys):
    data = gzip.compress(proteome(30).encode())
    cases = {
        "truncated.faa.gz": (data[: len(data) // 2], "gzip"),
        "archive.faa.bz2": (b"BZh91AY&SY" + b"\x00" * 20, "bzip2"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        assert run(command, tmp_path / name, tmp_path / "out", model_bundle) == 1
        err = capsys.readouterr().err
        assert name in err and message in err, err
        assert not (tmp_path / "out").exists()
    assert run(command, tmp_path / "missing.faa", tmp_path / "out", model_bundle) == 1
    assert "missing.faa" in capsys.readouterr().err


NORMALISED = {
    "spaces and digits": (">a\n1 MKKLL LLAVL\n11 AAALLASQAE DK\n", "MKKLLLLAVLAAALLASQAEDK"),
    "crlf": (">a\r\nMKKLL\r\nLLAVL\r\n", "MKKLLLLAVL"),
    "lower case": (">a\nmkkllllavl\n", "MKKLLLLAVL"),
    "terminal stop": (">a\nMKKLLLLAVL*\n", "MKKLLLLAVL"),
    "internal stop": (">a\nMKKL*LLAVL\n", "MKKLXLLAVL"),
    "ambiguity codes": (">a\nMXBZJUOKLL\n", "MXBZXUOKLL"),
    "gaps": (">a\nMKK-LL.LLAVL\n", "MKKLLLLAVL"),
    "one residue": (">a\nM\n", "M"),
}


@pytest.mark.parametrize("command", ("predict", "pipeline"))
@pytest.mark.parametrize("case", sorted(NORMALISED))
def test_sequences_are_normalised_with_a_warning_never_dropped(
    command, case, tmp_path, model_bundle, caplog
):
    content, expected = NORMALISED[case]
    fasta = tmp_path / "in.faa"
    fasta.write_bytes(content.encode() + b">z\nMDEKNQSTGPRHY\n")
    out = tmp_path / "out"
    assert run(command, fasta, out, model_bundle) == 0
    predictions = json.loads((out / "output.json").read_text())["predictions"]
    assert [p["id"] for p in predictions] == ["a", "z"]
    assert predictions[0]["sequence"] == expected
    if case in ("crlf", "one residue"):  # line endings are not a change to the sequence
        assert predictions[0]["notes"] == []
    else:
        assert predictions[0]["notes"] and "normalised" in caplog.text


@pytest.mark.parametrize("command", ("predict", "pipeline"))
def test_a_batch_of_only_one_residue_proteins_is_predicted(command, tmp_path):
    # The embedded model decodes with the sequence rules, whose motif search once failed on a
    # batch whose longest protein has one residue.
    assert json.loads((DEFAULT_MODEL / "model.json").read_text())["sequence_rules"]
    fasta = tmp_path / "in.faa"
    fasta.write_text(">a\nM\n>b\nR\n>c\nC\n")
    out = tmp_path / "out"
    assert run(command, fasta, out, DEFAULT_MODEL) == 0
    predictions = json.loads((out / "output.json").read_text())["predictions"]
    assert [(p["id"], p["prediction"]) for p in predictions] == [
        ("a", "NO_SP"),
        ("b", "NO_SP"),
        ("c", "NO_SP"),
    ]


def test_awkward_ids_long_and_short_proteins_and_gzip(tmp_path, model_bundle):
    long = "MKKLLLLAVLAAALLASQA" + "EDKNQSTGPRHY" * 8333  # ~100,000 residues
    text = (
        ">id with spaces\tand a tab\nMKV\n>semi;colon=eq%pct\nMKKLLLLAVLAAALLASQAEDK\n"
        f">caf\u00e9\u4e2d\nMKKLL\n>long\n{long}\n>x\nM\n"
    )
    plain = tmp_path / "in.faa"
    plain.write_text(text, encoding="utf-8")
    zipped = tmp_path / "in.faa.gz"
    zipped.write_bytes(gzip.compress(text.encode()))
    assert run("predict", plain, tmp_path / "a", model_bundle) == 0
    assert run("predict", zipped, tmp_path / "b", model_bundle) == 0
    # the same files, but for the input file named in output.json and summary.html
    assert tree(tmp_path / "a", source=plain) == tree(tmp_path / "b", source=zipped)
    assert ids_of(tmp_path / "a") == ["id", "semi;colon=eq%pct", "caf\u00e9\u4e2d", "long", "x"]
    predictions = json.loads((tmp_path / "a" / "output.json").read_text())["predictions"]
    assert predictions[3]["length"] == len(long)
    results = (tmp_path / "a" / "prediction_results.txt").read_text().splitlines()[2:]
    assert [line.split("\t")[0] for line in results] == ids_of(tmp_path / "a")


def test_output_order_is_input_order_and_eukarya_allows_only_sec_spi(tmp_path, model_bundle):
    fasta = tmp_path / "in.faa"
    fasta.write_text(proteome(40))
    assert run("predict", fasta, tmp_path / "o", model_bundle, "--batch-size", "4") == 0
    assert ids_of(tmp_path / "o") == [f"prot{i}" for i in range(40)]
    assert run("predict", fasta, tmp_path / "e", model_bundle, "--organism", "eukarya") == 0
    predictions = json.loads((tmp_path / "e" / "output.json").read_text())["predictions"]
    assert {p["prediction"] for p in predictions} <= {"NO_SP", "SP"}
    assert all(p["probabilities"]["LIPO"] == 0 for p in predictions)


def test_outputs_do_not_depend_on_batch_size_or_threads(tmp_path, model_bundle):
    fasta = tmp_path / "in.faa"
    fasta.write_text(proteome(50, seed=2))
    assert run("predict", fasta, tmp_path / "ref", model_bundle) == 0
    reference = tree(tmp_path / "ref")
    assert set(reference) == OUTPUTS
    for name, extra in {
        "again": (),
        "batch1": ("--batch-size", "1"),
        "batch7": ("--batch-size", "7"),
        "threads1": ("--threads", "1"),
        "threads2": ("--threads", "2", "--batch-size", "13"),
    }.items():
        assert run("predict", fasta, tmp_path / name, model_bundle, *extra) == 0
        assert tree(tmp_path / name) == reference, name


def _corrupt(bundle: Path, tmp_path: Path, how: str) -> Path:
    copy = tmp_path / f"bundle_{how}"
    copy.mkdir()
    for f in bundle.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    meta = json.loads((copy / "model.json").read_text())
    if how == "truncated graph":
        data = (copy / "model.onnx").read_bytes()
        (copy / "model.onnx").write_bytes(data[: len(data) // 2])
    elif how == "no model.json":
        (copy / "model.json").unlink()
    elif how == "garbled model.json":
        (copy / "model.json").write_text("{not json")
    elif how == "other states":
        meta["states"] = meta["states"][::-1]
        (copy / "model.json").write_text(json.dumps(meta))
    elif how == "newer format":
        meta["format_version"] = 99
        (copy / "model.json").write_text(json.dumps(meta))
    elif how in EDITED:
        key, value = EDITED[how]
        target = meta
        for part in key[:-1]:
            target = target[part]
        target[key[-1]] = value
        (copy / "model.json").write_text(json.dumps(meta))
    return copy


# Hand-edited model.json fields: (path of the field, new value).
EDITED = {
    "window text": (("window",), "x"),
    "window zero": (("window",), 0),
    "window negative": (("window",), -5),
    "window fraction": (("window",), 70.5),
    "states null": (("states",), None),
    "crf null": (("crf",), None),
    "crf without transitions": (("crf", "transitions"), None),
    "crf ragged": (("crf", "start"), [[1.0], [1.0, 2.0]]),
    "organism ids null": (("organism_ids",), None),
    "organism ids text": (("organism_ids", "other"), "x"),
    "files text": (("files",), "x"),
    "file entry text": (("files", "model.onnx"), "abc"),
}


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("truncated graph", "checksum does not match"),
        ("no model.json", "not a model bundle"),
        ("garbled model.json", "unreadable"),
        ("other states", "states differ"),
        ("newer format", "format version 99"),
        ("window text", "window 'x'"),
        ("window zero", "window 0"),
        ("window negative", "window -5"),
        ("window fraction", "window 70.5"),
        ("states null", "states differ"),
        ("crf null", "crf must hold"),
        ("crf without transitions", "CRF scores do not have 37 states"),
        ("crf ragged", "CRF scores are not numbers"),
        ("organism ids null", "organism_ids must give"),
        ("organism ids text", "organism_ids must give"),
        ("files text", "files must map"),
        ("file entry text", "files must map"),
    ],
)
def test_corrupt_or_mismatched_bundle_is_refused_before_any_output(
    how, message, tmp_path, model_bundle, capsys
):
    fasta = tmp_path / "in.faa"
    fasta.write_text(proteome(3))
    bad = _corrupt(model_bundle, tmp_path, how)
    assert run("predict", fasta, tmp_path / "out", bad) == 1
    err = capsys.readouterr().err
    assert message in err and str(bad) in err, err
    assert not (tmp_path / "out").exists()


def test_unwritable_output_and_unusable_gpu_are_clear_errors(tmp_path, model_bundle, capsys):
    fasta = tmp_path / "in.faa"
    fasta.write_text(proteome(3))
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert run("predict", fasta, blocker / "out", model_bundle) == 1
    assert "cannot write the outputs" in capsys.readouterr().err
    assert run("pipeline", fasta, blocker / "out", model_bundle) == 1
    assert f"{blocker}" in capsys.readouterr().err
    assert blocker.read_text() == ""
    argv = ["predict", "--fasta", str(fasta), "--outdir", str(tmp_path / "g")]
    for device in ("cuda", "tensorrt"):
        assert main([*argv, "--model", str(model_bundle), "--device", device, "--quiet"]) == 1
        assert f"--device {device}" in capsys.readouterr().err
    assert not (tmp_path / "g").exists()


def test_prediction_never_imports_torch(tmp_path, model_bundle):
    fasta = tmp_path / "in.faa"
    fasta.write_text(proteome(5))
    code = (
        "import sys; from peftsp.cli import main; "
        f"rc = main(['predict', '--fasta', {str(fasta)!r}, '--outdir', {str(tmp_path / 'o')!r}, "
        f"'--model', {str(model_bundle)!r}, '--quiet']); "
        "assert rc == 0; assert 'torch' not in sys.modules and 'esm' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_default_model_predicts_the_test_proteome_without_model_option(tmp_path, monkeypatch):
    monkeypatch.setattr(runtime, "cpu_has_exact_int8", lambda: True)
    fasta = Path(__file__).parent / "data" / "mgenitalium.faa"
    argv = ["predict", "--fasta", str(fasta), "--outdir", str(tmp_path / "out"), "--quiet"]
    assert main([*argv, "--organism", "gram_positive", "--batch-size", "128"]) == 0
    headers = [line for line in fasta.read_text().splitlines() if line.startswith(">")]
    assert ids_of(tmp_path / "out") == [h[1:].split()[0] for h in headers]
    info = json.loads((tmp_path / "out" / "output.json").read_text())["run"]
    embedded = json.loads((DEFAULT_MODEL / "model.json").read_text())
    assert info["model"] == embedded["name"] and info["demo_model"] is True
    graph = {"fp32": "model.onnx", "int8": "model.int8.onnx"}[info["precision"]]
    assert info["precision"] == embedded.get("cpu_precision", "fp32")  # (a CPU with VNNI)
    assert info["model_sha256"] == embedded["files"][graph]["sha256"]


# --- options of the SignalP 6.0 drop-in work: organism spellings, sample, plots, outdir ------


def test_signalp_organism_spelling_euk_is_eukarya(tmp_path, model_bundle):
    fasta = tmp_path / "in.faa"
    fasta.write_text(proteome(12))
    assert run("predict", fasta, tmp_path / "a", model_bundle, "--organism", "euk") == 0
    assert run("predict", fasta, tmp_path / "b", model_bundle, "--organism", "eukarya") == 0
    assert tree(tmp_path / "a") == tree(tmp_path / "b")
    lines = (tmp_path / "a" / "prediction_results.txt").read_text().splitlines()
    assert "\tOrganism: Eukarya\t" in lines[0] and lines[1].count("\t") == 4


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--organism", "plant"), "invalid choice: 'plant'"),
        (("--sample", "../up"), "--sample '../up'"),
        (("--sample", ""), "--sample ''"),
        (("--plot", "pdf"), "invalid choice: 'pdf'"),
        (("--batch-size", "0"), "--batch-size must be at least 1"),
    ],
)
def test_bad_option_values_are_clear_errors_with_no_output(
    extra, message, tmp_path, model_bundle, capsys
):
    fasta = tmp_path / "in.faa"
    fasta.write_text(proteome(3))
    try:
        status = run("predict", fasta, tmp_path / "out", model_bundle, *extra)
    except SystemExit as exit:  # argparse
        status = exit.code
    assert status != 0
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_image_plots_without_matplotlib_fail_before_any_output(
    tmp_path, model_bundle, capsys, monkeypatch
):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    fasta = tmp_path / "in.faa"
    fasta.write_text(proteome(3))
    assert run("predict", fasta, tmp_path / "out", model_bundle, "--plot", "png") == 1
    assert "pip install 'peftsp[plot]'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_plots_one_per_protein(tmp_path, model_bundle):
    pytest.importorskip("matplotlib")
    fasta = tmp_path / "in.faa"
    fasta.write_text(proteome(4))
    assert run("predict", fasta, tmp_path / "o", model_bundle, "--plot", "svg") == 0
    names = sorted(p.name for p in (tmp_path / "o" / "plots").iterdir())
    assert names == [f"output_prot{i}_plot.svg" for i in range(4)]


def test_sample_defaults_to_the_fasta_name_and_names_multiqc_data(tmp_path, model_bundle):
    fasta = tmp_path / "GCF_000027325.1_protein.faa.gz"
    fasta.write_bytes(gzip.compress(proteome(5).encode()))
    assert run("predict", fasta, tmp_path / "a", model_bundle) == 0
    mqc = json.loads((tmp_path / "a" / "peftsp_mqc.json").read_text())
    assert list(mqc["data"]) == ["GCF_000027325.1_protein"]
    assert run("predict", fasta, tmp_path / "b", model_bundle, "--sample", "liver") == 0
    assert list(json.loads((tmp_path / "b" / "peftsp_mqc.json").read_text())["data"]) == ["liver"]
    data = json.loads((tmp_path / "b" / "output.json").read_text())
    assert data["sample"] == "liver" and data["run"]["sample"] == "liver"
    assert "PEFT-SP summary: liver" in (tmp_path / "b" / "summary.html").read_text()


def test_a_non_empty_outdir_is_refused_unless_overwrite(tmp_path, model_bundle, capsys):
    fasta = tmp_path / "in.faa"
    fasta.write_text(proteome(3))
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    for command in ("predict", "pipeline"):
        assert run(command, fasta, out, model_bundle) == 1
        err = capsys.readouterr().err
        assert str(out) in err and "--overwrite" in err
        assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert run("predict", fasta, out, model_bundle, "--overwrite") == 0
    assert (out / "notes.txt").read_text() == "mine"
    assert run("pipeline", fasta, out, model_bundle, "--overwrite") == 0
    assert {p.name for p in out.iterdir()} >= OUTPUTS
    (tmp_path / "empty").mkdir()
    assert run("predict", fasta, tmp_path / "empty", model_bundle) == 0  # empty is fine


def test_pipeline_resumes_into_its_own_work_directory_without_overwrite(tmp_path, model_bundle):
    from peftsp import cli
    from peftsp.workflow import runner

    assert cli.RUNNER_WORK_DIR == runner.WORK_DIR
    fasta = tmp_path / "in.faa"
    fasta.write_text(proteome(3))
    out = tmp_path / "out"
    (out / runner.WORK_DIR).mkdir(parents=True)  # as a killed run leaves it
    assert run("pipeline", fasta, out, model_bundle) == 0


def test_a_nucleotide_record_among_proteins_is_predicted_with_a_warning(
    tmp_path, model_bundle, caplog
):
    fasta = tmp_path / "in.faa"
    dna = "ATGGCTAGCAAAGGAGAAGAACTTTTCACTGGAGTTGTCCCAATTCTTG"
    fasta.write_text(proteome(4) + f">contig7\n{dna}\n")
    assert run("predict", fasta, tmp_path / "o", model_bundle) == 0
    predictions = json.loads((tmp_path / "o" / "output.json").read_text())["predictions"]
    assert [p["id"] for p in predictions][-1] == "contig7"
    assert any("nucleotide" in note for note in predictions[-1]["notes"])
    assert not any(p["notes"] for p in predictions[:-1])
    assert "look like nucleotide sequences" in caplog.text and "contig7" in caplog.text


def test_an_id_starting_with_hash_is_predicted_with_a_warning(tmp_path, model_bundle, caplog):
    fasta = tmp_path / "in.faa"
    fasta.write_text(">#prot0 x\nMKKLLLLAVLAAALLASQAEDK\n" + proteome(2))
    assert run("predict", fasta, tmp_path / "o", model_bundle) == 0
    assert ids_of(tmp_path / "o") == ["#prot0", "prot0", "prot1"]
    assert "ID starts with '#'" in caplog.text
    assert "(first: #prot0)" in caplog.text


def test_the_demo_model_is_named_in_the_log_and_outputs(tmp_path, caplog, monkeypatch):
    from peftsp import predict

    monkeypatch.setattr(predict, "_DEMO_WARNED", set())
    fasta = tmp_path / "in.faa"
    fasta.write_text(proteome(2))
    argv = ["predict", "--fasta", str(fasta), "--device", "cpu", "--outdir"]
    assert main([*argv, str(tmp_path / "o")]) == 0
    assert caplog.text.count("demo model") == 1
    assert main([*argv, str(tmp_path / "again")]) == 0  # once per process: the runner's shards
    assert caplog.text.count("demo model") == 1
    first = (tmp_path / "o" / "prediction_results.txt").read_text().splitlines()[0]
    assert first.startswith("# SignalP-6.0 format, PEFT-SP ") and "DEMO MODEL" in first
    data = json.loads((tmp_path / "o" / "output.json").read_text())
    assert data["run"]["demo_model"] is True and "random weights" in data["model_notice"]


def test_an_outdir_that_is_a_file_is_refused_even_with_overwrite(tmp_path, model_bundle, capsys):
    fasta = tmp_path / "in.faa"
    fasta.write_text(proteome(2))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for command in ("predict", "pipeline"):
        assert run(command, fasta, blocker, model_bundle, "--overwrite") == 1
        assert "not a directory" in capsys.readouterr().err and blocker.read_text() == "x"
