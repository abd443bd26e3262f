"""Build the CPU image with podman from a local base image (no registry), run the three module
commands in it the way Nextflow runs a container task, and check the outputs equal the host's,
byte for byte, from this same checkout in this same run; print build time and image size.

    . ../shared/tools/podman-env.sh /tmp/podman      # podman, runc, debootstrap, local bases
    python bench/container.py                        # Dockerfile.cpu
    python bench/container.py --apptainer-debootstrap   # also peftsp-debootstrap.def's steps

A task runs as a non-root user (uid 4242, no passwd entry, like `docker run -u $(id -u):$(id -g)`)
with a read-only root file system and no tmpfs (like a Singularity/Apptainer image), no network,
the task directory mounted read-write at its own path, and inputs staged as symbolic links to
read-only mounts (as Nextflow stages them). The image is also checked for leftovers of its
build: caches, package lists, onnxruntime's device id, the source tree.

--apptainer-debootstrap runs the steps Apptainer runs for containers/peftsp-debootstrap.def:
debootstrap with Apptainer's own options and the header's OSVersion/MirrorURL/Include, %files
copied into the root, %environment written to /.singularity.d/env/90-environment.sh, %post run
as root with network, %test; then the same task checks (commands run through the environment
file, as `apptainer exec` does). Not run, because Apptainer is not installable here: packing
the SIF (mksquashfs), %labels/%help metadata, and the `Bootstrap: docker` definition.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODULES = REPO / "modules" / "nf-core" / "peftsp"
USER = "4242:4242"  # not the owner of anything in the image, no passwd entry
PREDICT_ARGS = ["--organism", "other", "--batch-size", "64"]  # ext.args of a CPU task
# One run time for every output of host and container (the results header has a timestamp).
SOURCE_DATE_EPOCH = "1767225600"  # 2026-01-01T00:00:00Z
APPTAINER_ENV = "/.singularity.d/env/90-environment.sh"
# `apptainer exec IMAGE cmd`: the %environment file is sourced before the command.
APPTAINER_EXEC = ["/bin/sh", "-c", f'. {APPTAINER_ENV} && exec "$@"', "sh"]
# Apptainer's debootstrap call (internal/pkg/build/sources/conveyorPacker_debootstrap.go).
APPTAINER_DEBOOTSTRAP = ["--variant=minbase", "--exclude=openssl,udev,debconf-i18n,e2fsprogs"]


def run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("check", True)
    kwargs.setdefault("text", True)
    return subprocess.run(argv, **kwargs)


def podman(*args: str, capture: bool = False, **kwargs) -> subprocess.CompletedProcess:
    return run(["podman", *args], capture_output=capture, **kwargs)


def build_mounts() -> list[str]:
    """The RUN-step mounts podman-env.sh prepared (the host CA bundle), never baked in."""
    return shlex.split(os.environ.get("PODMAN_BUILD_MOUNTS", ""))


def image_size(tag: str) -> int:
    out = podman("image", "inspect", "--format", "{{.Size}}", tag, capture=True).stdout
    return int(out.strip())


def module_script(step: str) -> str:
    """The shell command of a module's `script:` block, continuation lines joined."""
    text = (MODULES / step / "main.nf").read_text()
    script = text[text.index("\n    script:") : text.index("\n    stub:")]
    shell = re.search(r'"""(.*?)"""', script, re.DOTALL)[1]
    return " ".join(shell.replace("\\\n", " ").split())


def render(template: str, values: dict[str, list[str]]) -> list[str]:
    """argv of a module command: each ${name} token becomes its (possibly empty) value list."""
    argv: list[str] = []
    for token in template.split():
        name = token[2:-1] if token.startswith("${") and token.endswith("}") else None
        if name is None:
            argv.append(token)
        elif name in values:
            argv.extend(values[name])
        else:
            raise KeyError(f"no value for {token} in {template!r}")
    return argv


