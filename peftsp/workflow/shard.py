"""`peftsp shard`: a FASTA file split into numbered shards of whole records (workflow step)."""

from __future__ import annotations

import argparse
import io
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from peftsp.errors import PeftSPError
from peftsp.fasta import open_binary, read_proteins
from peftsp.workflow.commands import SHARD_PREFIX

log = logging.getLogger(__name__)


def shard_command(args: argparse.Namespace) -> None:
    """`peftsp shard`: split a FASTA file into numbered shards."""
    shards = write_shards(Path(args.fasta), Path(args.outdir), args.shard_size)
    log.info("%s: %d shard(s) in %s", args.fasta, len(shards), args.outdir)


def write_shards(fasta: Path, outdir: Path, shard_size: int) -> list[Path]:
    """Split `fasta` into outdir/shard_0001.fasta, ... of `shard_size` records each, in order.

    Every record is validated (peftsp.fasta.read_proteins) before any shard appears. Shards are
    plain UTF-8 text (a gzipped input is decompressed) holding the input's lines in order with
    their line endings normalised to "\\n" (CRLF input gives LF shards): concatenated, the
    shards are the input's text with "\\n" line endings, and predict reads the same records,
    cleaned alike, from them as from the input. Lines before the first record go to the first
    shard, and an input without records gives one shard. Numbers are zero-padded (lexical
    order = input order). The shards appear all at once: they are built in a temporary
    directory beside `outdir`, which must be empty or absent, and nothing is left behind on
    error.
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
    """A plain or gzipped text file, read with universal newlines (the FASTA reader's opener:
    the same decompression, the same line numbers)."""
    with open_binary(path, str(path)) as raw, io.TextIOWrapper(raw, encoding="utf-8") as text:
        yield text
