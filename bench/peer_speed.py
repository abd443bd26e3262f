#!/usr/bin/env python
"""Proteome prediction speed of PEFT-SP against DeepSig (the open peer), same machine, same run.

    python bench/peer_speed.py --fasta ../shared/data/proteomes/ecoli_proteins.faa --kingdom gramn

Builds DeepSig with ../shared/peers/deepsig/setup.sh (once; later runs reuse the build), then
runs, one after the other, each in its own child process:
  1. `deepsig -f FASTA -k KINGDOM -o ...`
  2. `peftsp predict --fasta FASTA --organism ORGANISM` at the shipped defaults (only the
     options given here, --model --precision --batch-size --threads --device, are passed on)
  3. the same `peftsp predict` under cProfile (in-process, through runpy of peftsp.cli; one
     profiler per thread, since the package may run the model in a background thread)
and prints wall time, CPU time, peak RSS (os.wait4 on each child: its own figure, children it
waited for included), proteins/s of both and the ratio, then where PEFT-SP's time goes: ONNX
Runtime inference (InferenceSession.run, in whatever thread), CRF decode (functions of
peftsp's `decoding` module, however named), and I/O + the rest (FASTA reading, tokenising,
writers, start-up), each as time spent entering it from other peftsp code (so nested calls are
not counted twice). The main thread's time is split into these parts plus its waits on worker
threads; a model running ahead in a background thread overlaps the decode, so the summary
shares (model, decode, I/O + rest, of the main thread's time) need not add up to 100%.

cProfile slows Python code down and does not see child processes (a process pool for the
decode, used with a GPU), so the breakdown is shares of the profiled run; the speeds come from
the unprofiled runs. On a shared or loaded machine the figures swing: compare only figures of
one run.
"""

from __future__ import annotations

import argparse
import pstats
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from peer_common import (
    SHARED,
    check_ran,
    deepsig_argv,
    deepsig_environment,
    pass_through,
    peftsp_argv,
    print_commands,
    read_deepsig,
    read_peftsp,
    run_measured,
    show_command,
    table,
)

ORGANISM = {"euk": "eukarya", "gramn": "gram_negative", "gramp": "gram_positive"}
PROFILE_WRAPPER = '''\
"""Run the peftsp CLI under cProfile, one profile per thread:
profile_predict.py OUT_PREFIX ARG...  (ARG... as for peftsp) -> OUT_PREFIX.<n>.<thread name>"""
import cProfile
import runpy
import sys
import threading

prefix = sys.argv[1]
sys.argv = ["peftsp", *sys.argv[2:]]
profiles = [("MainThread", cProfile.Profile())]


def start(frame, event, arg):  # first event of a new thread: give it its own profiler
    profile = cProfile.Profile()
    profiles.append((threading.current_thread().name, profile))
    profile.enable()


threading.setprofile(start)
code = 0
profiles[0][1].enable()
try:
    runpy.run_module("peftsp.cli", run_name="__main__", alter_sys=True)
except SystemExit as stop:
    code = stop.code
finally:
    profiles[0][1].disable()
    threading.setprofile(None)
    for n, (name, profile) in enumerate(list(profiles)):
        profile.dump_stats(f"{prefix}.{n}.{name}")
sys.exit(code)
'''

Func = tuple[str, int, str]  # (file, line, function name) as in pstats
ORT_RUN = ("run", "run_with_iobinding", "run_with_ort_values")


def in_module(name: str) -> Callable[[Func], bool]:
    """Functions of peftsp's module (or subpackage) `name`, e.g. peftsp/decoding.py."""

    def test(func: Func) -> bool:
        parts = Path(func[0]).parts
        if "peftsp" not in parts:
            return False
        inner = parts[len(parts) - 1 - parts[::-1].index("peftsp") + 1 :]
        return any(Path(p).stem == name for p in inner)

    return test


def is_peftsp(func: Func) -> bool:
    return "peftsp" in Path(func[0]).parts


def is_ort(func: Func) -> bool:
    file, _, name = func
    return "onnxruntime" in Path(file).parts or (file == "~" and "onnxruntime" in name)


def is_thread_wait(func: Func) -> bool:
    parts = Path(func[0]).parts
    return Path(func[0]).name in ("threading.py", "queue.py") or (
        "concurrent" in parts and "futures" in parts
    )


def entries(
    stats: pstats.Stats, inside: Callable[[Func], bool], elsewhere: list[Callable[[Func], bool]]
) -> dict[Func, float]:
    """Cumulative seconds spent in `inside` functions when called by peftsp code outside them
    and outside the other parts (`elsewhere`). Calls through numpy wrappers, builtins or the
    import machinery are nested or module loading, so they are not entries."""
    out: dict[Func, float] = {}
    for func, (_, _, _, _, callers) in stats.stats.items():  # type: ignore[attr-defined]
        if not inside(func) or func[2] == "<module>":
            continue
        for caller, timing in callers.items():
            if not is_peftsp(caller) or inside(caller) or any(t(caller) for t in elsewhere):
                continue
            out[func] = out.get(func, 0.0) + timing[3]
    return out


