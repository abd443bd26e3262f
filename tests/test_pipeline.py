"""Tests of the workflow steps (shard, merge) and the local runner (`peftsp pipeline`)."""

from __future__ import annotations

import gzip
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from peftsp import cli, pipeline
from peftsp.errors import InputError, PeftSPError

AMINO = "ACDEFGHIKLMNPQRSTVWY"
SIGNAL = "MKKTAIAIAVALAGFATVAQA"  # a Sec/SPI-like N-terminus
OUTPUTS = (
    "prediction_results.txt",
    "output.gff3",
    "processed_entries.fasta",
    "output.json",
    "summary.html",
    "peftsp_mqc.json",
)
REAL_RUN_STEP = pipeline.run_step


def make_fasta(path: Path, count: int, seed: int = 0) -> Path:
    """`count` random proteins, some with an SP-like start, some lower case, wrapped at 60."""
    rng = random.Random(seed)
    records = []
    for i in range(count):
        body = "".join(rng.choice(AMINO) for _ in range(rng.randint(15, 130)))
        sequence = SIGNAL + body if i % 3 == 0 else "M" + body
        if i % 5 == 4:
            sequence = sequence.lower()
        lines = "\n".join(sequence[j : j + 60] for j in range(0, len(sequence), 60))
        records.append(f">prot{i} protein {i} of a test proteome\n{lines}\n")
    path.write_text("".join(records))
    return path


