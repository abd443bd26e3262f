"""`peftsp pipeline`: the local runner, shard -> predict per shard -> merge on one machine.

It fills the workflow's command templates (peftsp.workflow.commands, the `script:` lines of
the Nextflow modules) with what Nextflow would give each task and runs them, one after the
other, in this process (peftsp.cli.run_command). Finished steps are recorded under
OUTDIR/.peftsp-work, so a run that was killed resumes where it stopped and still writes the
same bytes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from peftsp import __version__, cli
from peftsp.errors import InputError, PeftSPError
from peftsp.files import atomic_write, sha256_file
from peftsp.predict import default_sample
from peftsp.workflow.commands import (
    MERGE_COMMAND,
    PREDICT_ARGS,
    PREDICT_COMMAND,
    SHARD_COMMAND,
    SHARD_PREFIX,
    render,
)
from peftsp.workflow.samplesheet import FASTA_PATH_RULE, Sample, read_samplesheet, stageable

log = logging.getLogger(__name__)

WORK_DIR = ".peftsp-work"  # the runner's per-step state, inside --outdir, removed on success
# The TensorRT engine cache of the predict steps when the device is not cpu (Nextflow: a GPU
# task's `--trt-cache`), inside the work directory unless --trt-cache names one.
TRT_CACHE = "trt_cache"
# Extra arguments of every step the runner starts: its own progress bar replaces theirs.
STEP_ARGS = ("--quiet",)

StepRunner = Callable[[Sequence[str]], None]


@dataclass(frozen=True)
class RunSettings:
    """The options of `peftsp pipeline` that shape the step commands."""

    shard_size: int = 5000
    model: str | None = None
    device: str = "auto"
    batch_size: int = 64
    threads: int | None = None
    quiet: bool = False
    trt_cache: str | None = None


@dataclass(frozen=True)
class Proteome:
    """One sample of a run and the directory its merged outputs go to."""

    sample: Sample
    outdir: Path


def run_step(argv: Sequence[str]) -> None:
    """Run one `peftsp ...` step in this process (its errors, e.g. InputError with file and
    line, passed on unchanged)."""
    if not argv or argv[0] != "peftsp":
        raise ValueError(f"not a peftsp command: {argv!r}")
    cli.run_command(argv[1:])


def pipeline_command(args: argparse.Namespace) -> None:
    """`peftsp pipeline`: shard, predict per shard and merge, locally, resuming a killed run."""
    settings = RunSettings(
        shard_size=args.shard_size,
        model=args.model,
        device=args.device,
        batch_size=args.batch_size,
        threads=args.threads,
        quiet=args.quiet,
        trt_cache=args.trt_cache,
    )
    outdir = Path(args.outdir)
    proteomes = read_proteomes(args.input, args.fasta, outdir, args.organism)
    run_pipeline(proteomes, outdir, settings)


def read_proteomes(
    samplesheet: str | None, fasta: str | None, outdir: Path, organism: str
) -> list[Proteome]:
    """The proteomes of `--input` (a samplesheet: one output subdirectory per sample) or of
    `--fasta` (one proteome, outputs directly in `outdir`, sample id from its file name as
    predict's default --sample); exactly one of the two."""
    if (samplesheet is None) == (fasta is None):
        raise PeftSPError("give --input (a samplesheet) or --fasta (one proteome), not both")
    if samplesheet is not None:
        samples = read_samplesheet(Path(samplesheet), organism)
        return [Proteome(sample, outdir / sample.id) for sample in samples]
    path = Path(fasta)
    if not stageable(fasta):
        raise InputError(FASTA_PATH_RULE, path=fasta)
    if not path.is_file():
        raise InputError("no such file" if not path.exists() else "not a file", path=str(path))
    return [Proteome(Sample(id=default_sample(str(path)), fasta=path, organism=organism), outdir)]


def run_pipeline(
    proteomes: Sequence[Proteome],
    outdir: Path,
    settings: RunSettings,
    run_step: StepRunner = run_step,
) -> None:
    """Shard every proteome, predict every shard, merge per proteome (input order kept).

    Steps that finished are recorded under outdir/.peftsp-work, checked against the content
    they came from; a killed run started again redoes only unfinished steps (the merge always
    runs) and writes the same bytes as an uninterrupted run. The work directory is removed on
    success; on failure, so is `outdir` if this call created it and it holds no files.
    """
    work = outdir / WORK_DIR
    created = not outdir.exists()
    steps = _Steps(work, settings, run_step)
    try:
        shards = {p.sample.id: steps.shard(p.sample) for p in proteomes}
        tasks = [
            (p, shard, digest) for p in proteomes for shard, digest in shards[p.sample.id].items()
        ]
        for proteome, shard, digest in tqdm(
            tasks, desc="peftsp pipeline", unit="shard", disable=settings.quiet
        ):
            steps.predict(proteome.sample, shard, digest)
        for proteome in proteomes:
            steps.merge(proteome, list(shards[proteome.sample.id]))
    except BaseException:
        _remove_if_no_files(work)
        if created:
            _remove_if_no_files(outdir)
        raise
    shutil.rmtree(work)
    log.info("%d proteome(s) written to %s", len(proteomes), outdir)


@dataclass(frozen=True)
class _Steps:
    """The step commands of one run, each run unless a valid record says it is done."""

    work: Path
    settings: RunSettings
    run_step: StepRunner

    def shard(self, sample: Sample) -> dict[Path, str]:
        """Shard one proteome; returns shard -> sha256."""
        work = self.work / sample.id
        shard_dir, marker = work / "shards", work / "shards.done"
        expected = {
            "input_sha256": sha256_file(sample.fasta),
            "shard_size": self.settings.shard_size,
        }
        done = _read_marker(marker)
        if done is not None and all(done.get(k) == v for k, v in expected.items()):
            recorded = {shard_dir / name: digest for name, digest in done.get("shards", {}).items()}
            if recorded and all(p.is_file() and sha256_file(p) == d for p, d in recorded.items()):
                return recorded
        shutil.rmtree(shard_dir, ignore_errors=True)
        values = {
            "fasta": str(sample.fasta),
            "prefix": str(shard_dir),
            "shard_size": str(self.settings.shard_size),
            "args": STEP_ARGS,
        }
        self.run_step(render(SHARD_COMMAND, values))
        shards = {p: sha256_file(p) for p in sorted(shard_dir.glob(f"{SHARD_PREFIX}*.fasta"))}
        _write_marker(marker, {**expected, "shards": {p.name: d for p, d in shards.items()}})
        return shards

    def predict_argv(self, sample: Sample, shard: Path) -> list[str]:
        """The predict command of one shard, as PEFTSP_PREDICT's task would run it."""
        settings = self.settings
        args = render(
            PREDICT_ARGS,
            {"meta.organism": sample.organism, "params.batch_size": str(settings.batch_size)},
        )
        if settings.device != "cpu":  # a task with a GPU gets a TensorRT engine cache
            args += ["--trt-cache", settings.trt_cache or str(self.work / TRT_CACHE)]
        values = {
            "fasta": str(shard),
            "model_option": ["--model", settings.model] if settings.model else [],
            "prefix": str(self.work / sample.id / "predict" / shard.stem),
            "meta.id": sample.id,
            "device": settings.device,
            "task.cpus": str(settings.threads or os.cpu_count() or 1),
            "args": args + list(STEP_ARGS),
        }
        return render(PREDICT_COMMAND, values)

    def predict(self, sample: Sample, shard: Path, digest: str) -> None:
        """Predict one shard."""
        out = self.work / sample.id / "predict" / shard.stem
        marker = out.with_name(f"{shard.stem}.done")
        argv = self.predict_argv(sample, shard)
        expected = {"shard_sha256": digest, "argv": argv, "version": __version__}
        if _read_marker(marker) == expected and (out / "output.json").is_file():
            return
        shutil.rmtree(out, ignore_errors=True)
        self.run_step(argv)
        _write_marker(marker, expected)

    def merge(self, proteome: Proteome, shards: list[Path]) -> None:
        """Merge one proteome's shard predictions into its output directory (always run)."""
        predictions = self.work / proteome.sample.id / "predict"
        values = {
            "prefix": str(proteome.outdir),
            "args": STEP_ARGS,
            "shard_json": [str(predictions / shard.stem / "output.json") for shard in shards],
        }
        self.run_step(render(MERGE_COMMAND, values))


def _read_marker(path: Path) -> dict | None:
    """A step record, or None if it is absent or unreadable (e.g. from an older layout)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _write_marker(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, encoding="utf-8") as handle:
        json.dump(record, handle, indent=1)


def _remove_if_no_files(path: Path) -> None:
    """Remove a directory tree that holds no files (only empty directories)."""
    if path.is_dir() and not any(p.is_file() for p in path.rglob("*")):
        shutil.rmtree(path)
