#!/usr/bin/env python
"""Sec/SPI accuracy of PEFT-SP beside DeepSig (the open peer) on a held-out SignalP 6.0 partition.

    python bench/peer_accuracy.py --data ../shared/data/signalp6/train_set.fasta --partition 0

For Eukarya, Gram-negative and Gram-positive records of the partition it runs DeepSig
(`-k euk|gramn|gramp`, built by ../shared/peers/deepsig/setup.sh) and `peftsp predict
--organism eukarya|gram_negative|gram_positive` (a model bundle, default the embedded model) on
the same sequences, and prints Sec/SPI MCC1 and MCC2 per kingdom side by side (SignalP 6.0
definitions, peftsp.metrics.compute_metrics: MCC2 over all records of the kingdom, truth
type == SP vs prediction type == SP; MCC1 over the records whose true type is SP or NO_SP),
Sec/SPI cleavage-site recall/precision, and how each tool calls the records of every true type.

DeepSig predicts SP vs no SP only: its "Signal peptide" calls count as Sec/SPI, so its calls on
lipoproteins and Tat SPs are Sec/SPI false positives in MCC2 (MCC1 leaves those records out).
DeepSig's outputs are cached in --workdir, keyed by input and DeepSig build; PEFT-SP is always
rerun (the model changes).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
from pathlib import Path

from peer_common import (
    SHARED,
    TYPE_NAMES,
    check_ran,
    deepsig_argv,
    deepsig_environment,
    deepsig_identity,
    file_sha256,
    pass_through,
    peftsp_argv,
    print_commands,
    read_deepsig,
    read_peftsp,
    run_measured,
    show_command,
    table,
)

from peftsp.fasta import read_labelled_list
from peftsp.metrics import compute_metrics

# SignalP 6.0 kingdom -> (DeepSig -k, peftsp --organism)
KINGDOMS = {
    "EUKARYA": ("euk", "eukarya"),
    "NEGATIVE": ("gramn", "gram_negative"),
    "POSITIVE": ("gramp", "gram_positive"),
}
KINGDOM_NAMES = {"EUKARYA": "Eukarya", "NEGATIVE": "Gram-negative", "POSITIVE": "Gram-positive"}
SP_LETTERS = set("SLTP")  # SP residues of SP, LIPO, TAT/TATLIPO, PILIN in the labels


def true_cs(labels: str, sp_type: str) -> int | None:
    """The true cleavage site (SP length) from the per-residue labels."""
    if sp_type == "NO_SP":
        return None
    ends = [i for i, c in enumerate(labels) if c in SP_LETTERS]
    return ends[-1] + 1 if ends else None


def shown(value: float | None) -> str:
    """Three decimals; n/a where the cell does not exist or is undefined (no positives)."""
    return "n/a" if value is None or math.isnan(value) else f"{value:.3f}"


def cached_deepsig(env, fasta: Path, kingdom: str, out: Path, identity: str) -> tuple[bool, str]:
    """Run DeepSig unless `out` holds the result for this input and build. (cached?, command)"""
    key = {"fasta_sha256": file_sha256(fasta), "kingdom": kingdom, "deepsig": identity}
    stamp = out.with_suffix(".key.json")
    argv = deepsig_argv(fasta, kingdom, out)
    command = show_command(argv, "DEEPSIG_ROOT=" + env["DEEPSIG_ROOT"])
    if out.exists() and stamp.exists() and json.loads(stamp.read_text()) == key:
        return True, command
    stamp.unlink(missing_ok=True)  # an interrupted run leaves no valid cache
    stats = run_measured(argv, out.with_suffix(".log"), env)
    check_ran(stats, argv, out.with_suffix(".log"))
    stamp.write_text(json.dumps(key, sort_keys=True) + "\n")
    return False, command


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", default=str(SHARED / "data/signalp6/train_set.fasta"), help="%(default)s"
    )
    parser.add_argument("--partition", type=int, default=0, help="held-out partition (%(default)s)")
    parser.add_argument("--model", default=None, help="PEFT-SP bundle (default: embedded model)")
    parser.add_argument(
        "--workdir", default="runs/peer_accuracy", help="inputs, outputs, DeepSig cache"
    )
    parser.add_argument("--deepsig-dir", default=None, help="where setup.sh builds DeepSig")
    parser.add_argument("--kingdoms", nargs="+", default=list(KINGDOMS), choices=list(KINGDOMS))
    parser.add_argument("--precision", default=None, help="passed to peftsp predict")
    parser.add_argument("--batch-size", type=int, default=None, help="passed to peftsp predict")
    parser.add_argument("--threads", type=int, default=None, help="passed to peftsp predict")
    parser.add_argument("--device", default=None, help="passed to peftsp predict")
    parser.add_argument(
        "--json",
        default=None,
        help="also write DeepSig's Sec/SPI MCC1 per kingdom here (bench/default_model.py "
        "--deepsig reads it)",
    )
    args = parser.parse_args()

    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    records = [r for r in read_labelled_list(args.data) if r.partition == args.partition]
    options = pass_through(args, ("precision", "batch-size", "threads", "device"))
    if args.model:
        options += ["--model", args.model]
    env = deepsig_environment(dest=args.deepsig_dir)
    identity = deepsig_identity(env)

    rows_k, rows_true, rows_cs = [], [], []
    deep_types, deep_cs, ours_types, ours_cs = [], [], [], []
    commands = []
    for kingdom in args.kingdoms:
        peer_kingdom, organism = KINGDOMS[kingdom]
        chosen = [r for r in records if r.kingdom == kingdom]
        if not chosen:
            print(f"note: no {kingdom} record in partition {args.partition}")
            continue
        fasta = workdir / f"partition{args.partition}_{kingdom}.faa"
        text = "".join(f">{r.accession}\n{r.sequence}\n" for r in chosen)
        if not fasta.exists() or fasta.read_text() != text:
            fasta.write_text(text)

        cached, command = cached_deepsig(
            env, fasta, peer_kingdom, workdir / f"deepsig_{fasta.stem}.gff", identity
        )
        commands.append(command + ("   (cached: same input and DeepSig build)" if cached else ""))
        peer = read_deepsig(workdir / f"deepsig_{fasta.stem}.gff")

        outdir = workdir / f"peftsp_{fasta.stem}"
        shutil.rmtree(outdir, ignore_errors=True)
        argv = peftsp_argv(fasta, outdir, organism, [*options, "--quiet"])
        stats = run_measured(argv, workdir / f"peftsp_{fasta.stem}.log")
        check_ran(stats, argv, workdir / f"peftsp_{fasta.stem}.log")
        commands.append(show_command(argv))
        ours = {c.id: c for c in read_peftsp(outdir)}

        missing = [
            r.accession for r in chosen if r.accession not in peer or r.accession not in ours
        ]
        if missing:
            raise SystemExit(
                f"{len(missing)} {kingdom} records missing from an output: {missing[:5]}"
            )
        for r in chosen:
            rows_k.append(kingdom)
            rows_true.append(r.sp_type)
            rows_cs.append(true_cs(r.labels, r.sp_type))
            p = peer[r.accession]
            deep_types.append("SP" if p.is_sp else "NO_SP")
            deep_cs.append(p.cs if p.is_sp else None)
            ours_types.append(ours[r.accession].sp_type)
            ours_cs.append(ours[r.accession].cs)

    deep = compute_metrics(rows_k, rows_true, deep_types, rows_cs, deep_cs)
    mine = compute_metrics(rows_k, rows_true, ours_types, rows_cs, ours_cs)
    model = args.model or "embedded default model"
    print(f"SignalP 6.0 benchmark {args.data}, partition {args.partition}; PEFT-SP: {model}")
    print()
    print("Sec/SPI (DeepSig: every 'Signal peptide' call counts as Sec/SPI)")
    rows = []
    for kingdom in dict.fromkeys(rows_k):
        n = rows_k.count(kingdom)
        n_sp = sum(1 for k, t in zip(rows_k, rows_true, strict=True) if k == kingdom and t == "SP")
        cell = f"{kingdom}_SP_"
        rows.append([
            KINGDOM_NAMES[kingdom], n, n_sp,
            *(shown(m.get(cell + "mcc1")) for m in (deep, mine)),
            *(shown(m.get(cell + "mcc2")) for m in (deep, mine)),
        ])  # fmt: skip
    headers = ["kingdom", "records", "true Sec/SPI", "MCC1 DeepSig", "MCC1 PEFT-SP"]
    print(table([*headers, "MCC2 DeepSig", "MCC2 PEFT-SP"], rows))
    if args.json:
        peer_mcc1 = {k: deep[f"{k}_SP_mcc1"] for k in dict.fromkeys(rows_k)}
        Path(args.json).write_text(json.dumps(peer_mcc1, indent=1) + "\n")
    print()
    print("Sec/SPI cleavage site: recall / precision at tolerance 0 and 3 residues")
    rows = []
    for kingdom in dict.fromkeys(rows_k):
        cell = f"{kingdom}_SP_"
        line = [KINGDOM_NAMES[kingdom]]
        for m in (deep, mine):
            for w in (0, 3):
                r, p = m.get(f"{cell}recall_window_{w}"), m.get(f"{cell}precision_window_{w}")
                line.append(f"{shown(r)} / {shown(p)}")
        rows.append(line)
    headers = ["kingdom", "DeepSig w=0", "DeepSig w=3", "PEFT-SP w=0", "PEFT-SP w=3"]
    print(table(headers, rows))
    print()
    print("Calls per true type: share called SP by DeepSig; PEFT-SP's Sec/SPI and any-SP shares")
    rows = []
    for kingdom in dict.fromkeys(rows_k):
        for sp_type in TYPE_NAMES:
            idx = [
                i
                for i, (k, t) in enumerate(zip(rows_k, rows_true, strict=True))
                if k == kingdom and t == sp_type
            ]
            if not idx:
                continue
            n = len(idx)
            d_sp = sum(deep_types[i] == "SP" for i in idx) / n
            o_sp = sum(ours_types[i] == "SP" for i in idx) / n
            o_any = sum(ours_types[i] != "NO_SP" for i in idx) / n
            same = sum(ours_types[i] == sp_type for i in idx) / n
            rows.append([
                KINGDOM_NAMES[kingdom], TYPE_NAMES[sp_type], n,
                f"{d_sp:.3f}", f"{o_sp:.3f}", f"{o_any:.3f}", f"{same:.3f}",
            ])  # fmt: skip
    headers = ["kingdom", "true type", "records", "DeepSig SP", "PEFT-SP Sec/SPI"]
    headers += ["PEFT-SP any SP", "PEFT-SP same type"]
    print(table(headers, rows, align="llrrrrr"))
    print_commands(commands)


if __name__ == "__main__":
    main()