def tree(root: Path) -> dict[str, bytes]:
    """Every file under root (relative path -> bytes)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


# --- command templates ----------------------------------------------------------------------


def test_render_fills_dotted_names_and_expands_lists():
    values = {
        "fasta": "shard 1.fasta",
        "model_option": [],
        "prefix": "out",
        "device": "cpu",
        "task.cpus": "4",
        "args": ["--organism", "eukarya"],
    }
    assert pipeline.render(pipeline.PREDICT_COMMAND, values) == [
        "peftsp", "predict", "--fasta", "shard 1.fasta", "--outdir", "out",
        "--device", "cpu", "--threads", "4", "--organism", "eukarya",
    ]  # fmt: skip
    values["model_option"] = ["--model", "bundle"]
    assert pipeline.render(pipeline.PREDICT_COMMAND, values)[4:6] == ["--model", "bundle"]


def test_render_rejects_an_unfilled_name():
    values = {"fasta": "a", "model_option": [], "prefix": "b", "device": "c", "args": []}
    with pytest.raises(KeyError, match=r"task\.cpus"):
        pipeline.render(pipeline.PREDICT_COMMAND, values)


def test_every_template_parses_as_its_cli_command():
    values = {
        "fasta": "in.faa",
        "prefix": "out",
        "shard_size": "3",
        "args": ["--quiet"],
        "model_option": ["--model", "m"],
        "device": "cuda",
        "task.cpus": "2",
        "shard_json": ["1/output.json", "2/output.json"],
    }
    parser = cli.build_parser()
    shard = parser.parse_args(pipeline.render(pipeline.SHARD_COMMAND, values)[1:])
    assert (shard.fasta, shard.outdir, shard.shard_size, shard.quiet) == ("in.faa", "out", 3, True)
    predict = parser.parse_args(pipeline.render(pipeline.PREDICT_COMMAND, values)[1:])
    assert (predict.model, predict.device, predict.threads) == ("m", "cuda", 2)
    merge = parser.parse_args(pipeline.render(pipeline.MERGE_COMMAND, values)[1:])
    assert merge.shards == ["1/output.json", "2/output.json"] and merge.outdir == "out"


# --- shard ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "expected"), [(1, 10), (3, 4), (7, 2), (10, 1), (100, 1)])
def test_shards_hold_the_input_lines_in_order(tmp_path, size, expected):
    fasta = make_fasta(tmp_path / "in.faa", 10)
    shards = pipeline.write_shards(fasta, tmp_path / "shards", size)
    assert len(shards) == expected
    assert shards == sorted(shards)  # lexical order is input order
    assert [p.name for p in shards][:2] == ["shard_0001.fasta", "shard_0002.fasta"][:expected]
    assert "".join(p.read_text() for p in shards) == fasta.read_text()
    counts = [p.read_text().count(">") for p in shards]
    assert counts == [size] * (expected - 1) + [10 - size * (expected - 1)]
    assert sorted(os.listdir(tmp_path)) == ["in.faa", "shards"]  # no temporary left


def test_gzipped_input_gives_plain_shards(tmp_path):
    fasta = make_fasta(tmp_path / "in.faa", 5)
    packed = tmp_path / "in.faa.gz"
    packed.write_bytes(gzip.compress(fasta.read_bytes()))
    shards = pipeline.write_shards(packed, tmp_path / "shards", 2)
    assert "".join(p.read_text() for p in shards) == fasta.read_text()


def test_invalid_fasta_leaves_no_shards(tmp_path):
    fasta = make_fasta(tmp_path / "in.faa", 6)
    fasta.write_text(fasta.read_text() + ">bad\nMKV@@\n")
    with pytest.raises(InputError) as error:
        pipeline.write_shards(fasta, tmp_path / "shards", 2)
    assert error.value.line is not None
    assert os.listdir(tmp_path) == ["in.faa"]


def test_shard_refuses_a_non_empty_outdir_and_a_zero_size(tmp_path):
    fasta = make_fasta(tmp_path / "in.faa", 2)
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "old.fasta").write_text(">x\nM\n")
    with pytest.raises(PeftSPError, match="not empty"):
        pipeline.write_shards(fasta, tmp_path / "shards", 1)
    with pytest.raises(PeftSPError, match="at least 1"):
        pipeline.write_shards(fasta, tmp_path / "other", 0)


# --- samplesheet ----------------------------------------------------------------------------


def test_samplesheet_gives_one_sample_per_row(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_fasta(tmp_path / "a.faa", 2)
    make_fasta(tmp_path / "b.faa", 2)
    sheet = tmp_path / "sheet.csv"
    sheet.write_text("sample,fasta,organism\nA,a.faa,eukarya\nB,b.faa,\n")
    samples = pipeline.read_input(sheet, tmp_path / "out", "archaea")
    assert [(s.id, s.fasta, s.organism, s.outdir) for s in samples] == [
        ("A", Path("a.faa"), "eukarya", tmp_path / "out" / "A"),
        ("B", Path("b.faa"), "archaea", tmp_path / "out" / "B"),
    ]
    (one,) = pipeline.read_input(tmp_path / "a.faa", tmp_path / "out", "other")
    assert one.outdir == tmp_path / "out"


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("sample,organism\nA,eukarya\n", 1, "missing column(s) fasta"),
        ("sample,fasta,kingdom\nA,a.faa,x\n", 1, "unknown or repeated"),
        ("sample,fasta\nA,a.faa\nB,a.faa\nA,a.faa\n", 4, "already used on line 2"),
        ("sample,fasta\nA,missing.faa\n", 2, "no such FASTA file"),
        ("sample,fasta,organism\nA,a.faa,eukarya\nB,a.faa,plant\n", 3, "unknown organism"),
        ("sample,fasta\n../up,a.faa\n", 2, "bad sample id"),
        ("sample,fasta\nA,a.faa,extra\n", 2, "expected 2 comma-separated fields"),
        ("sample,fasta,organism\nA\n", 2, "expected 3 comma-separated fields"),
    ],
)
def test_samplesheet_errors_name_the_line(tmp_path, monkeypatch, text, line, message):
    monkeypatch.chdir(tmp_path)
    make_fasta(tmp_path / "a.faa", 1)
    sheet = tmp_path / "sheet.csv"
    sheet.write_text(text)
    with pytest.raises(InputError) as error:
        pipeline.read_samplesheet(sheet, tmp_path / "out", "other")
    assert error.value.line == line
    assert message in error.value.reason
    assert error.value.path == str(sheet)


def test_empty_samplesheet_is_an_error(tmp_path):
    sheet = tmp_path / "sheet.csv"
    for text in ("", "sample,fasta\n"):
        sheet.write_text(text)
        with pytest.raises(InputError):
            pipeline.read_samplesheet(sheet, tmp_path / "out", "other")


# --- runner, with stand-ins for predict and merge (shard is real) ---------------------------


class FakeSteps:
    """Runs shard for real; predict copies its shard into output.json, merge concatenates
    the shards' output.json into merged.fasta. Records each call; can fail one predict."""

    def __init__(self, fail_on_predict: int | None = None):
        self.calls: list[list[str]] = []
        self.fail_on_predict = fail_on_predict

    def __call__(self, argv):
        self.calls.append(list(argv))
        args = cli.build_parser().parse_args(argv[1:])
        if args.command == "shard":
            REAL_RUN_STEP(argv)
        elif args.command == "predict":
            if self.steps("predict") == self.fail_on_predict:
                raise PeftSPError("predict failed")
            Path(args.outdir).mkdir(parents=True)
            (Path(args.outdir) / "output.json").write_text(Path(args.fasta).read_text())
        else:
            Path(args.outdir).mkdir(parents=True, exist_ok=True)
            merged = "".join(Path(p).read_text() for p in args.shards)
            (Path(args.outdir) / "merged.fasta").write_text(merged)

    def steps(self, name: str) -> int:
        return sum(argv[1] == name for argv in self.calls)


