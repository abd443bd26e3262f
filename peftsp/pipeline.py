"""Workflow steps (shard, merge) and the local runner that chains shard -> predict -> merge.

The command each Nextflow process runs is defined once, here, in Nextflow's `${...}` syntax:
the `script:` blocks of modules/nf-core/peftsp/*/main.nf are these strings (a test checks it),
and the local runner fills the same templates and runs them, so `peftsp pipeline` exercises the
workflow's data path without Nextflow. The runner records finished steps, so a run that was
killed resumes where it stopped and still writes the same bytes.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import os
import re
import shutil
import string
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

from peftsp import __version__
from peftsp.errors import InputError, PeftSPError
from peftsp.files import atomic_write
from peftsp.grammar import ORGANISMS
from peftsp.runtime import sha256_file

log = logging.getLogger(__name__)

# The `script:` command of each module (modules/nf-core/peftsp/<step>/main.nf).
SHARD_COMMAND = (
    "peftsp shard --fasta ${fasta} --outdir ${prefix} --shard-size ${shard_size} ${args}"
)
PREDICT_COMMAND = (
    "peftsp predict --fasta ${fasta} ${model_option} --outdir ${prefix} --device ${device} "
    "--threads ${task.cpus} ${args}"
)
MERGE_COMMAND = "peftsp merge --outdir ${prefix} ${args} ${shard_json}"
# `ext.args` of PEFTSP_PREDICT in conf/modules.config: the proteome's organism, the batch size.
PREDICT_ARGS = "--organism ${meta.organism} --batch-size ${params.batch_size}"

# Samplesheet columns (assets/schema_input.json describes the same for Nextflow).
SAMPLESHEET_COLUMNS = ("sample", "fasta", "organism")
REQUIRED_COLUMNS = ("sample", "fasta")
# A sample id names its output directory.
SAMPLE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"

WORK_DIR = ".peftsp-work"  # the runner's per-step state, inside --outdir, removed on success
SHARD_PREFIX = "shard_"
# Extra arguments of every step the runner starts: its own progress bar replaces theirs.
STEP_ARGS = ("--quiet",)


class _NextflowTemplate(string.Template):
    idpattern = r"[a-z_][a-z0-9_.]*"  # Nextflow names may be dotted: ${task.cpus}


def render(template: str, values: Mapping[str, str | Sequence[str]]) -> list[str]:
    """The argv of a command template.

    A token that is a lone variable bound to a list becomes the list's items (none for an empty
    list, like an empty `${args}` in Nextflow); every other token is substituted as text.
    """
    argv: list[str] = []
    for token in template.split():
        value = values.get(token[2:-1]) if token.startswith("${") and token.endswith("}") else None
        if isinstance(value, list | tuple):
            argv.extend(value)
        else:
            argv.append(_NextflowTemplate(token).substitute(values))
    return argv


def run_step(argv: Sequence[str]) -> None:
    """Run one `peftsp ...` step in this process: the CLI's parser and handler, its errors
    (InputError with file and line) passed on unchanged."""
    from peftsp import cli  # here, not at the top: cli loads this module for its handlers

    args = cli.build_parser().parse_args(list(argv[1:]))
    cli._handler(args.command)(args)


# --- shard ----------------------------------------------------------------------------------


def shard_command(args: argparse.Namespace) -> None:
    """`peftsp shard`: split a FASTA file into numbered shards."""
    shards = write_shards(Path(args.fasta), Path(args.outdir), args.shard_size)
    log.info("%s: %d shard(s) in %s", args.fasta, len(shards), args.outdir)


def write_shards(fasta: Path, outdir: Path, shard_size: int) -> list[Path]:
    """Split `fasta` into outdir/shard_0001.fasta, ... of `shard_size` records each, in order.

    Every record is validated (peftsp.fasta.read_proteins) before any shard appears. Shards
    hold their records' lines exactly as read, so predict sees the same text and the shards
    concatenated give the input back; lines before the first record go to the first shard, and
    an input without records gives one shard. Numbers are zero-padded (lexical order = input
    order). The shards appear all at once: they are built in a temporary directory beside
    `outdir`, which must be empty or absent, and nothing is left behind on error.
    """
    if shard_size < 1:
        raise PeftSPError(f"--shard-size must be at least 1, not {shard_size}")
    if outdir.exists() and any(outdir.iterdir()):
        raise PeftSPError(f"{outdir}: output directory is not empty")
    outdir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.", dir=outdir.parent))
    try:
        count = _split(fasta, tmp, shard_size)
        width = max(4, len(str(count)))
        names = [f"{SHARD_PREFIX}{i:0{width}d}.fasta" for i in range(1, count + 1)]
        for i, name in enumerate(names, start=1):
            os.replace(tmp / str(i), tmp / name)
        os.replace(tmp, outdir)  # rename(2) may replace an empty directory
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return [outdir / name for name in names]


def _split(fasta: Path, tmp: Path, shard_size: int) -> int:
    """Copy the lines of `fasta` into tmp/1, tmp/2, ...; returns the number of shards."""
    from peftsp.fasta import read_proteins

    # Header lines of the records that open shards 2, 3, ... Pulling the next one validates
    # every record up to it, so the last pull validates the rest of the file.
    starts = (p.line for i, p in enumerate(read_proteins(fasta)) if i and i % shard_size == 0)
    next_start = next(starts, None)
    count = 1
    out = open(tmp / "1", "w", encoding="utf-8")  # noqa: SIM115 (reopened per shard)
    try:
        with _open_text(fasta) as lines:
            for number, line in enumerate(lines, start=1):
                if number == next_start:
                    out.close()
                    count += 1
                    out = open(tmp / str(count), "w", encoding="utf-8")  # noqa: SIM115
                    next_start = next(starts, None)
                out.write(line)
    finally:
        out.close()
    return count


@contextmanager
def _open_text(path: Path) -> Iterator[TextIO]:
    """Open a plain or gzipped text file for reading (the FASTA reader's opener)."""
    from peftsp.fasta import open_binary

    with open_binary(path, str(path)) as raw, io.TextIOWrapper(raw, encoding="utf-8") as text:
        yield text


# --- merge ----------------------------------------------------------------------------------


def merge_command(args: argparse.Namespace) -> None:
    """`peftsp merge`: write the outputs of per-shard predictions, concatenated in order."""
    merge_predictions([Path(p) for p in args.shards], Path(args.outdir))


def merge_predictions(inputs: Sequence[Path], outdir: Path) -> None:
    """Write the outputs of the shard predictions `inputs`, in the given order, to `outdir`.

    Each input is a `peftsp predict` output directory or its output.json. All shards must come
    from the same model and settings (the same run information); the merged files are written
    once, by the same writer as predict, so they are byte-identical to a direct prediction.
    """
    from peftsp.writers import read_predictions_json, write_outputs

    run_info = None
    predictions = []
    for path in inputs:
        json_path = path / "output.json" if path.is_dir() else path
        if not json_path.is_file():
            raise InputError("no such prediction file", path=str(json_path))
        info, shard_predictions = read_predictions_json(json_path)
        if run_info is None:
            run_info = info
        elif info != run_info:
            raise InputError(
                f"predicted with other settings than {inputs[0]} (model, organism or version)",
                path=str(json_path),
            )
        predictions.extend(shard_predictions)
    write_outputs(predictions, outdir, run_info)


# --- local runner ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One proteome of a run, and where its merged outputs go."""

    id: str
    fasta: Path
    organism: str
    outdir: Path


@dataclass(frozen=True)
class RunSettings:
    """The options of `peftsp pipeline` that shape the step commands."""

    shard_size: int = 5000
    model: str | None = None
    device: str = "auto"
    batch_size: int = 64
    threads: int | None = None
    quiet: bool = False


def pipeline_command(args: argparse.Namespace) -> None:
    """`peftsp pipeline`: shard, predict per shard and merge, locally, resuming a killed run."""
    settings = RunSettings(
        shard_size=args.shard_size,
        model=args.model,
        device=args.device,
        batch_size=args.batch_size,
        threads=args.threads,
        quiet=args.quiet,
    )
    run_pipeline(Path(args.input), Path(args.outdir), args.organism, settings)


def read_input(path: Path, outdir: Path, organism: str) -> list[Sample]:
    """The proteomes of `--input`: a samplesheet (.csv, one output subdirectory per sample) or
    one FASTA file (outputs directly in `outdir`)."""
    if path.suffix.lower() == ".csv":
        return read_samplesheet(path, outdir, organism)
    if not path.is_file():
        raise InputError("no such file", path=str(path))
    return [Sample(id=path.name, fasta=path, organism=organism, outdir=outdir)]


def read_samplesheet(path: Path, outdir: Path, organism: str) -> list[Sample]:
    """The samples of a CSV samplesheet with the columns sample,fasta[,organism].

    An empty organism takes `organism`; FASTA paths are relative to the working directory (as
    in Nextflow). Errors name the samplesheet line.
    """
    if not path.is_file():
        raise InputError("no such file", path=str(path))
    samples: list[Sample] = []
    lines: dict[str, int] = {}
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in reader.fieldnames or []]
        _check_columns(columns, path)
        reader.fieldnames = columns
        for row in reader:
            where = {"path": str(path), "line": reader.line_num}
            if None in row or None in row.values():
                raise InputError(f"expected {len(columns)} comma-separated fields", **where)
            sample = _read_row(row, where, organism, outdir)
            if sample.id in lines:
                raise InputError(
                    f"sample id already used on line {lines[sample.id]}", record=sample.id, **where
                )
            lines[sample.id] = reader.line_num
            samples.append(sample)
    if not samples:
        raise InputError("samplesheet has no samples", path=str(path))
    return samples


