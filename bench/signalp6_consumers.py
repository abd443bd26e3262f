"""Run real SignalP 6.0 consumers on PEFT-SP's files: funannotate's and predector-utils' parsers,
genometools' GFF3 validator, and funannotate's own `signalp6` call through `peftsp-signalp6`
linked as `signalp6`.

funannotate's SignalP 6 support is not in its last PyPI release (1.8.5) and predector-utils is
not on PyPI, so they are used from source checkouts, in a separate Python environment that has
their import-time dependencies. Nothing of them is copied into PEFT-SP. Setup used here:

    python3 -m venv /tmp/cvenv
    /tmp/cvenv/bin/pip install biopython numpy pandas natsort distro requests psutil packaging
    git clone https://github.com/nextgenusfs/funannotate /tmp/fsrc
    git clone https://github.com/ccdmb/predector-utils /tmp/psrc
    apt-get install genometools      # gt

    python bench/signalp6_consumers.py --fasta tests/data/mgenitalium.faa --workdir runs/consumers \
        --python /tmp/cvenv/bin/python --funannotate-src /tmp/fsrc --predector-src /tmp/psrc/src

For each organism mode (euk, other) it runs peftsp-signalp6, writes SignalP 6.0's documented
layout of the same predictions as a reference table (first line `# SignalP-6.0<TAB>Organism:
...<TAB>Timestamp: ...`), feeds both to each parser and prints whether the parsed results are
identical (or whether they fail identically: funannotate reads only eukarya tables, predector
expects eukarya's 4-5 columns, as with SignalP 6.0 itself). Exit status 1 if a consumer treats
our files differently from SignalP 6.0's layout of the same predictions.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FUNANNOTATE_PARSE = """
import sys, logging
import funannotate.library as lib
lib.log = logging.getLogger("funannotate")
lib.parseSignalP(sys.argv[1], sys.argv[2])
"""
FUNANNOTATE_RUN = """
import sys, logging
import funannotate.library as lib
lib.log = logging.getLogger("funannotate")
logging.basicConfig(level=logging.DEBUG)
lib.signalP6(sys.argv[1], sys.argv[2], sys.argv[3], 2)
lib.parseSignalP(sys.argv[3], sys.argv[4])
"""
PREDECTOR_PARSE = """
import sys, argparse
from predectorutils.subcommands import r2js
parser = argparse.ArgumentParser()
r2js.cli(parser)
r2js.runner(parser.parse_args(sys.argv[1:]))
"""
SIGNALP_NAMES = {
    "Other": "OTHER",
    "Signal Peptide (Sec/SPI)": "SP",
    "Lipoprotein signal peptide (Sec/SPII)": "LIPO",
    "Tat signal peptide (Tat/SPI)": "TAT",
    "Tat lipoprotein signal peptide (Tat/SPII)": "TATLIPO",
    "Pilin-like signal peptide (Sec/SPIII)": "PILIN",
}


def reference_table(directory: Path, organism: str) -> str:
    """SignalP 6.0's documented prediction_results.txt layout of the predictions in
    directory/output.json (written by peftsp-signalp6)."""
    sequences = json.loads((directory / "output.json").read_text())["SEQUENCES"]
    eukarya = organism == "euk"
    columns = ["OTHER", "SP(Sec/SPI)"]
    if not eukarya:
        columns += ["LIPO(Sec/SPII)", "TAT(Tat/SPI)", "TATLIPO(Tat/SPII)", "PILIN(Sec/SPIII)"]
    lines = [
        f"# SignalP-6.0\tOrganism: {'Eukarya' if eukarya else 'Other'}\tTimestamp: 20240212172549",
        "\t".join(["# ID", "Prediction", *columns, "CS Position"]),
    ]
    for key, entry in sequences.items():
        name = SIGNALP_NAMES[entry["Prediction"]]
        if eukarya and name == "OTHER":
            name = "NO_SP"
        cs = ""
        if entry["CS_pos"]:
            a, b = re.findall(r"\d+", entry["CS_pos"])
            cs = f"CS pos: {a}-{b}. Pr: {entry['CS_marginal']:.4f}"
        lines.append("\t".join([key, name, *(f"{v:.6f}" for v in entry["Likelihood"]), cs]))
    return "\n".join(lines) + "\n"


def run(command: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, env=env)


def report(name: str, ok: bool, detail: str) -> bool:
    print(f"{'OK  ' if ok else 'FAIL'} {name}: {detail}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fasta", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--model", default=None, help="PEFT-SP bundle (default: embedded)")
    parser.add_argument("--python", default=sys.executable, help="Python of the consumers")
    parser.add_argument("--funannotate-src", default=None, help="funannotate checkout")
    parser.add_argument("--predector-src", default=None, help="predector-utils src/ directory")
    args = parser.parse_args()

    work = Path(args.workdir)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    command = shutil.which("peftsp-signalp6")
    if command is None:
        sys.exit("peftsp-signalp6 is not on PATH (pip install -e .)")
    model = ["--peftsp_model", args.model] if args.model else []
    ok = True
    for organism in ("euk", "other"):
        out = work / organism
        result = run([command, "--fastafile", args.fasta, "--output_dir", str(out),
                      "--organism", organism, "--format", "none", "--quiet", *model])  # fmt: skip
        if result.returncode:
            sys.exit(result.stderr)
        ours = out / "prediction_results.txt"
        reference = work / f"reference_{organism}.txt"
        reference.write_text(reference_table(out, organism))
        rows = sum(1 for line in ours.read_text().splitlines() if not line.startswith("#"))
        print(f"\n== {organism}: {rows} proteins, {ours}")

        if shutil.which("gt"):
            for name in ("output.gff3", "region_output.gff3"):
                result = run(["gt", "gff3validator", "-typecheck", "so", str(out / name)])
                detail = (result.stdout + result.stderr).strip().splitlines()[-1]
                ok &= report(
                    f"gt gff3validator -typecheck so {name}", not result.returncode, detail
                )
        else:
            print("skip genometools: gt not on PATH")

        consumers = []
        if args.funannotate_src:
            consumers.append(("funannotate parseSignalP", args.funannotate_src, FUNANNOTATE_PARSE))
        if args.predector_src:
            consumers.append(("predector-utils r2js signalp6", args.predector_src, PREDECTOR_PARSE))
        for name, source, script in consumers:
            env = {**os.environ, "PYTHONPATH": source}
            results = {}
            for label, table in (("ours", ours), ("reference", reference)):
                target = work / f"{name.split()[0]}_{organism}_{label}.txt"
                if script is PREDECTOR_PARSE:
                    argv = ["signalp6", str(table), args.fasta, "-o", str(target)]
                else:
                    argv = [str(table), str(target)]
                result = run([args.python, "-c", script, *argv], env)
                error = result.stderr.strip().splitlines()[-1] if result.returncode else None
                results[label] = (error, None if error else target.read_text())
            (error, text), reference_result = results["ours"], results["reference"]
            if error is None:
                detail = f"{len(text.splitlines())} lines parsed from ours"
            else:
                detail = f"fails on ours ({error})"
            same = results["ours"] == reference_result
            detail += (
                "; the same as on SignalP 6.0's own layout"
                if same
                else (f"; on SignalP 6.0's own layout: {reference_result[0] or 'parsed'}")
            )
            ok &= report(name, same, detail)

    if args.funannotate_src:
        # funannotate's own SignalP 6 step, running `signalp6` from PATH: ours, linked.
        with tempfile.TemporaryDirectory(dir=work) as tmp:
            bin_dir = Path(tmp) / "bin"
            bin_dir.mkdir()
            (bin_dir / "signalp6").symlink_to(command)
            env = {**os.environ, "PYTHONPATH": args.funannotate_src,
                   "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}  # fmt: skip
            output = work / "funannotate_signalp.results.txt"
            notes = work / "funannotate_secreted.txt"
            result = run(
                [args.python, "-c", FUNANNOTATE_RUN, args.fasta, tmp, str(output), str(notes)], env
            )
            if result.returncode:
                detail = result.stderr.strip().splitlines()[-1]
            else:
                count = len(notes.read_text().splitlines())
                detail = f"ran signalp6 (PEFT-SP) itself; {count} SECRETED notes"
            ok &= report("funannotate signalP6 + parseSignalP", not result.returncode, detail)
    print("\nall consumers read our files" if ok else "\nsome consumer failed")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