SETTINGS = pipeline.RunSettings(shard_size=2, device="cpu", batch_size=8, threads=2, quiet=True)


def run_fake(monkeypatch, fasta: Path, outdir: Path, steps: FakeSteps, organism="other"):
    monkeypatch.setattr(pipeline, "run_step", steps)
    pipeline.run_pipeline(fasta, outdir, organism, SETTINGS)


def test_runner_runs_the_templates_in_order_and_keeps_input_order(tmp_path, monkeypatch):
    fasta = make_fasta(tmp_path / "in.faa", 5)
    steps = FakeSteps()
    settings = pipeline.RunSettings(**{**SETTINGS.__dict__, "model": "bundle"})
    monkeypatch.setattr(pipeline, "run_step", steps)
    pipeline.run_pipeline(fasta, tmp_path / "out", "archaea", settings)
    assert [argv[1] for argv in steps.calls] == ["shard"] + ["predict"] * 3 + ["merge"]
    work = tmp_path / "out" / pipeline.WORK_DIR / "in.faa"
    assert steps.calls[1] == [
        "peftsp", "predict", "--fasta", str(work / "shards" / "shard_0001.fasta"),
        "--model", "bundle", "--outdir", str(work / "predict" / "shard_0001"),
        "--device", "cpu", "--threads", "2", "--organism", "archaea", "--batch-size", "8",
        "--quiet",
    ]  # fmt: skip
    assert (tmp_path / "out" / "merged.fasta").read_text() == fasta.read_text()
    assert os.listdir(tmp_path / "out") == ["merged.fasta"]  # work directory removed


def test_runner_resumes_without_redoing_finished_steps(tmp_path, monkeypatch):
    fasta = make_fasta(tmp_path / "in.faa", 9)  # 5 shards of 2
    with pytest.raises(PeftSPError):
        run_fake(monkeypatch, fasta, tmp_path / "out", FakeSteps(fail_on_predict=3))
    assert not (tmp_path / "out" / "merged.fasta").exists()
    steps = FakeSteps()
    run_fake(monkeypatch, fasta, tmp_path / "out", steps)
    assert [argv[1] for argv in steps.calls] == ["predict"] * 3 + ["merge"]
    assert steps.calls[0][3].endswith("shard_0003.fasta")
    assert (tmp_path / "out" / "merged.fasta").read_text() == fasta.read_text()


def test_runner_redoes_steps_whose_input_changed(tmp_path, monkeypatch):
    fasta = make_fasta(tmp_path / "in.faa", 9)
    with pytest.raises(PeftSPError):
        run_fake(monkeypatch, fasta, tmp_path / "out", FakeSteps(fail_on_predict=4))
    make_fasta(fasta, 9, seed=1)  # same name, other proteins
    steps = FakeSteps()
    run_fake(monkeypatch, fasta, tmp_path / "out", steps)
    assert [argv[1] for argv in steps.calls] == ["shard"] + ["predict"] * 5 + ["merge"]
    assert (tmp_path / "out" / "merged.fasta").read_text() == fasta.read_text()


def test_runner_does_not_trust_a_record_without_its_output(tmp_path, monkeypatch):
    fasta = make_fasta(tmp_path / "in.faa", 9)
    with pytest.raises(PeftSPError):
        run_fake(monkeypatch, fasta, tmp_path / "out", FakeSteps(fail_on_predict=4))
    work = tmp_path / "out" / pipeline.WORK_DIR / "in.faa"
    (work / "predict" / "shard_0002" / "output.json").unlink()
    (work / "predict" / "shard_0001.done").write_text("{not json")
    steps = FakeSteps()
    run_fake(monkeypatch, fasta, tmp_path / "out", steps)
    redone = [Path(argv[3]).name for argv in steps.calls if argv[1] == "predict"]
    assert redone == [
        "shard_0001.fasta",
        "shard_0002.fasta",
        "shard_0004.fasta",
        "shard_0005.fasta",
    ]
    assert (tmp_path / "out" / "merged.fasta").read_text() == fasta.read_text()


