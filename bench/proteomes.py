#!/usr/bin/env python
"""Every proteome of a directory through the local runner (`peftsp pipeline`), in one run.

    python bench/proteomes.py ../shared/data/proteomes --outdir runs/proteomes --threads 2 \
        [--batch-size N]

Writes a samplesheet (organism per proteome from ORGANISMS below, else `other`), runs
`peftsp pipeline` on it in a child process (batch size: --batch-size, by default the
prediction default peftsp.predict.DEFAULT_BATCH_SIZE), and prints the wall time, the peak RSS
of the largest process it started (the runner, which predicts the shards; on the CPU no decode
worker processes are started), proteins/s, and per proteome the proteins in (FASTA headers)
and out (output.json, prediction_results.txt rows, and the seqids of both GFF3 files within
the input IDs). Exits non-zero if any count differs.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from peftsp.predict import DEFAULT_BATCH_SIZE
from peftsp.writers import escape_seqid

# Organism groups of the proteomes in ../shared/data/proteomes (file stem prefix -> group).
ORGANISMS = {
    "pfalciparum": "eukarya",
    "hvolcanii": "archaea",
    "mjannaschii": "archaea",
    "sacidocaldarius": "archaea",
    "tvolcanium": "archaea",
    "bsubtilis": "gram_positive",
    "cglutamicum": "gram_positive",
    "mtuberculosis": "gram_positive",
    "mgenitalium": "gram_positive",
    "ecoli": "gram_negative",
    "paeruginosa": "gram_negative",
    "baphidicola": "gram_negative",
}


def sample_name(path: Path) -> str:
    return path.name.split(".")[0].removesuffix("_proteins")


GFF_FILES = ("output.gff3", "region_output.gff3")


def gff_seqids(path: Path) -> set[str]:
    """The seqids of a GFF3 file's feature rows and ##sequence-region directives."""
    seqids = set()
    for line in path.read_text().splitlines():
        if line.startswith("##sequence-region"):
            seqids.add(line.split()[1])
        elif line and not line.startswith("#"):
            seqids.add(line.split("\t")[0])
    return seqids


def count_headers(path: Path) -> int:
    with open(path, "rb") as handle:
        return sum(1 for line in handle if line.startswith(b">"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("directory")
    parser.add_argument("--outdir", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--shard-size", type=int, default=5000)
    parser.add_argument("--model", default=None)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    args = parser.parse_args()

    files = sorted(Path(args.directory).glob("*.fa*"))
    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    sheet = outdir / "samplesheet.csv"
    rows = ["sample,fasta,organism"]
    for f in files:
        rows.append(f"{sample_name(f)},{f.resolve()},{ORGANISMS.get(sample_name(f), 'other')}")
    sheet.write_text("\n".join(rows) + "\n")
    results = outdir / "results"
    argv = [sys.executable, "-m", "peftsp.cli", "pipeline", "--input", str(sheet)]
    argv += ["--outdir", str(results), "--shard-size", str(args.shard_size), "--device", "cpu"]
    argv += ["--threads", str(args.threads), "--batch-size", str(args.batch_size)]
    if args.model:
        argv += ["--model", args.model]
    start = time.perf_counter()
    subprocess.run(argv, check=True)
    wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024

    total_in = total_out = 0
    ok = True
    print(f"{'proteome':<22} {'organism':<14} {'in':>6} {'json':>6} {'txt':>6} {'gff ok':>6}")
    for f in files:
        name = sample_name(f)
        n_in = count_headers(f)
        out = results / name
        predictions = json.loads((out / "output.json").read_text())["predictions"]
        txt = (out / "prediction_results.txt").read_text().splitlines()[2:]
        ids = {p["id"] for p in predictions}
        seqids = {escape_seqid(i) for i in ids}
        gff_ok = all(gff_seqids(out / name) <= seqids for name in GFF_FILES)
        same = n_in == len(predictions) == len(txt) == len(ids)
        ok &= same and gff_ok
        total_in += n_in
        total_out += len(predictions)
        print(
            f"{name:<22} {ORGANISMS.get(name, 'other'):<14} {n_in:>6} {len(predictions):>6} "
            f"{len(txt):>6} {gff_ok!s:>6}{'' if same else '  MISMATCH'}"
        )
    print(
        f"{len(files)} proteomes, {total_in} proteins in, {total_out} out; wall {wall:.0f} s "
        f"({total_in / wall:.1f} proteins/s); peak RSS {peak:.0f} MiB; {args.threads} threads; "
        f"batch {args.batch_size}"
    )
    sys.exit(0 if ok and total_in == total_out else 1)


if __name__ == "__main__":
    main()
