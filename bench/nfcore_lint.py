"""`nf-core modules lint` on modules/nf-core/peftsp/*, as nf-core/modules' CI lints a new module,
with the checks that can run without Nextflow and without network.

nf-core tools go in their own virtual environment, not the project's:

    python3 -m venv /tmp/nfcore-venv && /tmp/nfcore-venv/bin/pip install nf-core
    /tmp/nfcore-venv/bin/python bench/nfcore_lint.py --modules-repo <nf-core/modules clone or URL>

What it arranges, and why:
- the modules are copied into a scratch nf-core/modules-shaped repository (nf-core/modules'
  .nf-core.yml with ghcr.io/peftsp added to its container registries, its meta-schema.json and
  environment-schema.json, its placeholder main.nf), as a pull request would have them;
- nf-core/modules itself is cloned from --modules-repo into a scratch HOME (tools clones it to
  ~/.config/nfcore) and used with no_pull, so nothing is fetched;
- tools runs `nextflow config` on the repository only to cache it (module lint reads nothing
  from it): an empty entry is put in tools' own cache ($NXF_HOME/nf-core/wf-config-cache-*);
- tools runs `nextflow -v` and `nextflow inspect` to resolve the containers of main.nf; there
  is no Nextflow here, so the version lookup answers "none", the way tools handles an old
  Nextflow: those two container checks (docker_tag, singularity_tag) fail, and are reported as
  not runnable here.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODULES = ("peftsp/shard", "peftsp/predict", "peftsp/merge")
# Checks that need `nextflow inspect` (a Nextflow runtime), which cannot run here.
NEEDS_NEXTFLOW = {"docker_tag", "singularity_tag"}


def git(*args: str, cwd: Path | None = None) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def config_cache(nxf_home: Path, directory: Path) -> None:
    """An entry of nf-core tools' `nextflow config` cache for `directory` (tools' own key:
    sha256 of the sha256s of nextflow.config and main.nf)."""
    digests = "".join(
        hashlib.sha256((directory / name).read_bytes()).hexdigest()
        for name in ("nextflow.config", "main.nf")
        if (directory / name).is_file()
    )
    if digests:
        key = hashlib.sha256(digests.encode()).hexdigest()[:25]
        cache = nxf_home / "nf-core" / f"wf-config-cache-{key}.json"
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text("{}")


def arrange(scratch: Path, modules_repo: str) -> Path:
    home = scratch / "home"
    clone = home / ".config" / "nfcore" / "nf-core" / "modules"
    git("clone", "--quiet", modules_repo, str(clone))
    git("remote", "set-url", "origin", "https://github.com/nf-core/modules.git", cwd=clone)

    repo = scratch / "modules-repo"
    shutil.copytree(REPO / "modules" / "nf-core" / "peftsp", repo / "modules/nf-core/peftsp")
    for name in ("modules/meta-schema.json", "modules/environment-schema.json", "main.nf"):
        shutil.copy(clone / name, repo / name)
    # nf-core/modules' own .nf-core.yml, with our registry added to its list of allowed container
    # registries, as the pull request adding these modules would add it
    import yaml  # nf-core tools' dependency

    settings = yaml.safe_load((clone / ".nf-core.yml").read_text())
    settings.setdefault("container-registry", []).append("ghcr.io/peftsp")
    (repo / ".nf-core.yml").write_text(yaml.safe_dump(settings, sort_keys=False))
    (repo / "tests/config").mkdir(parents=True)
    shutil.copy(REPO / "tests" / "nextflow.config", repo / "tests/config/nextflow.config")
    git("init", "--quiet", cwd=repo)
    git("add", "-A", cwd=repo)
    git("-c", "user.name=lint", "-c", "user.email=lint@localhost", "commit", "-qm", "PR", cwd=repo)
    for directory in (repo, repo / "tests/config", clone):
        config_cache(home / ".nextflow", directory)
    os.environ["HOME"] = str(home)
    os.environ["NXF_HOME"] = str(home / ".nextflow")
    os.environ.pop("XDG_CONFIG_HOME", None)
    os.environ.pop("XDG_CACHE_HOME", None)
    return repo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--modules-repo",
        default="https://github.com/nf-core/modules.git",
        help="a clone of nf-core/modules (a path), or its URL when online",
    )
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="peftsp-nfcore-lint-"))
    try:
        repo = arrange(scratch, args.modules_repo)
        # after HOME is set: tools reads it at import
        import nf_core
        import nf_core.utils
        from nf_core.modules.lint import ModuleLint

        nf_core.utils.get_nf_version = lambda: None  # no Nextflow on this machine
        lint = ModuleLint(repo, no_pull=True, hide_progress=True)
        failed_here = []
        for module in MODULES:
            lint.passed, lint.warned, lint.failed = [], [], []
            lint.lint(module=module, print_results=False)
            print(
                f"{module}: {len(lint.passed)} passed, {len(lint.warned)} warnings, "
                f"{len(lint.failed)} failed (nf-core tools {nf_core.__version__})"
            )
            for kind, results in (("FAILED", lint.failed), ("WARNING", lint.warned)):
                for result in results:
                    note = (
                        " [needs Nextflow: not runnable here]"
                        if result.lint_test in NEEDS_NEXTFLOW
                        else ""
                    )
                    print(f"  {kind} {result.lint_test}: {result.message}{note}")
                    if kind == "FAILED" and result.lint_test not in NEEDS_NEXTFLOW:
                        failed_here.append((module, result.lint_test))
        if failed_here:
            sys.exit(f"lint failures that are not about the missing Nextflow: {failed_here}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
