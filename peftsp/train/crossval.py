"""Cross-validation: the 6 ordered (test, validation) partition pairs of SignalP 6.0."""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

from peftsp import metrics
from peftsp.errors import PeftSPError
from peftsp.fasta import LabelledRecord, read_labelled_list

log = logging.getLogger("peftsp")


def partition_pairs(records: list[LabelledRecord]) -> list[tuple[int, int]]:
    """Every ordered (test, validation) pair of distinct partitions that leaves a third one
    to train on; with partitions 0, 1, 2 these are SignalP 6.0's 6 models."""
    parts = sorted({r.partition for r in records})
    if len(parts) < 3:
        raise PeftSPError(f"cross-validation needs 3 partitions, found {parts}")
    return [(t, v) for t, v in itertools.permutations(parts, 2)]


def crossval_command(args) -> None:
    """`peftsp crossval`: train the 6 models, write per-model metrics and the 16-cell table."""
    import torch

    from peftsp.train.training import train_one

    if args.threads:
        torch.set_num_threads(args.threads)
    records = read_labelled_list(args.data)
    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    per_model: dict[str, dict[str, float]] = {}
    for test, val in partition_pairs(records):
        name = f"test_{test}_valid_{val}"
        log.info("cross-validation model %s", name)
        per_model[name] = train_one(args, records, test, val, outdir / name)
    metrics.write_metrics_csv(outdir / "crossval_metrics.csv", per_model)
    averaged = metrics.average_metrics(list(per_model.values()))
    metrics.write_cell_table(outdir / "crossval_table.csv", outdir / "crossval_table.md", averaged)
    log.info("wrote %s", outdir / "crossval_table.md")
