"""A plain `pip install` of this checkout into a fresh virtual environment predicts, runs the
local workflow and evaluates a model bundle, without torch.

    python bench/install_check.py            # needs PyPI (numpy, onnxruntime, tqdm)
    python bench/install_check.py --keep     # keep the temporary directory to look at

Steps, each printed with its command and exit status:

1. a new venv in a temporary directory (`python -m venv`, this interpreter);
2. `pip install <checkout>`: no extras, so no torch. The checkout's files that git knows
   (tracked, and untracked ones not ignored: the working tree as it is) are copied first, so
   the build leaves nothing in the checkout;
3. torch, fair-esm (`esm`) and pytorch-crf (`torchcrf`) are not importable in the venv, and
   pip does not list torch;
4. in the venv, from a directory outside the checkout: `peftsp predict` and `peftsp pipeline`
   (--fasta, and --input with a CSV samplesheet) on a small FASTA written here, with the
   embedded default model, and `peftsp evaluate --model <the installed default model bundle>`
   on a small labelled file written here (tests/synthetic.py's records).

Exit status 0 when every step succeeded.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FASTA = (
    ">sp1 Sec/SPI-like\nMKKTAIAIAVALAGFATVAQAEDKNQSTGPRHYDEKNQSTG\n"
    ">cyto1 soluble\nMDEKNQSTGPRHYDEKNQSTGPRHYDEKNQ\n"
    ">lipo1 lipobox\nMKRLLAVLLIAGLAGCSSEDKNQSTGPRHY\n"
    ">tat1 twin arginine\nMSRRFLTAGLVAALGLAAHADEKNQSTGPRHY\n"
)


def run(argv: list[str], cwd: Path, env: dict[str, str], brief: bool = False) -> int:
    """Run one step, printing its command and exit status (with `brief`, a line count of its
    standard output instead of the output)."""
    print(f"$ {shlex.join(argv)}", flush=True)
    result = subprocess.run(
        argv, cwd=cwd, env=env, stdout=subprocess.PIPE if brief else None, text=True
    )
    if brief:
        lines = result.stdout.splitlines()
        print(f"  ({len(lines)} lines on stdout, the first: {lines[0] if lines else ''!r})")
    print(f"  -> exit status {result.returncode}", flush=True)
    return result.returncode


def copy_checkout(destination: Path) -> None:
    """The files git knows of this checkout (tracked, and untracked but not ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (n.decode() for n in listed)):
        source, target = REPO / name, destination / name
        if not (source.is_symlink() or source.is_file()):  # deleted in the working tree
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():  # e.g. peftsp/default_model -> ../models/default
            os.symlink(os.readlink(source), target)
        else:
            shutil.copy2(source, target)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="peftsp-install-check."))
    print(f"# working in {root}")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PEFTSP_MODEL")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["SOURCE_DATE_EPOCH"] = "1700000000"
    failures: list[str] = []

    def step(name: str, argv: list[str], cwd: Path = root, brief: bool = False) -> int:
        status = run(argv, cwd, env, brief)
        if status:
            failures.append(name)
        return status

    try:
        venv = root / "venv"
        python, bin_dir = venv / "bin" / "python", venv / "bin"
        if step("venv", [sys.executable, "-m", "venv", str(venv)]):
            return 1
        source = root / "checkout"
        copy_checkout(source)
        if step("install", [str(python), "-m", "pip", "install", "--quiet", str(source)]):
            return 1

        # no torch, fair-esm or pytorch-crf came with it
        for module in ("torch", "esm", "torchcrf"):
            code = f"import importlib.util as u, sys; sys.exit(u.find_spec({module!r}) is not None)"
            step(f"{module} absent", [str(python), "-c", code])
        print(f"$ {python} -m pip show torch   (expected: not found)")
        shown = subprocess.run(
            [str(python), "-m", "pip", "show", "torch"], capture_output=True, env=env
        )
        print(f"  -> exit status {shown.returncode}")
        if shown.returncode == 0:
            failures.append("pip show torch")
        frozen = subprocess.run(
            [str(python), "-m", "pip", "freeze", "--all"], capture_output=True, text=True, env=env
        ).stdout.split()
        print(f"# installed: {' '.join(frozen)}")

        work = root / "run"
        work.mkdir()
        (work / "proteome.faa").write_text(FASTA)
        (work / "sheet.csv").write_text(
            "sample,fasta,organism\nsoil,proteome.faa,\nyeast,proteome.faa,euk\n"
        )
        sys.path.insert(0, str(REPO / "tests"))
        from synthetic import write_dataset

        write_dataset(work / "labelled.fasta", per_type=3)
        bundle = subprocess.run(
            [str(python), "-c", "from peftsp.bundle import DEFAULT_MODEL; print(DEFAULT_MODEL)"],
            cwd=work, env=env, capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        peftsp = str(bin_dir / "peftsp")
        cpu = ["--device", "cpu", "--quiet"]
        commands = {
            "predict": ["predict", "--fasta", "proteome.faa", "--outdir", "predicted", *cpu],
            "pipeline --fasta": [
                "pipeline", "--fasta", "proteome.faa", "--outdir", "single", "--shard-size", "2",
                *cpu,
            ],
            "pipeline --input": [
                "pipeline", "--input", "sheet.csv", "--outdir", "samples", "--shard-size", "3",
                *cpu,
            ],
            "evaluate": [
                "evaluate", "--model", bundle, "--data", "labelled.fasta", "--partition", "0",
                "--quiet",
            ],
        }  # fmt: skip
        for name, argv in commands.items():
            step(name, [peftsp, *argv], work, brief=name == "evaluate")  # a metrics table
        for path in ("predicted", "single", "samples/soil", "samples/yeast"):
            if not (work / path / "prediction_results.txt").is_file():
                failures.append(f"{path}/prediction_results.txt missing")
        code = (
            "import sys, peftsp.cli, peftsp.predict, peftsp.workflow.runner, peftsp.evaluation; "
            "sys.exit('torch' in sys.modules)"
        )
        step("no torch loaded", [str(python), "-c", code], work)
    finally:
        if args.keep:
            print(f"# kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    print("# result:", "OK" if not failures else f"FAILED: {', '.join(failures)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