def _check_columns(columns: list[str], path: Path) -> None:
    if not columns:
        raise InputError("empty samplesheet; expected the header sample,fasta,organism", str(path))
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    unknown = [c for c in columns if c not in SAMPLESHEET_COLUMNS]
    if missing or unknown or len(set(columns)) < len(columns):
        problem = f"missing column(s) {', '.join(missing)}" if missing else "unknown or repeated"
        raise InputError(
            f"{problem} in header {','.join(columns)}; expected sample,fasta[,organism]",
            path=str(path),
            line=1,
        )


def _read_row(row: dict[str, str], where: dict, default_organism: str, outdir: Path) -> Sample:
    sample = row["sample"].strip()
    if not re.fullmatch(SAMPLE_ID_PATTERN, sample):
        raise InputError(
            f"bad sample id {sample!r}: letters, digits, '.', '_', '-', not starting with '.'",
            **where,
        )
    fasta = Path(row["fasta"].strip())
    if not fasta.is_file():
        raise InputError(f"no such FASTA file {str(fasta)!r}", record=sample, **where)
    organism = (row.get("organism") or "").strip() or default_organism
    if organism not in ORGANISMS:
        raise InputError(
            f"unknown organism {organism!r}; expected one of {', '.join(ORGANISMS)}",
            record=sample,
            **where,
        )
    return Sample(id=sample, fasta=fasta, organism=organism, outdir=outdir / sample)