@dataclass
class Breakdown:
    main_s: float  # profiled main thread
    model_s: float  # InferenceSession.run, all threads
    decode_s: float  # module decoding, all threads
    main_parts: list[tuple[str, float]]  # sums to main_s
    threads: list[str]
    notes: list[str]


def breakdown(prefix: Path) -> Breakdown:
    """Where the time of `peftsp predict` goes, from the per-thread cProfile dumps."""
    dumps = []  # (n, thread name, file) from PREFIX.<n>.<thread name>
    for f in prefix.parent.glob(prefix.name + ".*"):
        n, thread = f.name[len(prefix.name) + 1 :].split(".", 1)
        dumps.append((int(n), thread, f))
    modules = {name: in_module(name) for name in ("decoding", "fasta", "tokens", "writers")}
    tests = [is_ort, is_thread_wait, *modules.values()]
    model = decode = 0.0
    main_parts: list[tuple[str, float]] = []
    threads: list[str] = []
    notes: list[str] = []
    decode_entries: set[str] = set()
    main_s = 0.0
    for _, thread, f in sorted(dumps):
        stats = pstats.Stats(str(f))

        def part(test: Callable[[Func], bool], stats=stats) -> dict[Func, float]:
            return entries(stats, test, [t for t in tests if t is not test])

        ort = part(is_ort)
        run = sum(t for func, t in ort.items() if func[2] in ORT_RUN or "'run" in func[2])
        decoding = part(modules["decoding"])
        decode_entries |= {func[2] for func in decoding}
        model += run
        decode += sum(decoding.values())
        if run or decoding:
            threads.append(f"{thread}: model {run:.1f} s, decode {sum(decoding.values()):.1f} s")
        if thread != "MainThread":
            continue
        main_s = stats.total_tt  # type: ignore[attr-defined]
        main_parts = [
            ("model: ONNX Runtime InferenceSession.run", run),
            ("decode: CRF (module decoding)", sum(decoding.values())),
            ("waiting on worker threads (model ahead)", sum(part(is_thread_wait).values())),
            ("ONNX Runtime session creation", sum(ort.values()) - run),
            ("FASTA reading (module fasta)", sum(part(modules["fasta"]).values())),
            ("tokenising (module tokens)", sum(part(modules["tokens"]).values())),
            ("writing outputs (module writers)", sum(part(modules["writers"]).values())),
        ]
        rest = main_s - sum(t for _, t in main_parts)
        main_parts.append(("everything else (imports, CLI, batching)", rest))
    if not decode_entries:
        notes.append("no function of a peftsp module named `decoding` ran in a profiled thread")
    else:
        notes.append("decode entry points (module decoding): " + ", ".join(sorted(decode_entries)))
    return Breakdown(main_s, model, decode, main_parts, threads, notes)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--fasta", default=str(SHARED / "data/proteomes/ecoli_proteins.faa"), help="%(default)s"
    )
    parser.add_argument("--kingdom", default="gramn", choices=list(ORGANISM), help="DeepSig -k")
    parser.add_argument(
        "--organism", default=None, help="peftsp --organism (default: from --kingdom)"
    )
    parser.add_argument("--workdir", default="runs/peer_speed", help="outputs and logs")
    parser.add_argument("--deepsig-dir", default=None, help="where setup.sh builds DeepSig")
    parser.add_argument("--model", default=None, help="PEFT-SP bundle (default: embedded model)")
    parser.add_argument("--precision", default=None, help="passed to peftsp predict")
    parser.add_argument("--batch-size", type=int, default=None, help="passed to peftsp predict")
    parser.add_argument("--threads", type=int, default=None, help="passed to peftsp predict")
    parser.add_argument("--device", default=None, help="passed to peftsp predict")
    parser.add_argument("--no-profile", action="store_true", help="skip the cProfile breakdown")
    parser.add_argument(
        "--also-precision",
        action="append",
        default=[],
        choices=("fp32", "int8", "fp16"),
        help="one more `peftsp predict` in the same run with this --precision (repeatable)",
    )
    args = parser.parse_args()

    fasta = Path(args.fasta).resolve()
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    organism = args.organism or ORGANISM[args.kingdom]
    options = pass_through(args, ("model", "precision", "batch-size", "threads", "device"))
    with open(fasta) as handle:
        proteins = sum(1 for line in handle if line.startswith(">"))

    start = time.perf_counter()
    env = deepsig_environment(dest=args.deepsig_dir)
    setup_s = time.perf_counter() - start
    commands = [f"bash {SHARED / 'peers/deepsig/setup.sh'}   ({setup_s:.1f} s; builds once)"]

    peer_out = workdir / "deepsig.gff"
    peer_out.unlink(missing_ok=True)
    argv = deepsig_argv(fasta, args.kingdom, peer_out)
    peer = run_measured(argv, workdir / "deepsig.log", env)
    check_ran(peer, argv, workdir / "deepsig.log")
    commands.append(show_command(argv, "DEEPSIG_ROOT=" + env["DEEPSIG_ROOT"]))
    peer_calls = read_deepsig(peer_out)

    ours_out = workdir / "predict_out"
    shutil.rmtree(ours_out, ignore_errors=True)
    argv = peftsp_argv(fasta, ours_out, organism, options)
    ours = run_measured(argv, workdir / "peftsp.log")
    check_ran(ours, argv, workdir / "peftsp.log")
    commands.append(show_command(argv))
    our_calls = read_peftsp(ours_out)
    variants = []
    for precision in args.also_precision:
        out = workdir / f"predict_out_{precision}"
        shutil.rmtree(out, ignore_errors=True)
        argv = peftsp_argv(fasta, out, organism, [*options, "--precision", precision])
        stats = run_measured(argv, workdir / f"peftsp_{precision}.log")
        check_ran(stats, argv, workdir / f"peftsp_{precision}.log")
        commands.append(show_command(argv))
        calls = read_peftsp(out)
        variants.append((f"PEFT-SP --precision {precision}", stats, calls))

    if len(peer_calls) != proteins or len(our_calls) != proteins:
        print(f"WARNING: {proteins} proteins in, DeepSig {len(peer_calls)}, PEFT-SP "
              f"{len(our_calls)} out")  # fmt: skip

    print(f"{fasta.name}: {proteins} proteins; DeepSig -k {args.kingdom}, PEFT-SP --organism "
          f"{organism} ({' '.join(options) or 'shipped defaults'})")  # fmt: skip
    rows = []
    for name, stats, sp_calls in (
        ("DeepSig", peer, sum(c.is_sp for c in peer_calls.values())),
        ("PEFT-SP", ours, sum(c.sp_type != "NO_SP" for c in our_calls)),
        *((n, s, sum(c.sp_type != "NO_SP" for c in calls)) for n, s, calls in variants),
    ):
        rows.append([
            name, f"{stats.wall_s:.1f}", f"{stats.user_s + stats.sys_s:.1f}",
            f"{stats.max_rss_mib:.0f}", f"{proteins / stats.wall_s:.1f}", sp_calls,
        ])  # fmt: skip
    headers = ["tool", "wall s", "CPU s", "peak RSS MiB", "proteins/s", "SP calls"]
    print(table(headers, rows))
    print(
        f"PEFT-SP / DeepSig speed: {peer.wall_s / ours.wall_s:.1f}x (wall), "
        f"{(peer.user_s + peer.sys_s) / (ours.user_s + ours.sys_s):.1f}x (CPU time); "
        f"peak RSS ratio {ours.max_rss_mib / peer.max_rss_mib:.2f}"
    )
    for name, stats, _ in variants:
        print(f"{name} / DeepSig speed: {peer.wall_s / stats.wall_s:.1f}x (wall)")

    if not args.no_profile:
        wrapper = workdir / "profiler" / "profile_predict.py"  # alone: its folder is sys.path[0]
        wrapper.parent.mkdir(exist_ok=True)
        wrapper.write_text(PROFILE_WRAPPER)
        prefix = workdir / "profiler" / "predict.prof"
        for old in prefix.parent.glob(prefix.name + ".*"):
            old.unlink()
        profiled_out = workdir / "predict_out_profiled"
        shutil.rmtree(profiled_out, ignore_errors=True)
        argv = peftsp_argv(fasta, profiled_out, organism, options)
        argv = [argv[0], str(wrapper), str(prefix), *argv[3:]]  # python WRAPPER PREFIX predict ...
        profiled = run_measured(argv, workdir / "peftsp_profiled.log")
        check_ran(profiled, argv, workdir / "peftsp_profiled.log")
        commands.append(show_command(argv))
        found = breakdown(prefix)
        main_s = found.main_s
        print()
        print(f"PEFT-SP time under cProfile: main thread {main_s:.1f} s (the profiled run took "
              f"{profiled.wall_s:.1f} s wall against {ours.wall_s:.1f} s unprofiled)")  # fmt: skip
        rows = [[name, f"{t:.2f}", f"{100 * t / main_s:.1f}%"] for name, t in found.main_parts]
        print(table(["main thread", "s", "share"], rows))
        for line in found.threads:
            print("  " + line)
        rest = dict(found.main_parts)
        io_rest = main_s - sum(list(rest.values())[:3])  # all but model, decode and waiting
        model, decode = 100 * found.model_s / main_s, 100 * found.decode_s / main_s
        print(
            f"summary, as shares of the main thread's time: model (ONNX Runtime, any thread) "
            f"{model:.0f}%, decode (CRF) {decode:.0f}%, I/O + rest {100 * io_rest / main_s:.0f}% "
            "(a model running in a background thread overlaps the decode, so the shares need not "
            "add up to 100%)"
        )
        for note in found.notes:
            print("note: " + note)
    print_commands(commands)


if __name__ == "__main__":
    main()