def test_runner_gives_each_sample_its_directory_and_organism(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_fasta(tmp_path / "a.faa", 3, seed=1)
    make_fasta(tmp_path / "b.faa", 4, seed=2)
    sheet = tmp_path / "sheet.csv"
    sheet.write_text("sample,fasta,organism\nA,a.faa,eukarya\nB,b.faa,\n")
    steps = FakeSteps()
    run_fake(monkeypatch, sheet, tmp_path / "out", steps, organism="gram_positive")
    organisms = [argv[argv.index("--organism") + 1] for argv in steps.calls if argv[1] == "predict"]
    assert organisms == ["eukarya"] * 2 + ["gram_positive"] * 2
    for sample, name in (("A", "a.faa"), ("B", "b.faa")):
        merged = (tmp_path / "out" / sample / "merged.fasta").read_text()
        assert merged == (tmp_path / name).read_text()
    assert sorted(os.listdir(tmp_path / "out")) == ["A", "B"]


def test_runner_leaves_no_output_on_bad_input(tmp_path, monkeypatch):
    fasta = tmp_path / "in.faa"
    fasta.write_text(">ok\nMKV\n>bad\nMKV@@\n")
    with pytest.raises(InputError):
        run_fake(monkeypatch, fasta, tmp_path / "out", FakeSteps())
    assert not (tmp_path / "out").exists()
    with pytest.raises(InputError):
        run_fake(monkeypatch, tmp_path / "missing.faa", tmp_path / "out", FakeSteps())
    assert not (tmp_path / "out").exists()


# --- end to end, with the tiny exported model ----------------------------------------------


def predict_directly(fasta: Path, outdir: Path, model: Path) -> dict[str, bytes]:
    argv = ["predict", "--fasta", str(fasta), "--outdir", str(outdir), "--model", str(model)]
    assert cli.main([*argv, "--device", "cpu", "--quiet"]) == 0
    return tree(outdir)


def pipeline_argv(source: Path, outdir: Path, model: Path, shard_size: int) -> list[str]:
    return [
        "pipeline", "--input", str(source), "--outdir", str(outdir), "--model", str(model),
        "--shard-size", str(shard_size), "--device", "cpu", "--quiet",
    ]  # fmt: skip


def test_pipeline_outputs_are_byte_identical_to_direct_predict(tmp_path, model_bundle):
    fasta = make_fasta(tmp_path / "proteome.faa", 12)
    direct = predict_directly(fasta, tmp_path / "direct", model_bundle)
    assert sorted(direct) == sorted(OUTPUTS)
    for size in (1, 7, 10_000):  # one protein per shard, uneven shards, one shard
        out = tmp_path / f"size{size}"
        assert cli.main(pipeline_argv(fasta, out, model_bundle, size)) == 0
        assert tree(out) == direct, f"shard size {size}"


def test_samplesheet_outputs_equal_direct_predict_per_sample(tmp_path, model_bundle):
    first = make_fasta(tmp_path / "first.faa", 4, seed=3)
    second = make_fasta(tmp_path / "second.faa", 5, seed=4)
    sheet = tmp_path / "sheet.csv"
    sheet.write_text(f"sample,fasta,organism\none,{first},eukarya\ntwo,{second},\n")
    out = tmp_path / "out"
    assert cli.main([*pipeline_argv(sheet, out, model_bundle, 2), "--organism", "archaea"]) == 0
    for sample, fasta, organism in (("one", first, "eukarya"), ("two", second, "archaea")):
        argv = ["predict", "--fasta", str(fasta), "--outdir", str(tmp_path / sample)]
        argv += ["--model", str(model_bundle), "--organism", organism, "--device", "cpu"]
        assert cli.main([*argv, "--quiet"]) == 0
        assert tree(out / sample) == tree(tmp_path / sample), sample


def test_killed_pipeline_resumes_to_identical_outputs(tmp_path, model_bundle):
    fasta = make_fasta(tmp_path / "proteome.faa", 8)
    reference = tmp_path / "reference"
    assert cli.main(pipeline_argv(fasta, reference, model_bundle, 1)) == 0

    out = tmp_path / "killed"
    argv = pipeline_argv(fasta, out, model_bundle, 1)
    process = subprocess.Popen([sys.executable, "-m", "peftsp.cli", *argv])
    markers = out / pipeline.WORK_DIR / fasta.name / "predict"
    deadline = time.monotonic() + 120
    while not list(markers.glob("*.done")):
        assert process.poll() is None, "the run ended before a shard was recorded"
        assert time.monotonic() < deadline, "no shard finished in time"
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    assert not (out / "prediction_results.txt").exists()  # it stopped part-way

    assert cli.main(argv) == 0
    assert tree(out) == tree(reference)
