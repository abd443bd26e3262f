"""Labelled records through the prediction path, and the SignalP 6.0 metrics of the result.

One loop for every model: a training checkpoint (wrapped by peftsp.train as a session that
computes emissions with PyTorch) and an exported bundle (an ONNX Runtime session) both go
through `predict.predict_proteins`, so validation, `peftsp evaluate`, the benches and the
prediction command decode identically. No torch here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from peftsp import grammar, labels, metrics
from peftsp.decoding import Prediction
from peftsp.errors import PeftSPError
from peftsp.fasta import LabelledRecord, Protein, read_labelled_list


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


def predict_labelled(
    session,
    records: list[LabelledRecord],
    organism_rule: bool = True,
    batch_size: int = 64,
    prior: str = "training",
) -> list[Prediction]:
    """Predictions for labelled records, in their order.

    The model is always given each record's kingdom (what a kingdom-conditioned model was
    trained with); `organism_rule` decides whether the eukarya rule masks the decode.
    `prior="training"` keeps the benchmark's own type prior (no proteome prior shift).
    `session` is a runtime.Session or a peftsp.train checkpoint session.
    """
    from peftsp.predict import predict_proteins

    results: list[Prediction | None] = [None] * len(records)
    groups: dict[str, list[int]] = {}
    for i, record in enumerate(records):
        groups.setdefault(grammar.KINGDOM_TO_ORGANISM[record.kingdom], []).append(i)
    for organism, indices in groups.items():
        proteins = [
            Protein(
                records[i].accession, records[i].accession, records[i].sequence, records[i].line
            )
            for i in indices
        ]
        predictions = predict_proteins(
            proteins,
            session,
            organism,
            batch_size,
            organism_rule=organism_rule,
            prior=prior,
            decode_workers=0,
        )
        for i, prediction in zip(indices, predictions, strict=True):
            results[i] = prediction
    return results  # type: ignore[return-value]


def labelled_metrics(
    session, records: list[LabelledRecord], organism_rule: bool = True, batch_size: int = 64
) -> dict[str, float]:
    """SignalP 6.0 metrics of a model (session) on labelled records."""
    predictions = predict_labelled(session, records, organism_rule, batch_size)
    return record_metrics(records, [p.sp_type for p in predictions], [p.cs for p in predictions])


def split_partitions(
    records: list[LabelledRecord], test: int, val: int
) -> tuple[list[LabelledRecord], list[LabelledRecord], list[LabelledRecord]]:
    """(train, validation, test) records: train is every partition other than test and val."""
    if test == val:
        raise PeftSPError("the test and validation partitions must differ")
    present = {r.partition for r in records}
    for name, part in (("test", test), ("validation", val)):
        if part not in present:
            raise PeftSPError(
                f"{name} partition {part} has no records (partitions present: {sorted(present)})"
            )
    return (
        [r for r in records if r.partition not in (test, val)],
        [r for r in records if r.partition == val],
        [r for r in records if r.partition == test],
    )


def split_validation(
    records: list[LabelledRecord], fraction: float, seed: int
) -> tuple[list[LabelledRecord], list[LabelledRecord]]:
    """(train, validation): a seeded random `fraction` of `records` held out for validation."""
    if not 0 < fraction < 1:
        raise PeftSPError(f"--val-fraction must be between 0 and 1, got {fraction}")
    order = np.random.default_rng(seed).permutation(len(records))
    held = set(order[: round(len(records) * fraction)].tolist())
    return (
        [r for i, r in enumerate(records) if i not in held],
        [r for i, r in enumerate(records) if i in held],
    )


def run_split(
    records: list[LabelledRecord],
    test: int,
    val: int | None = None,
    fraction: float | None = None,
    seed: int | None = None,
) -> tuple[list[LabelledRecord], list[LabelledRecord], list[LabelledRecord]]:
    """(train, validation, test) records of a training run: validation is partition `val`, or
    with `fraction` a share drawn with `seed` from all non-test records, pooled in one fixed
    order (the smallest non-test partition last) so that the share does not depend on `val`."""
    if not fraction:
        if val is None:
            raise PeftSPError("a validation partition or a validation fraction is needed")
        return split_partitions(records, test, val)
    last = min(({r.partition for r in records} - {test}), default=test)
    train, held, test_records = split_partitions(records, test, last)
    train, held = split_validation(train + held, fraction, seed)
    return train, held, test_records


def recorded_run_split(
    records: list[LabelledRecord], about: dict
) -> tuple[list[LabelledRecord], list[LabelledRecord], list[LabelledRecord]]:
    """run_split of a run from its training record (a checkpoint's or model.json's)."""
    split = recorded_split(about)
    if split["test_partition"] is None or (
        split["val_partition"] is None and not split["val_fraction"]
    ):
        raise PeftSPError(
            "the model does not record the training split it was selected on (test partition "
            "and --val-partition or --val-fraction)"
        )
    return run_split(
        records,
        int(split["test_partition"]),
        split["val_partition"],
        split["val_fraction"],
        split["val_seed"],
    )


def recorded_split(about: dict) -> dict:
    """What decides a run's validation records (test partition, validation partition or
    seeded share); records of runs before --val-seed used their --seed for the share."""
    fraction = about.get("val_fraction")
    seed = about.get("val_seed", (about.get("options") or {}).get("seed")) if fraction else None
    return {
        "test_partition": about.get("test_partition"),
        "val_partition": None if fraction else about.get("val_partition"),
        "val_fraction": fraction,
        "val_seed": seed,
    }


def open_model(model: str, precision: str = "auto", threads: int | None = None):
    """A session for a bundle directory (ONNX Runtime) or a training checkpoint (PyTorch)."""
    if Path(model).is_dir():
        from peftsp.bundle import load_bundle
        from peftsp.runtime import Session

        return Session(load_bundle(model), "cpu", precision, threads)
    try:
        from peftsp.train.model import CheckpointSession  # torch only for checkpoints
    except ImportError as err:
        raise PeftSPError(
            f"{model}: a training checkpoint needs PyTorch ({err}); install the training extra "
            "(pip install 'peftsp[train]') or evaluate an exported bundle directory"
        ) from err
    return CheckpointSession.load(model, threads)


def evaluate_command(args) -> None:
    """`peftsp evaluate`: SignalP 6.0 metrics of a checkpoint or a model bundle on a partition."""
    records = [r for r in read_labelled_list(args.data) if r.partition == args.partition]
    if not records:
        raise PeftSPError(f"{args.data}: no records in partition {args.partition}")
    session = open_model(args.model, args.precision, args.threads)
    result = labelled_metrics(session, records, not args.no_organism_rule, args.batch_size)
    print(metrics.format_cell_table(result))
    if args.out:
        metrics.write_metrics_csv(Path(args.out), {Path(args.model).stem: result})
