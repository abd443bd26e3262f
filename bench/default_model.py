#!/usr/bin/env python
"""Re-evaluate a model bundle (default: the embedded one) on its held-out partition.

    python bench/default_model.py --data ../shared/data/signalp6/train_set.fasta [--precision int8]

Runs the bundle exactly as `peftsp evaluate` does (ONNX Runtime, the numpy CRF, each record with
its kingdom, the organism rule on, the benchmark's own type prior) on the test partition
recorded in its model.json and prints: the 16-cell MCC1/MCC2 and cleavage-site tables; the
reliability table and expected calibration error (ECE) of the predicted type's probability;
and the checks of the default-model issue (mean MCC2 >= 0.65, Eukarya Sec/SPI MCC2 >= 0.93,
Gram-negative Sec/SPII MCC2 >= 0.95, ECE <= 0.05; Sec/SPI MCC1 beside DeepSig's when
--deepsig gives bench/peer_accuracy.py's figures). Exit 1 when a check fails.

--precision auto (the default) runs the graph `peftsp predict` runs on a CPU. --compare-int8
also runs the fp32 and int8 graphs and prints the precision rule of the speed issue: int8 may be
the CPU default only if its mean MCC2 is within 0.005 of fp32's and no floor cell (the checks
above) is lower than with fp32 - and if, like fp32, it predicts each record the same whatever
records share its batch (each graph is also run with batch 1 and compared with batch 64).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from peftsp import metrics
from peftsp.bundle import DEFAULT_MODEL, load_bundle
from peftsp.calibration import expected_calibration_error, reliability
from peftsp.evaluation import predict_labelled, record_metrics
from peftsp.fasta import read_labelled_list
from peftsp.runtime import Session, resolve_precision

CHECKS = {"EUKARYA_SP_mcc2": 0.93, "NEGATIVE_LIPO_mcc2": 0.95}
MEAN_MCC2 = 0.65
MAX_ECE = 0.05
INT8_MEAN_TOLERANCE = 0.005


def held_out(bundle, records, precision: str, threads: int, batch_size: int = 64):
    """Predictions, cell metrics and records/s of one graph of the bundle on the records."""
    session = Session(bundle, "cpu", precision, threads)
    start = time.perf_counter()
    predictions = predict_labelled(session, records, batch_size=batch_size)
    speed = len(records) / (time.perf_counter() - start)
    result = record_metrics(records, [p.sp_type for p in predictions], [p.cs for p in predictions])
    return session.precision, predictions, result, speed


def mean_mcc2(result: dict) -> tuple[float, int]:
    cells = [k for k in result if k.endswith("_mcc2") and not np.isnan(result[k])]
    return float(np.mean([result[k] for k in cells])), len(cells)


def compare_int8(bundle, records, threads: int) -> dict:
    """Print fp32 against int8 on the held-out records and the rule's verdict; returns both
    runs (held_out's results) by precision."""
    runs = {p: held_out(bundle, records, p, threads) for p in ("fp32", "int8")}
    means = {p: mean_mcc2(run[2])[0] for p, run in runs.items()}
    print("\n| graph | records/s | mean MCC2 | " + " | ".join(CHECKS) + " |")
    print("| --- | ---: | ---: |" + " ---: |" * len(CHECKS))
    for p, (_, _, result, speed) in runs.items():
        floors = " | ".join(f"{result[k]:.3f}" for k in CHECKS)
        print(f"| {p} | {speed:.0f} | {means[p]:.4f} | {floors} |")
    fp32, int8 = runs["fp32"][2], runs["int8"][2]
    close = means["int8"] >= means["fp32"] - INT8_MEAN_TOLERANCE
    lower = [k for k in CHECKS if int8[k] < fp32[k]]
    print(
        f"int8 mean MCC2 within {INT8_MEAN_TOLERANCE} of fp32: {'yes' if close else 'no'} "
        f"({means['int8'] - means['fp32']:+.4f}); floor cells lower with int8: "
        f"{', '.join(f'{k} {int8[k] - fp32[k]:+.4f}' for k in lower) or 'none'}"
    )
    # Each protein's prediction must not depend on the proteins batched with it.
    changed = {}
    for p, (_, predictions, _, _) in runs.items():
        alone = held_out(bundle, records, p, threads, batch_size=1)[1]
        pairs = list(zip(predictions, alone, strict=True))
        changed[p] = [
            sum(a.sp_type != b.sp_type for a, b in pairs),
            sum(a.probabilities != b.probabilities for a, b in pairs),
        ]
        print(
            f"{p}, batch 64 against batch 1: {changed[p][0]} type calls and the probabilities "
            f"of {changed[p][1]} of {len(records)} records differ"
        )
    invariant = changed["int8"] == [0, 0]
    verdict = "may be" if close and not lower and invariant else "must not be"
    print(
        f"=> int8 {verdict} the CPU default (bundle's cpu_precision: "
        f"{bundle.meta.get('cpu_precision', 'fp32')})\n"
    )
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="SignalP 6.0 train_set.fasta")
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--partition", type=int, default=None, help="default: from model.json")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "int8"))
    parser.add_argument(
        "--compare-int8", action="store_true", help="also print fp32 against int8 and the rule"
    )
    parser.add_argument(
        "--deepsig",
        default=None,
        help="JSON {kingdom: Sec/SPI MCC1} of DeepSig on the same records "
        "(bench/peer_accuracy.py --json); adds the 'MCC1 >= DeepSig' checks",
    )
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()

    bundle = load_bundle(args.model)
    partition = args.partition
    if partition is None:
        partition = int(bundle.meta.get("training", {}).get("test_partition", 0))
    records = [r for r in read_labelled_list(args.data) if r.partition == partition]
    runs = compare_int8(bundle, records, args.threads) if args.compare_int8 else {}
    precision = resolve_precision(bundle, args.precision, "cpu")
    run = runs.get(precision) or held_out(bundle, records, precision, args.threads)
    _, predictions, result, speed = run
    print(
        f"{args.model} ({precision}, model {bundle.name}, temperature "
        f"{bundle.temperature:.3f}) on partition {partition}: {len(records)} records, "
        f"{speed:.0f} records/s on {args.threads} threads"
    )
    print(metrics.format_cell_table(result))

    confidence = np.array([p.probability for p in predictions])
    correct = np.array([p.sp_type == r.sp_type for p, r in zip(predictions, records, strict=True)])
    ece = expected_calibration_error(confidence, correct)
    print("\nReliability of the predicted type's probability (held-out records):")
    print("| bin | records | mean probability | accuracy |")
    print("| --- | ---: | ---: | ---: |")
    for row in reliability(confidence, correct):
        print(
            f"| {row['low']:.1f}-{row['high']:.1f} | {row['count']} | "
            f"{row['confidence']:.3f} | {row['accuracy']:.3f} |"
        )
    print(f"expected calibration error: {ece:.4f}")

    mean, cells = mean_mcc2(result)
    checks = [(f"mean MCC2 over {cells} cells >= {MEAN_MCC2}", mean, mean >= MEAN_MCC2)]
    checks += [(f"{k} >= {v}", result[k], result[k] >= v) for k, v in CHECKS.items()]
    checks.append((f"ECE <= {MAX_ECE}", ece, ece <= MAX_ECE))
    if args.deepsig:
        with open(args.deepsig, encoding="utf-8") as handle:
            peer = json.load(handle)
        for kingdom, value in peer.items():
            ours = result[f"{kingdom}_SP_mcc1"]
            checks.append((f"{kingdom} Sec/SPI MCC1 >= DeepSig {value:.3f}", ours, ours >= value))
    failed = 0
    for name, value, ok in checks:
        failed += not ok
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {value:.3f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"metrics": result, "ece": ece, "mean_mcc2": mean}, handle, indent=1)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