def run_pipeline(input_path: Path, outdir: Path, organism: str, settings: RunSettings) -> None:
    """Shard every proteome, predict every shard, merge per proteome (input order kept).

    Steps that finished are recorded under outdir/.peftsp-work, checked against the content
    they came from; a killed run started again redoes only unfinished steps (the merge always
    runs) and writes the same bytes as an uninterrupted run. The work directory is removed on
    success.
    """
    samples = read_input(input_path, outdir, organism)
    work = outdir / WORK_DIR
    created = not outdir.exists()
    try:
        shards = {s.id: _shard(s, work / s.id, settings) for s in samples}
        tasks = [(s, shard, digest) for s in samples for shard, digest in shards[s.id].items()]
        for sample, shard, digest in tqdm(
            tasks, desc="peftsp pipeline", unit="shard", disable=settings.quiet
        ):
            _predict(sample, shard, digest, work / sample.id, settings)
        for sample in samples:
            _merge(sample, list(shards[sample.id]), work / sample.id, settings)
    except BaseException:
        _remove_if_no_files(work)
        if created:
            _remove_if_no_files(outdir)
        raise
    shutil.rmtree(work)
    log.info("%d proteome(s) written to %s", len(samples), outdir)


def _shard(sample: Sample, work: Path, settings: RunSettings) -> dict[Path, str]:
    """Shard one proteome unless a valid record says it is done; returns shard -> sha256."""
    shard_dir, marker = work / "shards", work / "shards.done"
    expected = {"input_sha256": sha256_file(sample.fasta), "shard_size": settings.shard_size}
    done = _read_marker(marker)
    if done is not None and all(done.get(k) == v for k, v in expected.items()):
        recorded = {shard_dir / name: digest for name, digest in done.get("shards", {}).items()}
        if recorded and all(p.is_file() and sha256_file(p) == d for p, d in recorded.items()):
            return recorded
    shutil.rmtree(shard_dir, ignore_errors=True)
    values = {
        "fasta": str(sample.fasta),
        "prefix": str(shard_dir),
        "shard_size": str(settings.shard_size),
        "args": STEP_ARGS,
    }
    run_step(render(SHARD_COMMAND, values))
    shards = {p: sha256_file(p) for p in sorted(shard_dir.glob(f"{SHARD_PREFIX}*.fasta"))}
    _write_marker(marker, {**expected, "shards": {p.name: d for p, d in shards.items()}})
    return shards


def _predict(sample: Sample, shard: Path, digest: str, work: Path, settings: RunSettings) -> None:
    """Predict one shard unless a valid record says it is done."""
    out = work / "predict" / shard.stem
    marker = out.with_name(f"{shard.stem}.done")
    values = {
        "fasta": str(shard),
        "model_option": ["--model", settings.model] if settings.model else [],
        "prefix": str(out),
        "device": settings.device,
        "task.cpus": str(settings.threads or os.cpu_count() or 1),
        "args": render(
            PREDICT_ARGS,
            {"meta.organism": sample.organism, "params.batch_size": str(settings.batch_size)},
        )
        + list(STEP_ARGS),
    }
    argv = render(PREDICT_COMMAND, values)
    expected = {"shard_sha256": digest, "argv": argv, "version": __version__}
    if _read_marker(marker) == expected and (out / "output.json").is_file():
        return
    shutil.rmtree(out, ignore_errors=True)
    run_step(argv)
    _write_marker(marker, expected)


def _merge(sample: Sample, shards: list[Path], work: Path, settings: RunSettings) -> None:
    values = {
        "prefix": str(sample.outdir),
        "args": STEP_ARGS,
        "shard_json": [str(work / "predict" / shard.stem / "output.json") for shard in shards],
    }
    run_step(render(MERGE_COMMAND, values))


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
