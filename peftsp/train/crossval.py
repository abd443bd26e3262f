"""Cross-validation (the 6 ordered test/validation partition pairs) and evaluation commands."""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

from peftsp import labels, metrics
from peftsp.errors import PeftSPError
from peftsp.fasta import LabelledRecord, read_labelled_list

log = logging.getLogger("peftsp")


def truth(records: list[LabelledRecord]) -> tuple[list[str], list[str], list[int | None]]:
    """(kingdoms, true types, true cleavage sites) of labelled records."""
    return (
        [r.kingdom for r in records],
        [r.sp_type for r in records],
        [labels.true_cleavage_site(r.labels, r.sp_type) for r in records],
    )


def record_metrics(
    records: list[LabelledRecord], pred_types: list[str], pred_cs: list[int | None]
) -> dict[str, float]:
    """SignalP 6.0 metrics of predictions for labelled records."""
    kingdoms, true_types, true_cs = truth(records)
    return metrics.compute_metrics(kingdoms, true_types, pred_types, true_cs, pred_cs)


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


def evaluate_command(args) -> None:
    """`peftsp evaluate`: SignalP 6.0 metrics of a checkpoint or a model bundle on a partition."""
    records = [r for r in read_labelled_list(args.data) if r.partition == args.partition]
    if not records:
        raise PeftSPError(f"{args.data}: no records in partition {args.partition}")
    organism_rule = not args.no_organism_rule
    if Path(args.model).is_dir():
        from peftsp.predict import bundle_predictions
        from peftsp.runtime import Session, load_bundle

        session = Session(load_bundle(args.model), "cpu", args.precision, args.threads)
        pred_types, pred_cs = bundle_predictions(session, records, organism_rule, args.batch_size)
    else:
        import torch

        from peftsp.train.model import load_checkpoint
        from peftsp.train.training import predict_records

        if args.threads:
            torch.set_num_threads(args.threads)
        model, _ = load_checkpoint(args.model)
        pred_types, pred_cs = predict_records(
            model, records, args.batch_size, organism_rule, args.quiet
        )
    result = record_metrics(records, pred_types, pred_cs)
    print(metrics.format_cell_table(result))
    if args.out:
        metrics.write_metrics_csv(Path(args.out), {Path(args.model).stem: result})
