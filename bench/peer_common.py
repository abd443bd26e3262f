"""Shared pieces of the peer benches (peer_accuracy.py, peer_speed.py, proteome_sanity.py).

Not a bench itself. The benches talk to PEFT-SP only through its CLI (`python -m peftsp.cli
predict`, in a child process) and its output files (output.json, else prediction_results.txt),
and to DeepSig (the open peer) through its own CLI, built by ../shared/peers/deepsig/setup.sh.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from peftsp.grammar import SP_TYPES, TYPE_NAMES

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DEEPSIG_SETUP = SHARED / "peers" / "deepsig" / "setup.sh"
# prediction_results.txt spells NO_SP as OTHER (SignalP 6.0 style)
_TXT_TYPES = {"OTHER": "NO_SP", **{t: t for t in SP_TYPES}}


# ---------------------------------------------------------------------------------------------
# Printing


def table(headers: list[str], rows: list[list[object]], align: str | None = None) -> str:
    """A pipe table (Markdown), columns padded; `align` is one l/r per column (default: first
    column left, the others right)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    align = align or "l" + "r" * (len(headers) - 1)
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        padded = [
            c.ljust(w) if a == "l" else c.rjust(w)
            for c, w, a in zip(row, widths, align, strict=True)
        ]
        return "| " + " | ".join(padded) + " |"

    dashes = [
        "-" * (w + 1) + ":" if a == "r" else "-" * (w + 2)
        for w, a in zip(widths, align, strict=True)
    ]
    rule = "|" + "|".join(dashes) + "|"
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


def show_command(argv: list[str], env_note: str = "") -> str:
    return (env_note + " " if env_note else "") + shlex.join(str(a) for a in argv)


# ---------------------------------------------------------------------------------------------
# Child processes: wall time, CPU time and peak RSS of one child (and the children it waited for)


@dataclass
class RunStats:
    wall_s: float
    user_s: float
    sys_s: float
    max_rss_mib: float
    returncode: int


def run_measured(argv: list[str], log: Path, env: dict[str, str] | None = None) -> RunStats:
    """Run argv with stdout+stderr into `log`; measure it with os.wait4 on that very child, so
    the figures are its own (not the maximum over every child this process ever had)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        start = time.perf_counter()
        child = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)  # keep Popen from waiting again
    return RunStats(wall, usage.ru_utime, usage.ru_stime, usage.ru_maxrss / 1024, child.returncode)


def check_ran(stats: RunStats, argv: list[str], log: Path) -> None:
    if stats.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-15:]
        sys.exit(
            f"command failed (exit {stats.returncode}): {show_command(argv)}\n"
            f"last lines of {log}:\n" + "\n".join(tail)
        )


# ---------------------------------------------------------------------------------------------
# DeepSig


def deepsig_environment(setup: Path = DEEPSIG_SETUP, dest: str | None = None) -> dict[str, str]:
    """Build DeepSig once with its setup script (a no-op when built) and return the environment
    it asks for (DEEPSIG_ROOT, PATH), on top of ours."""
    argv = ["bash", str(setup)] + ([dest] if dest else [])
    done = subprocess.run(argv, check=True, capture_output=True, text=True)
    env = dict(os.environ)
    for line in done.stdout.splitlines():
        match = re.fullmatch(r"export ([A-Z_]+)=(.*)", line.strip())
        if not match:
            continue
        name, value = match.groups()
        env[name] = value.replace("$PATH", os.environ.get("PATH", ""))
    if "DEEPSIG_ROOT" not in env:
        sys.exit(f"{setup} printed no DEEPSIG_ROOT:\n{done.stdout}")
    return env


def deepsig_identity(env: dict[str, str]) -> str:
    """What determines DeepSig's output here: its setup script and the models it reads."""
    h = hashlib.sha256(DEEPSIG_SETUP.read_bytes())
    root = Path(env["DEEPSIG_ROOT"])
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode())
        h.update(str(path.stat().st_size).encode())
    return h.hexdigest()


def deepsig_argv(fasta: Path, kingdom: str, out: Path) -> list[str]:
    return ["deepsig", "-f", str(fasta), "-k", kingdom, "-o", str(out)]


@dataclass
class PeerCall:
    is_sp: bool
    cs: int | None  # SP length (last SP residue, 1-based)
    score: float | None