class Tasks:
    """Tasks laid out as Nextflow lays them out: one directory per task, inputs as symbolic
    links, the module command run in it with relative paths. `image` None runs on the host
    (this checkout's `peftsp`); otherwise in the image as uid 4242 (owner of the task
    directory), with a read-only root and no tmpfs, no network, inputs mounted read-only."""

    def __init__(self, root: Path, image: str | None, wrapper: list[str]):
        self.root, self.image, self.wrapper, self.count = root, image, wrapper, 0
        self.seconds: dict[str, float] = {}

    def run(self, name: str, inputs: dict[str, Path], argv: list[str]) -> Path:
        self.count += 1
        task = self.root / f"{self.count:02d}_{name}"
        task.mkdir(parents=True)
        mounts: list[str] = []
        for staged, source in inputs.items():
            (task / staged).parent.mkdir(parents=True, exist_ok=True)
            (task / staged).symlink_to(source)
            mounts += ["-v", f"{source}:{source}:ro"]
        start = time.perf_counter()
        if self.image is None:
            peftsp = Path(sys.executable).with_name("peftsp")
            env = {**os.environ, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH}
            command = [str(peftsp), *argv[1:]] if argv[0] == "peftsp" else argv
            result = run(command, cwd=task, env=env, capture_output=True, check=False)
        else:
            uid, gid = map(int, USER.split(":"))
            for path in [task, *task.rglob("*")]:
                if path.is_dir() and not path.is_symlink():
                    os.chown(path, uid, gid)
            result = podman(
                "run", "--rm", "--read-only", "--read-only-tmpfs=false", "--network=none",
                "--user", USER, "-e", f"SOURCE_DATE_EPOCH={SOURCE_DATE_EPOCH}",
                "-v", f"{task}:{task}", "-w", str(task), *mounts,
                self.image, *self.wrapper, *argv,
                capture=True, check=False,
            )  # fmt: skip
        self.seconds[name] = time.perf_counter() - start
        if result.returncode != 0:
            sys.exit(f"task {name} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
        return task

    def output(self, argv: list[str]) -> str:
        """stdout of a command run in the image like a task (the versions `eval` outputs)."""
        result = podman(
            "run", "--rm", "--read-only", "--read-only-tmpfs=false", "--network=none",
            "--user", USER, self.image, *self.wrapper, *argv, capture=True,
        )  # fmt: skip
        return result.stdout.strip()


def module_tasks(tasks: Tasks, fasta: Path, shard: int) -> dict[str, Path]:
    """The module commands as tasks: predict on the whole proteome, and shard -> predict per
    shard -> merge. Returns the output directories."""
    predict = module_script("predict")
    values = {
        "model_option": [],
        "device": ["cpu"],
        "task.cpus": ["2"],
        "args": PREDICT_ARGS,
        "meta.id": ["test"],  # one sample: the shards merge into it
    }
    direct = tasks.run(
        "predict",
        {fasta.name: fasta},
        render(predict, {**values, "fasta": [fasta.name], "prefix": ["test"]}),
    )
    shard_values = {"fasta": [fasta.name], "prefix": ["test"], "shard_size": [str(shard)]}
    sharded = tasks.run(
        "shard", {fasta.name: fasta}, render(module_script("shard"), {**shard_values, "args": []})
    )
    jsons: dict[str, Path] = {}
    for i, part in enumerate(sorted((sharded / "test").glob("shard_*.fasta")), start=1):
        prefix = f"test_{part.stem}"
        task = tasks.run(
            f"predict_{part.stem}",
            {part.name: part},
            render(predict, {**values, "fasta": [part.name], "prefix": [prefix]}),
        )
        jsons[f"{i}/output.json"] = task / prefix / "output.json"  # stageAs: '?/*'
    merge_values = {"prefix": ["test"], "args": [], "shard_json": [*jsons]}
    merged = tasks.run("merge", jsons, render(module_script("merge"), merge_values))
    return {"predict": direct / "test", "shard": sharded / "test", "merge": merged / "test"}


def differences(expected: Path, actual: Path) -> list[str]:
    names = sorted(p.name for p in expected.iterdir())
    found = sorted(p.name for p in actual.iterdir())
    if names != found:
        return [f"files differ: {names} vs {found}"]
    _, mismatch, errors = filecmp.cmpfiles(expected, actual, names, shallow=False)
    return [f"{name} differs" for name in mismatch + errors]


def file_list(image: str) -> set[str]:
    script = "find / -xdev \\( -type f -o -type l \\) 2>/dev/null; true"
    out = podman("run", "--rm", "--network=none", image, "sh", "-c", script, capture=True).stdout
    return set(out.splitlines())


def leftovers(image: str, base: str) -> list[str]:
    """Files the build added that are build leftovers: caches (pip's, anything under a
    .cache), package lists and archives, onnxruntime's device id, the sources, wheels, /tmp."""
    present = file_list(image)
    added = present - file_list(base)
    sources = [p for p in present if p.startswith(("/opt/peftsp/src/", "/tmp/peftsp-src/"))]
    suspicious = re.compile(
        r"^/(tmp|var/tmp|root|mnt|opt/peftsp/src)/|/\.cache/|^/var/lib/apt/lists/|"
        r"^/var/cache/apt/|/deviceid$|\.whl$"
    )
    harmless = re.compile(r"/lock$")  # apt's empty lock files
    found = {p for p in added if suspicious.search(p) and not harmless.search(p)}
    return sorted(found | set(sources))


def check_image(
    label: str, image: str, base: str, wrapper: list[str], work: Path, fasta: Path, shard: int
) -> None:
    """Leftovers, then the module commands in the image vs on the host, byte for byte."""
    found = leftovers(image, base)
    print(f"{label}: build leftovers among the files the build added: {found or 'none'}")
    host = Tasks(work / "host", None, [])
    container = Tasks(work / "container", image, wrapper)
    expected = module_tasks(host, fasta, shard)
    actual = module_tasks(container, fasta, shard)
    proteins = sum(1 for line in fasta.open() if line.startswith(">"))
    print(
        f"{label}: {fasta.name}, {proteins} proteins: predict {host.seconds['predict']:.1f} s on "
        f"the host, {container.seconds['predict']:.1f} s in the container"
    )
    diffs = {step: differences(expected[step], actual[step]) for step in expected}
    shards = len(list(expected["shard"].iterdir()))
    print(
        f"{label}: module commands as uid 4242 on a read-only root without network vs the same "
        f"commands on the host: predict ({len(list(expected['predict'].iterdir()))} files) "
        f"{diffs['predict'] or 'identical'}; shard ({shards} shards) "
        f"{diffs['shard'] or 'identical'}; merge {diffs['merge'] or 'identical'}"
    )
    versions = {
        "peftsp": container.output(["sh", "-c", "peftsp --version | sed 's/^peftsp //'"]),
        "onnxruntime": container.output(
            ["python", "-c", "import onnxruntime; print(onnxruntime.__version__)"]
        ),
    }
    print(f"{label}: the modules' versions eval commands in the image print {versions}")
    owners = {p.stat().st_uid for p in (work / "container").rglob("*") if not p.is_symlink()}
    if owners - {4242}:
        print(f"{label}: task files owned by uids {sorted(owners - {4242})}")
    if found or any(diffs.values()) or owners - {4242}:
        sys.exit(f"{label}: FAILED")


def build_docker(args: argparse.Namespace) -> str:
    tag = "localhost/peftsp:bench-cpu"
    argv = ["build", "--pull=never", "--build-arg", f"BASE_IMAGE={args.base_image}"]
    argv += build_mounts() + ([] if args.reuse else ["--no-cache"])
    argv += ["-f", str(REPO / "containers" / "Dockerfile.cpu"), "-t", tag, str(REPO)]
    start = time.perf_counter()
    podman(*argv, capture=True)
    seconds = time.perf_counter() - start
    print(
        f"Dockerfile.cpu: built from {args.base_image} in {seconds:.0f} s "
        f"({'layer cache reused' if args.reuse else 'no layer cache'}; pip downloads included), "
        f"image {image_size(tag) / 1e6:.0f} MB"
    )
    return tag


def definition(path: Path, overrides: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """Header and sections of an Apptainer definition, {{ ARG }} filled from %arguments."""
    section = re.compile(r"^%(\w+)[ \t]*$", re.MULTILINE)

    def split(text: str) -> tuple[str, dict[str, str]]:
        first = section.search(text)
        parts = section.split(text[first.start() :])
        return text[: first.start()], dict(zip(parts[1::2], parts[2::2], strict=True))

    _, raw = split(path.read_text())
    lines = [line.strip() for line in raw["arguments"].splitlines() if line.strip()]
    values = dict(line.split("=", 1) for line in lines)
    values |= overrides
    filled = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: values[m[1]], path.read_text())
    head, sections = split(filled)
    header = {}
    for line in head.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, value = line.split(":", 1)
            header[key.strip().lower()] = value.strip()
    return header, sections


def build_debootstrap(args: argparse.Namespace, work: Path) -> tuple[str, str]:
    """The steps of `apptainer build` for containers/peftsp-debootstrap.def, with podman."""
    header, sections = definition(REPO / "containers" / "peftsp-debootstrap.def", args.def_arg)
    assert header["bootstrap"] == "debootstrap", header
    rootfs = work / "rootfs"
    include = ",".join(["apt", *header.get("include", "").split()])
    start = time.perf_counter()
    run(
        ["debootstrap", *APPTAINER_DEBOOTSTRAP, f"--include={include}", "--arch=amd64",
         header["osversion"], str(rootfs), header["mirrorurl"]],
        capture_output=True, env={**os.environ, "TMPDIR": str(work)},
    )  # fmt: skip
    debootstrap_seconds = time.perf_counter() - start
    for line in sections["files"].strip().splitlines():
        source, destination = line.split()
        target = rootfs / destination.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        if (REPO / source).is_dir():  # Apptainer copies with symbolic links followed
            shutil.copytree(REPO / source, target, symlinks=False)
        else:
            shutil.copy(REPO / source, target)
    environment = rootfs / APPTAINER_ENV.lstrip("/")
    environment.parent.mkdir(parents=True, exist_ok=True)
    environment.write_text(sections["environment"])
    base = "localhost/peftsp:bench-debootstrap-base"
    tar = subprocess.Popen(
        ["tar", "--numeric-owner", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE
    )
    podman("import", "-", base, stdin=tar.stdout, capture=True)
    tar.wait()
    shutil.rmtree(rootfs)
    name = "peftsp-bench-post"
    podman("rm", "-f", name, capture=True, check=False)
    start = time.perf_counter()
    post = podman(
        "run", "--name", name, *build_mounts(), base, "/bin/sh", "-e", "-c", sections["post"],
        capture=True, check=False,
    )  # fmt: skip
    if post.returncode != 0:
        sys.exit(f"%post failed:\n{post.stdout[-3000:]}{post.stderr[-3000:]}")
    post_seconds = time.perf_counter() - start
    tag = "localhost/peftsp:bench-debootstrap"
    podman("commit", "--quiet", name, tag, capture=True)
    podman("rm", name, capture=True)
    print(
        f"peftsp-debootstrap.def: debootstrap {header['osversion']} from {header['mirrorurl']} "
        f"(Include: {header.get('include', '')}) {debootstrap_seconds:.0f} s, %post "
        f"{post_seconds:.0f} s, image {image_size(tag) / 1e6:.0f} MB (uncompressed; a SIF is a "
        "compressed squashfs of the same tree)"
    )
    test = podman(
        "run", "--rm", "--read-only", "--read-only-tmpfs=false", "--network=none", "--user", USER,
        tag, "/bin/sh", "-e", "-c", f". {APPTAINER_ENV}\n{sections['test']}",
        capture=True, check=False,
    )  # fmt: skip
    if test.returncode != 0:
        sys.exit(f"%test failed: {test.stdout}{test.stderr}")
    print(f"peftsp-debootstrap.def: %test as uid 4242 on a read-only root: {test.stdout.strip()}")
    return tag, base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--base-image",
        default=os.environ.get("PODMAN_PYTHON_BASE", "python:3.11.14-slim-bookworm"),
        help="BASE_IMAGE build argument (default: podman-env.sh's local image)",
    )
    parser.add_argument("--fasta", type=Path, default=REPO / "tests" / "data" / "mgenitalium.faa")
    parser.add_argument("--shard-size", type=int, default=200)
    parser.add_argument("--reuse", action="store_true", help="reuse podman's layer cache")
    parser.add_argument("--apptainer-debootstrap", action="store_true")
    parser.add_argument(
        "--def-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override an %%arguments value of peftsp-debootstrap.def (e.g. MIRROR=...)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the images and task dirs")
    args = parser.parse_args()
    args.def_arg = dict(item.split("=", 1) for item in args.def_arg)
    if shutil.which("podman") is None:
        sys.exit("podman not found: source ../shared/tools/podman-env.sh first")
    fasta = args.fasta.resolve()

    work = Path(tempfile.mkdtemp(prefix="peftsp-container-bench-"))
    os.chmod(work, 0o755)
    images = []
    try:
        images.append(build_docker(args))
        check = (fasta, args.shard_size)
        check_image("Dockerfile.cpu", images[-1], args.base_image, [], work / "docker", *check)
        if args.apptainer_debootstrap:
            (work / "apptainer").mkdir()
            tag, base = build_debootstrap(args, work / "apptainer")
            images += [tag, base]
            label = "peftsp-debootstrap.def"
            check_image(label, tag, base, APPTAINER_EXEC, work / "apptainer", *check)
    finally:
        if args.keep:
            print(f"kept {work} and images {images}")
        else:
            shutil.rmtree(work, ignore_errors=True)
            for image in images:
                podman("rmi", "-f", image, capture=True, check=False)


if __name__ == "__main__":
    main()
