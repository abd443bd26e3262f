#!/usr/bin/env python
"""Biological sanity of a PEFT-SP model on real proteomes: counts per SP type, motif checks and
literature ranges.

    python bench/proteome_sanity.py --proteomes ../shared/data/proteomes

Runs `peftsp predict` (a model bundle, default the embedded model) on every proteome of the
folder with the organism group its species calls for (ORGANISMS below; a file whose name is not
there is an error, never a guess; --organism NAME=GROUP adds one), always afresh (nothing is
cached: the model changes), and prints per proteome: proteins, calls per SP type, lipoprotein
calls (Sec/SPII, Tat/SPII) without Cys right after the cleavage site, Tat calls (Tat/SPI,
Tat/SPII) whose predicted SP (residues 1..CS) has no [RK]R, SP-length outliers (< 10 or > 45
residues, per type), the share of SP calls with type probability > 0.9 and their median type
probability. Then PASS/FAIL lines: E. coli K-12, B. subtilis and M. genitalium against
literature ranges, Cys at +1 of every lipoprotein call, [RK]R in >= 90% of Tat calls, textbook
cytoplasmic E. coli proteins without an SP and textbook exported ones with the right type.
Always exits 0 (a report), except for a usage error or a failed `peftsp predict`.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import tempfile
from collections import Counter
from pathlib import Path

from peer_common import (
    SHARED,
    TYPE_NAMES,
    check_ran,
    pass_through,
    peftsp_argv,
    print_commands,
    read_fasta,
    read_peftsp,
    run_measured,
    show_command,
    table,
)

GROUPS = ("eukarya", "gram_positive", "gram_negative", "archaea")
# File name without ".faa" / "_proteins" -> (organism group, species, why).
# SignalP's bacterial groups follow the cell envelope: monoderm Firmicutes and Actinobacteria
# are Gram-positive (mycolic-acid Actinobacteria included); diderms with an outer membrane are
# Gram-negative whatever their stain; Mollicutes (no wall) are run as Gram-positive, as
# SignalP users do for these Firmicutes relatives.
ORGANISMS: dict[str, tuple[str, str, str]] = {
    "baphidicola": ("gram_negative", "Buchnera aphidicola", "Gammaproteobacteria, diderm"),
    "bsubtilis": ("gram_positive", "Bacillus subtilis 168", "Firmicutes, monoderm"),
    "cglutamicum": ("gram_positive", "Corynebacterium glutamicum", "Actinobacteria"),
    "dradiodurans": (
        "gram_negative", "Deinococcus radiodurans",
        "Deinococcota: stains Gram+, but has an outer membrane (diderm)",
    ),
    "ecoli": ("gram_negative", "Escherichia coli K-12 MG1655", "Gammaproteobacteria"),
    "hvolcanii": ("archaea", "Haloferax volcanii", "Euryarchaeota (halophile)"),
    "mgenitalium": (
        "gram_positive", "Mycoplasma genitalium", "Mollicutes, no cell wall: run as Gram+",
    ),
    "mjannaschii": ("archaea", "Methanocaldococcus jannaschii", "Euryarchaeota"),
    "mtuberculosis": ("gram_positive", "Mycobacterium tuberculosis H37Rv", "Actinobacteria"),
    "paeruginosa": ("gram_negative", "Pseudomonas aeruginosa PAO1", "Gammaproteobacteria"),
    "pfalciparum": ("eukarya", "Plasmodium falciparum 3D7", "Apicomplexa"),
    "psyntrophicum": (
        "archaea", "Ca. Prometheoarchaeum syntrophicum MK-D1", "Asgard archaeon",
    ),
    "sacidocaldarius": ("archaea", "Sulfolobus acidocaldarius", "Crenarchaeota"),
    "sruminantium": (
        "gram_negative", "Selenomonas ruminantium",
        "Negativicutes: Firmicutes with an outer membrane, Gram-",
    ),
    "sspeciespcc6803": ("gram_negative", "Synechocystis sp. PCC 6803", "Cyanobacteria, diderm"),
    "tmaritima": ("gram_negative", "Thermotoga maritima", "Thermotogota: outer 'toga', Gram-"),
    "tthermophilus": ("gram_negative", "Thermus thermophilus", "Deinococcota, Gram-, diderm"),
    "tvolcanium": ("archaea", "Thermoplasma volcanium", "Euryarchaeota (no cell wall)"),
}  # fmt: skip

SHOWN_TYPES = ("SP", "LIPO", "TAT", "TATLIPO", "PILIN")
LIPO_TYPES = ("LIPO", "TATLIPO")
TAT_TYPES = ("TAT", "TATLIPO")
TAT_MOTIF = re.compile(r"[RK]R")
SHORT, LONG = 10, 45  # SP length outliers: < SHORT or > LONG residues
WINDOW = 70  # residues the model reads; a Tat call without a CS is searched there

# Literature ranges (E. coli K-12, B. subtilis 168, M. genitalium G37): (name, types, lo, hi)
RANGES = {
    "ecoli": [
        ("Sec/SPI", ("SP",), 300, 520),
        ("Sec/SPII", ("LIPO",), 70, 130),
        ("Tat (Tat/SPI + Tat/SPII)", TAT_TYPES, 20, 45),
    ],
    "bsubtilis": [("Tat (Tat/SPI + Tat/SPII)", TAT_TYPES, 0, 12)],
    "mgenitalium": [("Tat (Tat/SPI + Tat/SPII), no Tat pathway", TAT_TYPES, 0, 0)],
}
MOTIF_SHARE = 0.90  # Tat calls carrying [RK]R

# Textbook E. coli K-12 proteins, looked up by their RefSeq product name in the FASTA headers.
CYTOPLASMIC = {
    "trxB": "thioredoxin reductase",
    "pyrG": "CTP synthetase",
    "rplT": "50S ribosomal subunit protein L20",
    "rpmH": "50S ribosomal subunit protein L34",
    "malT": "DNA-binding transcriptional activator MalT",
    "murD": "UDP-N-acetylmuramoyl-L-alanine--D-glutamate ligase",
    "gapA": "glyceraldehyde-3-phosphate dehydrogenase A",
    "eno": "enolase",
    "rpoB": "RNA polymerase subunit beta",
    "dnaK": "chaperone protein DnaK",
    "groL": "chaperonin GroEL",
    "tufA": "translation elongation factor Tu 1",
    "trxA": "thioredoxin 1",
    "recA": "DNA recombination/repair protein RecA",
    "lacZ": "beta-galactosidase",
    "lacI": "DNA-binding transcriptional repressor LacI",
    "adk": "adenylate kinase",
    "rpsA": "30S ribosomal subunit protein S1",
    "icd": "isocitrate dehydrogenase",
    "gyrA": "DNA gyrase subunit A",
}
EXPORTED = {  # gene: (product, expected type)
    "ompA": ("outer membrane porin A", "SP"),
    "malE": ("maltose ABC transporter periplasmic binding protein", "SP"),
    "phoA": ("alkaline phosphatase", "SP"),
    "lpp": ("murein lipoprotein", "LIPO"),
    "bamB": ("outer membrane protein assembly factor BamB", "LIPO"),
    "torA": ("trimethylamine N-oxide reductase 1", "TAT"),
    "cueO": ("cuprous oxidase/multicopper oxidase with role in copper homeostasis", "TAT"),
    "amiA": ("N-acetylmuramoyl-L-alanine amidase A", "TAT"),
    "amiC": ("N-acetylmuramoyl-L-alanine amidase C", "TAT"),
}


def proteome_name(path: Path) -> str:
    return path.name.split(".")[0].removesuffix("_proteins")


def product(description: str) -> str:
    """RefSeq header 'ID product [organism]' -> product."""
    words = description.split(None, 1)
    text = words[1] if len(words) > 1 else ""
    return re.sub(r"\s*\[[^\]]*\]\s*$", "", text).strip()


def percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "n/a"


class Checks:
    def __init__(self) -> None:
        self.passed = self.failed = self.skipped = 0

    def report(self, ok: bool | None, text: str) -> None:
        status = {True: "PASS", False: "FAIL", None: "SKIP"}[ok]
        if ok is None:
            self.skipped += 1
        elif ok:
            self.passed += 1
        else:
            self.failed += 1
        print(f"{status}  {text}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--proteomes", default=str(SHARED / "data/proteomes"), help="folder of .faa files"
    )
    parser.add_argument("--only", nargs="+", default=None, help="proteome names to run")
    parser.add_argument(
        "--organism",
        action="append",
        default=[],
        metavar="NAME=GROUP",
        help=f"organism group of a proteome not in the built-in map; GROUP in {GROUPS}",
    )
    parser.add_argument("--model", default=None, help="PEFT-SP bundle (default: embedded model)")
    parser.add_argument("--precision", default=None, help="passed to peftsp predict")
    parser.add_argument("--batch-size", type=int, default=None, help="passed to peftsp predict")
    parser.add_argument("--threads", type=int, default=None, help="passed to peftsp predict")
    parser.add_argument("--device", default=None, help="passed to peftsp predict")
    parser.add_argument(
        "--prior", choices=("proteome", "training"), default=None, help="passed to peftsp predict"
    )
    parser.add_argument("--workdir", default=None, help="keep outputs here (default: temporary)")
    args = parser.parse_args()

    organisms = {name: group for name, (group, _, _) in ORGANISMS.items()}
    for item in args.organism:
        name, _, group = item.partition("=")
        if group not in GROUPS:
            parser.error(f"--organism {item}: GROUP must be one of {GROUPS}")
        organisms[name] = group
    files = sorted(p for p in Path(args.proteomes).iterdir() if p.suffix in (".faa", ".fasta"))
    if args.only:
        files = [f for f in files if proteome_name(f) in args.only]
    if not files:
        parser.error(f"no proteome (.faa) to run in {args.proteomes}")
    unknown = [f.name for f in files if proteome_name(f) not in organisms]
    if unknown:
        parser.error(
            "no organism group for " + ", ".join(unknown) + ": decide it from the species and "
            "pass --organism NAME=GROUP (or add it to ORGANISMS)"
        )

    print("organism groups:")
    rows = []
    for f in files:
        name = proteome_name(f)
        _, species, why = ORGANISMS.get(name, ("", "(given on the command line)", ""))
        rows.append([name, f.name, species, organisms[name], why])
    print(table(["proteome", "file", "species", "group", "why"], rows, align="lllll"))
    print()

    options = pass_through(args, ("model", "precision", "batch-size", "threads", "device", "prior"))
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="proteome_sanity_")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    commands: list[str] = []
    results: dict[str, dict] = {}
    headers_of: dict[str, list[tuple[str, str, str]]] = {}
    try:
        for f in files:
            name = proteome_name(f)
            outdir = workdir / name
            shutil.rmtree(outdir, ignore_errors=True)
            argv = peftsp_argv(f.resolve(), outdir, organisms[name], [*options, "--quiet"])
            stats = run_measured(argv, workdir / f"{name}.log")
            check_ran(stats, argv, workdir / f"{name}.log")
            commands.append(show_command(argv))
            records = read_fasta(f)
            headers_of[name] = records
            calls = read_peftsp(outdir)
            if [c.id for c in calls] != [r[0] for r in records]:
                raise SystemExit(f"{f}: the output's IDs differ from the input's")
            sequences = {r[0]: r[2] for r in records}
            results[name] = summarise(calls, sequences)
            results[name]["wall_s"] = stats.wall_s
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)

    model = args.model or "embedded default model"
    print(f"per proteome ({model}; {' '.join(options) or 'shipped defaults'}):")
    rows = []
    for f in files:
        name = proteome_name(f)
        r = results[name]
        rows.append([
            name, organisms[name], r["proteins"], *(r["counts"][t] for t in SHOWN_TYPES),
            f"{r['lipo_no_cys']}/{r['lipo']}", f"{r['tat_no_motif']}/{r['tat']}",
            r["short"], r["long"], r["no_cs"], percent(r["confident"], r["sp"]),
            "n/a" if r["median_p"] is None else f"{r['median_p']:.3f}",
        ])  # fmt: skip
    headers = ["proteome", "group", "proteins", *(TYPE_NAMES[t] for t in SHOWN_TYPES)]
    headers += ["lipo no C+1", "Tat no [RK]R", f"SP<{SHORT}", f"SP>{LONG}", "no CS"]
    headers += ["p>0.9", "median p"]
    print(table(headers, rows, align="ll" + "r" * (len(headers) - 2)))
    print(
        "lipo no C+1: lipoprotein calls (Sec/SPII, Tat/SPII) whose residue after the CS is not "
        "Cys (a call without CS counts); Tat no [RK]R: Tat calls with no [RK]R in residues 1..CS "
        f"(1..{WINDOW} without CS); SP</>: SP calls of that length; no CS: SP-type calls "
        "without a cleavage site; p: type probability of SP calls"
    )
    print()
    print(f"SP-length outliers per type (SP < {SHORT} / SP > {LONG} residues):")
    rows = []
    for f in files:
        r = results[proteome_name(f)]
        if r["short"] or r["long"]:
            cells = [f"{r['short_by'][t]}/{r['long_by'][t]}" for t in SHOWN_TYPES]
            rows.append([proteome_name(f), *cells])
    if rows:
        print(table(["proteome", *(TYPE_NAMES[t] for t in SHOWN_TYPES)], rows))
    else:
        print("none")
    total = sum(r["proteins"] for r in results.values())
    wall = sum(r["wall_s"] for r in results.values())
    print(f"{len(files)} proteomes, {total} proteins, {wall:.0f} s of `peftsp predict` wall time")
    print()

    checks = Checks()
    print("literature ranges:")
    for name, ranges in RANGES.items():
        for label, types, lo, hi in ranges:
            if name not in results:
                checks.report(None, f"{name} {label}: proteome not run")
                continue
            n = sum(results[name]["counts"][t] for t in types)
            wanted = f"= {lo}" if lo == hi else (f"<= {hi}" if lo == 0 else f"in {lo}-{hi}")
            checks.report(lo <= n <= hi, f"{ORGANISMS[name][1]} {label}: {n} (expected {wanted})")
    print()
    print("motifs (all proteomes run):")
    lipo = sum(r["lipo"] for r in results.values())
    bad = sum(r["lipo_no_cys"] for r in results.values())
    checks.report(bad == 0, f"lipoprotein calls with Cys at +1: {lipo - bad}/{lipo} (want all)")
    tat = sum(r["tat"] for r in results.values())
    motif = tat - sum(r["tat_no_motif"] for r in results.values())
    checks.report(
        tat == 0 or motif >= MOTIF_SHARE * tat,
        f"Tat calls with [RK]R in the SP: {motif}/{tat} = {percent(motif, tat)} "
        f"(want >= {MOTIF_SHARE:.0%})",
    )
    for name in RANGES:
        if name not in results:
            continue
        r = results[name]
        checks.report(
            r["lipo_no_cys"] == 0,
            f"{ORGANISMS[name][1]}: lipoprotein calls with Cys at +1 "
            f"{r['lipo'] - r['lipo_no_cys']}/{r['lipo']}",
        )
        checks.report(
            r["tat"] == 0 or r["tat"] - r["tat_no_motif"] >= MOTIF_SHARE * r["tat"],
            f"{ORGANISMS[name][1]}: Tat calls with [RK]R {r['tat'] - r['tat_no_motif']}/{r['tat']}",
        )
    print()
    print("textbook E. coli K-12 proteins:")
    if "ecoli" not in results:
        checks.report(None, "E. coli proteome not run")
    else:
        r = results["ecoli"]
        products: dict[str, list[str]] = {}
        for ident, description, _ in headers_of["ecoli"]:
            products.setdefault(product(description).lower(), []).append(ident)
        wanted = [(gene, name, "NO_SP") for gene, name in CYTOPLASMIC.items()]
        wanted += [(gene, name, t) for gene, (name, t) in EXPORTED.items()]
        for gene, name, expected in wanted:
            ids = products.get(name.lower(), [])
            if len(ids) != 1:
                checks.report(False, f"{gene} ({name}): {len(ids)} headers carry this product")
                continue
            call = r["calls"][ids[0]]
            got = TYPE_NAMES[call.sp_type]
            cs = "" if call.cs is None else f", CS {call.cs}"
            kind = "cytoplasmic" if expected == "NO_SP" else "exported"
            checks.report(
                call.sp_type == expected,
                f"{gene:<5} {ids[0]:<13} {kind}, want {TYPE_NAMES[expected]}: "
                f"{got} (p {call.probability:.3f}{cs}) - {name}",
            )
    print()
    print(f"checks: {checks.passed} PASS, {checks.failed} FAIL, {checks.skipped} SKIP")
    print_commands(commands)


def summarise(calls, sequences: dict[str, str]) -> dict:
    """The per-proteome figures of the table."""
    counts = Counter(c.sp_type for c in calls)
    sp_calls = [c for c in calls if c.sp_type != "NO_SP"]
    short_by: Counter[str] = Counter()
    long_by: Counter[str] = Counter()
    lipo_no_cys = tat_no_motif = no_cs = 0
    for c in sp_calls:
        sequence = c.sequence or sequences[c.id]
        if c.cs is None:
            no_cs += 1
        else:
            short_by[c.sp_type] += c.cs < SHORT
            long_by[c.sp_type] += c.cs > LONG
        if c.sp_type in LIPO_TYPES and (c.cs is None or sequence[c.cs : c.cs + 1] != "C"):
            lipo_no_cys += 1
        if c.sp_type in TAT_TYPES:
            signal = sequence[: WINDOW if c.cs is None else c.cs]
            tat_no_motif += not TAT_MOTIF.search(signal)
    probabilities = [c.probability for c in sp_calls]
    return {
        "proteins": len(calls),
        "counts": {t: counts[t] for t in SHOWN_TYPES},
        "sp": len(sp_calls),
        "lipo": sum(counts[t] for t in LIPO_TYPES),
        "lipo_no_cys": lipo_no_cys,
        "tat": sum(counts[t] for t in TAT_TYPES),
        "tat_no_motif": tat_no_motif,
        "short": sum(short_by.values()),
        "long": sum(long_by.values()),
        "short_by": short_by,
        "long_by": long_by,
        "no_cs": no_cs,
        "confident": sum(p > 0.9 for p in probabilities),
        "median_p": statistics.median(probabilities) if probabilities else None,
        "calls": {c.id: c for c in calls},
    }


if __name__ == "__main__":
    main()
