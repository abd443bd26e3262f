#!/usr/bin/env python
"""Re-evaluate the embedded default model on its held-out partition, as its model card reports.

    python bench/default_model.py --data ../shared/data/signalp6/train_set.fasta

Runs the committed bundle (models/default, through ONNX Runtime and the numpy CRF, exactly as
`peftsp predict` does) on the test partition recorded in its model.json, prints the 16-cell
MCC1/MCC2 and cleavage-site tables, checks the floors (Eukarya Sec/SPI MCC2 >= 0.85,
Gram-negative Sec/SPII MCC2 >= 0.80) and times prediction on a proteome.
"""

from __future__ import annotations

import argparse
import sys
import time

from peftsp import metrics
from peftsp.fasta import read_labelled_list, read_proteins
from peftsp.predict import bundle_predictions, predict_proteins
from peftsp.runtime import DEFAULT_MODEL, Session, load_bundle
from peftsp.train.crossval import record_metrics

FLOORS = {"EUKARYA_SP_mcc2": 0.85, "NEGATIVE_LIPO_mcc2": 0.80}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="SignalP 6.0 train_set.fasta")
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--partition", type=int, default=None, help="default: from model.json")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", default="fp32", choices=("fp32", "int8"))
    parser.add_argument("--proteome", default="tests/data/mgenitalium.faa")
    args = parser.parse_args()

    bundle = load_bundle(args.model)
    partition = args.partition
    if partition is None:
        partition = int(bundle.meta.get("training", {}).get("test_partition", 0))
    records = [r for r in read_labelled_list(args.data) if r.partition == partition]
    session = Session(bundle, "cpu", args.precision, args.threads)
    start = time.perf_counter()
    types, sites = bundle_predictions(session, records, organism_rule=True)
    seconds = time.perf_counter() - start
    result = record_metrics(records, types, sites)
    print(
        f"{args.model} ({args.precision}) on partition {partition}: {len(records)} records, "
        f"{len(records) / seconds:.0f} records/s on {args.threads} threads"
    )
    print(metrics.format_cell_table(result))
    proteins = list(read_proteins(args.proteome))
    start = time.perf_counter()
    for _ in predict_proteins(proteins, session, "other", 64):
        pass
    speed = len(proteins) / (time.perf_counter() - start)
    print(
        f"prediction speed: {len(proteins)} proteins of {args.proteome} at {speed:.0f} "
        f"proteins/s ({args.threads} threads)"
    )
    failed = False
    for key, floor in FLOORS.items():
        value = result.get(key, float("nan"))
        status = "ok" if value >= floor else "BELOW FLOOR"
        failed |= not value >= floor
        print(f"floor {key} >= {floor}: {value:.3f} {status}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
