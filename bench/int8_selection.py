#!/usr/bin/env python
"""Choose a bundle's static int8 calibration without looking at its test partition.

    python bench/int8_selection.py --data ../shared/data/signalp6/train_set.fasta \
        --proteomes ../shared/data/proteomes [--model models/default] [--write OUTDIR]

Builds one static int8 graph per candidate (calibration method x calibration proteins, a list
fixed in CANDIDATES below) from the bundle's fp32 graph, runs each beside the fp32 graph on the
labelled records of every partition except the bundle's test partition (each with its
kingdom, as `peftsp evaluate` does; calibration records excluded) and counts how often int8
changes a prediction of fp32: the SP type, the cleavage site, and the mean absolute change of
the type probability. Labels are not used: the measure is agreement with fp32, which is what
the speed issue's precision rule asks of int8. The candidate with the fewest type changes
(then cleavage-site changes, then probability change) is chosen; --write OUTDIR writes a copy
of the bundle with its graph (then judge it once on the test partition with
`bench/default_model.py --compare-int8`); --calibration-out FILE keeps the sampled records, to
export the chosen graph with `peftsp export --int8-calibration FILE --int8-method METHOD`.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from peftsp.bundle import DEFAULT_MODEL, INT8_METHODS, PRECISION_FILES, load_bundle, write_metadata
from peftsp.evaluation import predict_labelled
from peftsp.fasta import read_labelled_list
from peftsp.grammar import SP_TYPES
from peftsp.runtime import Session
from peftsp.train.export import calibration_feeds, write_int8

# Calibration proteins: "proteomes" = the first proteins of four proteomes the bundle's prior is
# fitted on (none of those bench/proteome_sanity.py judges); "records" = a seeded sample of the
# non-test labelled records, in the kingdom mix of the training data.
PROTEOMES = ("pfalciparum", "paeruginosa", "mtuberculosis", "hvolcanii")
CANDIDATES = [(method, source) for source in ("proteomes", "records") for method in INT8_METHODS]
SAMPLE_SEED = 0
SAMPLE_SIZE = 512


def sample_fasta(records, path: Path) -> set[str]:
    """Write a seeded sample of records as FASTA; returns their accessions."""
    chosen = np.random.default_rng(SAMPLE_SEED).choice(len(records), SAMPLE_SIZE, replace=False)
    picked = [records[i] for i in sorted(chosen)]
    path.write_text("".join(f">{r.accession}\n{r.sequence}\n" for r in picked))
    return {r.accession for r in picked}


def bundle_with_int8(bundle, graph: Path, outdir: Path) -> None:
    """A copy of `bundle` in outdir whose int8 graph is `graph`."""
    shutil.copytree(bundle.path, outdir)
    shutil.copyfile(graph, outdir / PRECISION_FILES["int8"])
    meta = {k: v for k, v in bundle.meta.items() if k != "files"}
    meta["int8_activations"] = "static"
    precisions = {name: p for p, name in PRECISION_FILES.items() if (outdir / name).exists()}
    write_metadata(outdir, meta, precisions)


def changes(reference, predictions) -> tuple[int, int, float]:
    """(type changes, cleavage-site changes among equal types, mean |change| of the
    probability of fp32's type)."""
    types = sum(a.sp_type != b.sp_type for a, b in zip(reference, predictions, strict=True))
    sites = sum(
        a.sp_type == b.sp_type and a.cs != b.cs for a, b in zip(reference, predictions, strict=True)
    )
    prob = np.mean(
        [
            abs(a.probability - b.probabilities[SP_TYPES.index(a.sp_type)])
            for a, b in zip(reference, predictions, strict=True)
        ]
    )
    return types, sites, float(prob)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", required=True, help="SignalP 6.0 three-line labelled FASTA")
    ap.add_argument("--proteomes", required=True, help="folder of the proteome FASTA files")
    ap.add_argument("--model", default=str(DEFAULT_MODEL), help="model bundle")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--write", default=None, help="write the chosen bundle copy here")
    ap.add_argument(
        "--calibration-out",
        default=None,
        help="also write the sampled calibration records here (FASTA, for peftsp export)",
    )
    args = ap.parse_args()

    bundle = load_bundle(args.model)
    test = bundle.meta["training"].get("test_partition", 0)
    records = [r for r in read_labelled_list(Path(args.data)) if r.partition != test]
    proteomes = [str(Path(args.proteomes) / f"{name}_proteins.faa") for name in PROTEOMES]
    work = Path(tempfile.mkdtemp(prefix="int8sel."))
    try:
        held = sample_fasta(records, work / "records.faa")
        if args.calibration_out:
            shutil.copyfile(work / "records.faa", args.calibration_out)
        judged = [r for r in records if r.accession not in held]
        print(f"bundle {bundle.name}; test partition {test} not used; {len(judged)} records judged")
        reference = predict_labelled(Session(bundle, "cpu", "fp32", args.threads), judged)
        rows = []
        for method, source in CANDIDATES:
            files = proteomes if source == "proteomes" else [str(work / "records.faa")]
            feeds = calibration_feeds(files, bundle.window, bundle.kingdom_conditioning)
            graph = work / f"{method}-{source}.onnx"
            write_int8(bundle.onnx_path("fp32"), graph, bundle.int8_weight_bits, feeds, method)
            candidate = work / f"bundle-{method}-{source}"
            bundle_with_int8(bundle, graph, candidate)
            session = Session(load_bundle(candidate), "cpu", "int8", args.threads)
            rows.append((changes(reference, predict_labelled(session, judged)), method, source))
            print(f"  {method:10s} {source:9s} type / site changes, mean |dp|: {rows[-1][0]}")
        print("\n| method | calibration | type changes | site changes | mean abs dp |")
        print("| --- | --- | ---: | ---: | ---: |")
        for (types, sites, prob), method, source in rows:
            print(f"| {method} | {source} | {types} | {sites} | {prob:.5f} |")
        best = min(rows, key=lambda row: row[0])
        print(f"chosen: {best[1]} on {best[2]}")
        if args.write:
            target = Path(args.write)
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(work / f"bundle-{best[1]}-{best[2]}", target)
            print(f"wrote {target}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
