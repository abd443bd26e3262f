"""The local runner, `peftsp pipeline` (peftsp.workflow.runner): the workflow's step commands
in order, resuming a killed run, outputs byte-identical to a direct `peftsp predict`."""

from __future__ import annotations

import html
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from workflow_fixtures import make_fasta, tree

from peftsp import cli, writers
from peftsp.errors import InputError, PeftSPError
from peftsp.predict import default_sample
from peftsp.workflow import runner
from peftsp.workflow.runner import Proteome, RunSettings, read_proteomes, run_pipeline
from peftsp.workflow.samplesheet import Sample

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _reproducible_timestamp(monkeypatch):
    """Outputs carry the run's time; a fixed SOURCE_DATE_EPOCH makes runs comparable (also in
    the child processes, which inherit the environment)."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")


# --- the proteomes of a run -----------------------------------------------------------------


def test_a_single_fasta_is_one_sample_named_as_predict_names_it(tmp_path):
    fasta = make_fasta(tmp_path / "GCF_000005845.2_ASM584v2_protein.faa", 2)
    (proteome,) = read_proteomes(None, str(fasta), tmp_path / "out", "archaea")
    assert proteome == Proteome(
        Sample(default_sample(str(fasta)), fasta, "archaea"), tmp_path / "out"
    )
    assert proteome.sample.id == "GCF_000005845.2_ASM584v2_protein"


def test_a_samplesheet_gives_one_output_directory_per_sample(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_fasta(tmp_path / "a.faa", 2)
    (tmp_path / "sheet.csv").write_text("sample,fasta,organism\nA,a.faa,euk\nB,a.faa,\n")
    proteomes = read_proteomes("sheet.csv", None, tmp_path / "out", "other")
    assert [(p.sample.id, p.sample.organism, p.outdir) for p in proteomes] == [
        ("A", "eukarya", tmp_path / "out" / "A"),
        ("B", "other", tmp_path / "out" / "B"),
    ]


def test_input_and_fasta_exclude_each_other(tmp_path, capsys):
    fasta = make_fasta(tmp_path / "in.faa", 2)
    for options in ([], ["--input", "x.csv", "--fasta", str(fasta)]):
        with pytest.raises(SystemExit) as exit:
            cli.build_parser().parse_args(["pipeline", *options, "--outdir", "o"])
        assert exit.value.code == 2
    err = capsys.readouterr().err
    assert "one of the arguments --input --fasta is required" in err
    assert "not allowed with argument" in err
    with pytest.raises(PeftSPError, match="not both"):
        read_proteomes("x.csv", str(fasta), tmp_path, "other")
    with pytest.raises(InputError, match="no such file"):
        read_proteomes(None, str(tmp_path / "missing.faa"), tmp_path, "other")
    spaced = make_fasta(tmp_path / "my proteome.faa", 2)
    with pytest.raises(InputError, match="must not contain whitespace"):  # as nf-schema refuses
        read_proteomes(None, str(spaced), tmp_path, "other")


def test_a_fasta_given_to_input_is_refused_pointing_to_fasta(tmp_path, capsys):
    fasta = make_fasta(tmp_path / "in.faa", 2)
    argv = ["pipeline", "--input", str(fasta), "--outdir", str(tmp_path / "out"), "--quiet"]
    assert cli.main(argv) == 1
    assert "give a single protein FASTA with --fasta" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


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
            runner.run_step(argv)
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

    def predict_calls(self) -> list[list[str]]:
        return [argv for argv in self.calls if argv[1] == "predict"]


SETTINGS = RunSettings(shard_size=2, device="cpu", batch_size=8, threads=2, quiet=True)


def run_fake(fasta: Path, outdir: Path, steps: FakeSteps, organism="other", **settings):
    proteomes = read_proteomes(None, str(fasta), outdir, organism)
    run_pipeline(proteomes, outdir, RunSettings(**{**SETTINGS.__dict__, **settings}), steps)


def test_runner_runs_the_templates_in_order_and_keeps_input_order(tmp_path):
    fasta = make_fasta(tmp_path / "in.faa", 5)
    steps = FakeSteps()
    run_fake(fasta, tmp_path / "out", steps, organism="archaea", model="bundle")
    assert [argv[1] for argv in steps.calls] == ["shard"] + ["predict"] * 3 + ["merge"]
    work = tmp_path / "out" / runner.WORK_DIR / "in"  # the sample id: predict's default
    assert steps.calls[1] == [
        "peftsp", "predict", "--fasta", str(work / "shards" / "shard_0001.fasta"),
        "--model", "bundle", "--outdir", str(work / "predict" / "shard_0001"),
        "--sample", "in", "--device", "cpu", "--threads", "2", "--organism", "archaea",
        "--batch-size", "8", "--quiet",
    ]  # fmt: skip
    assert (tmp_path / "out" / "merged.fasta").read_text() == fasta.read_text()
    assert os.listdir(tmp_path / "out") == ["merged.fasta"]  # work directory removed


@pytest.mark.parametrize("device", ["auto", "cuda", "tensorrt"])
def test_a_gpu_capable_device_gets_a_tensorrt_cache_in_the_work_directory(tmp_path, device):
    fasta = make_fasta(tmp_path / "in.faa", 3)
    steps = FakeSteps()
    run_fake(fasta, tmp_path / "out", steps, device=device)
    cache = str(tmp_path / "out" / runner.WORK_DIR / runner.TRT_CACHE)
    for argv in steps.predict_calls():
        assert argv[argv.index("--device") + 1] == device
        assert argv[argv.index("--trt-cache") + 1] == cache
    steps = FakeSteps()
    run_fake(fasta, tmp_path / "mine", steps, device=device, trt_cache=str(tmp_path / "trt"))
    assert all(a[a.index("--trt-cache") + 1] == str(tmp_path / "trt") for a in steps.calls[1:-1])


def test_the_cpu_device_gets_no_tensorrt_cache(tmp_path):
    steps = FakeSteps()
    run_fake(make_fasta(tmp_path / "in.faa", 3), tmp_path / "out", steps, device="cpu")
    assert steps.predict_calls() and not any("--trt-cache" in a for a in steps.predict_calls())


def test_runner_resumes_without_redoing_finished_steps(tmp_path):
    fasta = make_fasta(tmp_path / "in.faa", 9)  # 5 shards of 2
    with pytest.raises(PeftSPError):
        run_fake(fasta, tmp_path / "out", FakeSteps(fail_on_predict=3))
    assert not (tmp_path / "out" / "merged.fasta").exists()
    steps = FakeSteps()
    run_fake(fasta, tmp_path / "out", steps)
    assert [argv[1] for argv in steps.calls] == ["predict"] * 3 + ["merge"]
    assert steps.calls[0][3].endswith("shard_0003.fasta")
    assert (tmp_path / "out" / "merged.fasta").read_text() == fasta.read_text()


def test_runner_redoes_steps_whose_input_or_command_changed(tmp_path):
    fasta = make_fasta(tmp_path / "in.faa", 9)
    with pytest.raises(PeftSPError):
        run_fake(fasta, tmp_path / "out", FakeSteps(fail_on_predict=4))
    make_fasta(fasta, 9, seed=1)  # same name, other proteins
    steps = FakeSteps()
    run_fake(fasta, tmp_path / "out", steps)
    assert [argv[1] for argv in steps.calls] == ["shard"] + ["predict"] * 5 + ["merge"]
    assert (tmp_path / "out" / "merged.fasta").read_text() == fasta.read_text()
    with pytest.raises(PeftSPError):
        run_fake(fasta, tmp_path / "again", FakeSteps(fail_on_predict=4))
    steps = FakeSteps()
    run_fake(fasta, tmp_path / "again", steps, batch_size=16)  # another predict command
    assert [argv[1] for argv in steps.calls] == ["predict"] * 5 + ["merge"]


def test_runner_does_not_trust_a_record_without_its_output(tmp_path):
    fasta = make_fasta(tmp_path / "in.faa", 9)
    with pytest.raises(PeftSPError):
        run_fake(fasta, tmp_path / "out", FakeSteps(fail_on_predict=4))
    work = tmp_path / "out" / runner.WORK_DIR / "in"
    (work / "predict" / "shard_0002" / "output.json").unlink()
    (work / "predict" / "shard_0001.done").write_text("{not json")
    steps = FakeSteps()
    run_fake(fasta, tmp_path / "out", steps)
    redone = [Path(argv[3]).name for argv in steps.predict_calls()]
    assert redone == [
        "shard_0001.fasta",
        "shard_0002.fasta",
        "shard_0004.fasta",
        "shard_0005.fasta",
    ]
    assert (tmp_path / "out" / "merged.fasta").read_text() == fasta.read_text()


def test_runner_gives_each_sample_its_directory_organism_and_sample_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_fasta(tmp_path / "a.faa", 3, seed=1)
    make_fasta(tmp_path / "b.faa", 4, seed=2)
    sheet = tmp_path / "sheet.tsv"
    sheet.write_text("sample\tfasta\torganism\nA\ta.faa\teukarya\n12\tb.faa\t\n")
    steps = FakeSteps()
    proteomes = read_proteomes(str(sheet), None, tmp_path / "out", "gram_positive")
    run_pipeline(proteomes, tmp_path / "out", SETTINGS, steps)
    predicts = steps.predict_calls()
    assert [argv[argv.index("--organism") + 1] for argv in predicts] == (
        ["eukarya"] * 2 + ["gram_positive"] * 2
    )
    assert [argv[argv.index("--sample") + 1] for argv in predicts] == ["A"] * 2 + ["12"] * 2
    for sample, name in (("A", "a.faa"), ("12", "b.faa")):
        merged = (tmp_path / "out" / sample / "merged.fasta").read_text()
        assert merged == (tmp_path / name).read_text()
    assert sorted(os.listdir(tmp_path / "out")) == ["12", "A"]


def test_runner_leaves_no_output_on_bad_input(tmp_path):
    fasta = tmp_path / "in.faa"
    fasta.write_text(">ok\nMKV\n>bad\nMKV@@\n")
    with pytest.raises(InputError):
        run_fake(fasta, tmp_path / "out", FakeSteps())
    assert not (tmp_path / "out").exists()


def test_run_step_runs_a_peftsp_command_in_this_process_and_raises_its_errors(tmp_path):
    fasta = make_fasta(tmp_path / "in.faa", 3)
    runner.run_step(["peftsp", "shard", "--fasta", str(fasta), "--outdir", str(tmp_path / "s")])
    assert (tmp_path / "s" / "shard_0001.fasta").read_bytes() == fasta.read_bytes()
    with pytest.raises(InputError, match="no such prediction file"):
        runner.run_step(["peftsp", "merge", "--outdir", str(tmp_path / "m"), str(tmp_path / "x")])
    with pytest.raises(ValueError, match="not a peftsp command"):
        runner.run_step(["rm", "-rf", str(tmp_path)])


# --- end to end, with the embedded default model ---------------------------------------------


def predict_directly(fasta: Path, outdir: Path, sample: str, *extra: str) -> dict[str, bytes]:
    """A direct `peftsp predict` as the pipeline runs it, its input path normalised: a direct
    run names its input (output.json "source", summary.html "Input"), a merge none."""
    argv = ["predict", "--fasta", str(fasta), "--outdir", str(outdir), "--sample", sample]
    assert cli.main([*argv, "--device", "cpu", "--quiet", *extra]) == 0
    files = tree(outdir)
    assert sorted(files) == sorted(writers.OUTPUT_FILES)
    for name, old, new in (
        ("output.json", f'"source": {json.dumps(str(fasta))}', '"source": null'),
        (
            "summary.html",
            f"<th>Input</th><td>{html.escape(str(fasta))}</td>",
            "<th>Input</th><td>(merged shards)</td>",
        ),
    ):
        text = files[name].decode()
        assert text.count(old) == 1, name
        files[name] = text.replace(old, new).encode()
    return files


def pipeline_argv(option: str, source: Path, outdir: Path, shard_size: int) -> list[str]:
    return [
        "pipeline", option, str(source), "--outdir", str(outdir),
        "--shard-size", str(shard_size), "--device", "cpu", "--quiet",
    ]  # fmt: skip


def test_pipeline_outputs_are_byte_identical_to_direct_predict(tmp_path):
    fasta = make_fasta(tmp_path / "proteome.faa", 12)
    direct = predict_directly(fasta, tmp_path / "direct", "proteome")
    for size in (1, 7, 10_000):  # one protein per shard, uneven shards, one shard
        out = tmp_path / f"size{size}"
        assert cli.main(pipeline_argv("--fasta", fasta, out, size)) == 0
        assert tree(out) == direct, f"shard size {size}"


def test_crlf_input_gives_the_same_predictions_as_lf_input(tmp_path):
    (tmp_path / "lf").mkdir()
    (tmp_path / "crlf").mkdir()
    lf = make_fasta(tmp_path / "lf" / "proteome.faa", 6)
    crlf = make_fasta(tmp_path / "crlf" / "proteome.faa", 6, newline="\r\n")
    for fasta in (lf, crlf):
        assert cli.main(pipeline_argv("--fasta", fasta, fasta.parent / "out", 4)) == 0
    assert tree(lf.parent / "out") == tree(crlf.parent / "out")


def test_samplesheet_outputs_equal_direct_predict_per_sample(tmp_path):
    first = make_fasta(tmp_path / "first.faa", 4, seed=3)
    second = make_fasta(tmp_path / "second.faa", 5, seed=4)
    sheet = tmp_path / "sheet.csv"
    sheet.write_text(f"sample,fasta,organism\none,{first},euk\ntwo,{second},\n")
    out = tmp_path / "out"
    assert cli.main([*pipeline_argv("--input", sheet, out, 2), "--organism", "archaea"]) == 0
    assert sorted(os.listdir(out)) == ["one", "two"]
    for sample, fasta, organism in (("one", first, "eukarya"), ("two", second, "archaea")):
        direct = predict_directly(fasta, tmp_path / sample, sample, "--organism", organism)
        assert tree(out / sample) == direct, sample


def test_killed_pipeline_resumes_to_identical_outputs(tmp_path):
    fasta = make_fasta(tmp_path / "proteome.faa", 8)
    reference = tmp_path / "reference"
    assert cli.main(pipeline_argv("--fasta", fasta, reference, 1)) == 0

    out = tmp_path / "killed"
    argv = pipeline_argv("--fasta", fasta, out, 1)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    process = subprocess.Popen([sys.executable, "-m", "peftsp.cli", *argv], env=env)
    markers = out / runner.WORK_DIR / "proteome" / "predict"
    deadline = time.monotonic() + 120
    while not list(markers.glob("*.done")):
        assert process.poll() is None, "the run ended before a shard was recorded"
        assert time.monotonic() < deadline, "no shard finished in time"
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    assert not (out / "prediction_results.txt").exists()  # it stopped part-way
    assert len(list(markers.glob("*.done"))) < 8

    assert cli.main(argv) == 0
    assert tree(out) == tree(reference)