def read_deepsig(path: Path) -> dict[str, PeerCall]:
    """DeepSig's default output: a GFF-like table without a header, one `Signal peptide` row
    (1..CS, score) plus a `Chain` row per protein with an SP, one `Chain` row otherwise."""
    calls: dict[str, PeerCall] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        cols = line.split("\t")
        if len(cols) != 9:
            sys.exit(f"{path}:{number}: expected 9 tab-separated columns, got {len(cols)}")
        ident, _, feature, start, end, score = cols[:6]
        call = calls.setdefault(ident, PeerCall(False, None, None))
        if feature == "Signal peptide":
            if call.is_sp:
                sys.exit(f"{path}:{number}: a second signal peptide for {ident}")
            call.is_sp, call.cs = True, int(end)
            call.score = None if score == "." else float(score)
            if int(start) != 1:
                sys.exit(f"{path}:{number}: signal peptide not starting at 1")
        elif feature != "Chain":
            sys.exit(f"{path}:{number}: unknown feature {feature!r}")
    return calls


# ---------------------------------------------------------------------------------------------
# PEFT-SP through its CLI


def peftsp_argv(fasta: Path, outdir: Path, organism: str, options: list[str]) -> list[str]:
    argv = [sys.executable, "-m", "peftsp.cli", "predict", "--fasta", str(fasta)]
    return [*argv, "--outdir", str(outdir), "--organism", organism, *options]


def pass_through(args, names: tuple[str, ...]) -> list[str]:
    """CLI options given on our command line, for `peftsp predict` (absent = its default)."""
    options: list[str] = []
    for name in names:
        value = getattr(args, name.replace("-", "_"), None)
        if value is not None:
            options += [f"--{name}", str(value)]
    return options


@dataclass
class Call:
    id: str
    sp_type: str  # one of SP_TYPES
    probability: float  # of the predicted type
    cs: int | None  # SP length
    sequence: str | None  # as PEFT-SP read it (cleaned), when output.json has it


def read_peftsp(outdir: Path) -> list[Call]:
    """Predictions of one `peftsp predict` run in input order: output.json, else the
    SignalP 6.0-style prediction_results.txt."""
    path = outdir / "output.json"
    if path.exists():
        data = json.loads(path.read_text())
        rows = data.get("predictions") if isinstance(data, dict) else None
        if isinstance(rows, list) and all(_json_usable(r) for r in rows):
            return [_json_call(r) for r in rows]
    return _read_txt(outdir / "prediction_results.txt")


def _json_type(row: dict) -> str | None:
    for key in ("prediction", "sp_type"):
        value = row.get(key)
        if value in _TXT_TYPES:
            return _TXT_TYPES[value]
    return None


def _json_usable(row: object) -> bool:
    return (
        isinstance(row, dict)
        and "id" in row
        and _json_type(row) is not None
        and isinstance(row.get("probabilities"), dict)
    )


def _json_call(row: dict) -> Call:
    sp_type = _json_type(row)
    assert sp_type is not None
    probabilities = row["probabilities"]
    probability = probabilities.get(sp_type, probabilities.get(TYPE_NAMES[sp_type]))
    cs = row.get("cs")
    cs = None if cs is None else int(cs)
    return Call(row["id"], sp_type, float(probability), cs, row.get("sequence"))


_CS = re.compile(r"CS pos: (\d+)-(\d+)")


def _read_txt(path: Path) -> list[Call]:
    calls: list[Call] = []
    index: dict[str, int] = {}  # "OTHER", "SP", "LIPO", ... -> column
    for line in path.read_text().splitlines():
        if line.startswith("# ID"):
            index = {name.split("(")[0]: i for i, name in enumerate(line[2:].split("\t"))}
            continue
        if line.startswith("#") or not line.strip():
            continue
        cols = line.split("\t")
        sp_type = _TXT_TYPES[cols[1]]
        probability = float(cols[index["OTHER" if sp_type == "NO_SP" else sp_type]])
        match = _CS.search(line)
        cs = int(match.group(1)) if match else None
        calls.append(Call(cols[0], sp_type, probability, cs, None))
    return calls


def read_fasta(path: Path) -> list[tuple[str, str, str]]:
    """(ID = first word, description, upper-case sequence) of a plain FASTA file."""
    records: list[tuple[str, str, list[str]]] = []
    with open(path) as handle:
        for line in handle:
            line = line.rstrip("\r\n")
            if line.startswith(">"):
                words = line[1:].split(None, 1)
                records.append((words[0] if words else "", line[1:], []))
            elif records:
                records[-1][2].append(re.sub(r"[\s.-]", "", line).upper())
    # as peftsp cleans: gaps and whitespace dropped, a terminal '*' removed, an internal one X
    return [(i, d, "".join(s).removesuffix("*").replace("*", "X")) for i, d, s in records]


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def print_commands(commands: list[str]) -> None:
    """The exact commands a bench ran, last in its report."""
    print()
    print("commands:")
    for command in commands:
        print("  " + command)
