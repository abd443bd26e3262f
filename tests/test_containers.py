"""Static checks of the container recipes: pinned versions, the package installed, every file
they copy present (no Docker or Apptainer engine can build them here)."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from peftsp import __version__

REPO = Path(__file__).resolve().parents[1]
CONTAINERS = REPO / "containers"
DOCKERFILES = {"cpu": CONTAINERS / "Dockerfile.cpu", "gpu": CONTAINERS / "Dockerfile.gpu"}
PINNED_IMAGE = re.compile(r"^[\w.-]+(/[\w.-]+)*:\d+\.\d+\.\d+[\w.-]*(@sha256:[0-9a-f]{64})?$")


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"^\s*#.*\n", "", dockerfile.read_text(), flags=re.MULTILINE)
    text = text.replace("\\\n", " ")
    return [tuple(line.split(None, 1)) for line in text.splitlines() if line.strip()]


def pins(flavour: str) -> dict[str, str]:
    """name -> version of a requirements file; every line must be an exact pin."""
    result = {}
    for line in (CONTAINERS / f"requirements-{flavour}.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            match = re.fullmatch(r"([A-Za-z0-9_.-]+)==([\w.]+)", line)
            assert match, f"not pinned exactly: {line}"
            name = match[1].lower().replace("_", "-")
            assert name not in result, f"pinned twice: {name}"
            result[name] = match[2]
    return result


def apptainer_sections(text: str) -> dict[str, str]:
    parts = re.split(r"^%(\w+)\s*$", text, flags=re.MULTILINE)
    return {name: body for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def package_dependencies() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in project["dependencies"]]


@pytest.mark.parametrize("flavour", DOCKERFILES)
def test_dockerfile_pins_its_base_and_copies_files_that_exist(flavour):
    steps = instructions(DOCKERFILES[flavour])
    (base,) = [args for op, args in steps if op == "FROM"]
    assert PINNED_IMAGE.match(base), base
    copied = [args.split()[:-1] for op, args in steps if op == "COPY"]
    assert copied
    for sources in copied:
        for source in sources:
            assert (REPO / source).exists(), source
    sources = {s for group in copied for s in group}
    # the package (with its embedded default model, package data) and what builds it
    assert {"peftsp", "pyproject.toml", "README.md", "containers/install.sh"} <= sources
    assert f"containers/requirements-{flavour}.txt" in sources
    runs = [args for op, args in steps if op == "RUN"]
    assert any(f"containers/install.sh {flavour}" in run for run in runs)


@pytest.mark.parametrize("flavour", DOCKERFILES)
def test_dockerfile_tags_the_images_the_modules_use(flavour):
    text = DOCKERFILES[flavour].read_text()
    suffix = "-gpu" if flavour == "gpu" else ""
    tag = f"ghcr.io/peftsp/peftsp:{__version__}{suffix}"
    assert f"-t {tag} ." in text
    assert f'org.opencontainers.image.version="{__version__}"' in text
    predict = (REPO / "modules/nf-core/peftsp/predict/main.nf").read_text()
    assert f"'{tag}'" in predict


def test_apptainer_definition_pins_its_base_and_copies_files_that_exist():
    text = (CONTAINERS / "peftsp.def").read_text()
    assert re.search(r"^Bootstrap: docker$", text, re.MULTILINE)
    base = re.search(r"^From: (\S+)$", text, re.MULTILINE)[1]
    assert PINNED_IMAGE.match(base)
    for dockerfile in DOCKERFILES.values():  # one base for all three recipes
        assert f"FROM {base}\n" in dockerfile.read_text()
    parts = apptainer_sections(text)
    assert parts["arguments"].split() == ["FLAVOUR=cpu"]
    for flavour in DOCKERFILES:
        for line in parts["files"].strip().splitlines():
            source = line.replace("{{ FLAVOUR }}", flavour).split()[0]
            assert (REPO / source).exists(), source
    assert "containers/install.sh {{ FLAVOUR }}" in parts["post"]
    assert f"org.opencontainers.image.version {__version__}" in parts["labels"]


def test_install_script_installs_the_package_from_pins_and_smoke_tests_it():
    script = CONTAINERS / "install.sh"
    subprocess.run(["sh", "-n", str(script)], check=True)
    text = script.read_text()
    assert 'pip install --no-cache-dir -r "$src/containers/requirements-$flavour.txt"' in text
    assert 'pip install --no-cache-dir --no-deps "$src"' in text
    smoke = re.search(r'--fasta "\$src/([^"]+)"', text)[1]
    assert (REPO / smoke).is_file()
    assert "peftsp predict" in text and "--device cpu" in text


@pytest.mark.parametrize("flavour", DOCKERFILES)
def test_requirements_pin_every_dependency_of_the_package(flavour):
    pinned = pins(flavour)
    for requirement in package_dependencies():
        name = requirement.name.lower()
        if flavour == "gpu" and name == "onnxruntime":
            name = "onnxruntime-gpu"  # same module, CUDA/TensorRT build
        assert name in pinned, f"{name} not pinned for {flavour}"
        assert requirement.specifier.contains(pinned[name]), (name, pinned[name])
    assert "torch" not in pinned  # prediction needs no torch


def test_cpu_and_gpu_runtimes_differ_only_in_onnxruntime_and_its_gpu_libraries():
    cpu, gpu = pins("cpu"), pins("gpu")
    assert not any(n.startswith(("onnxruntime-", "nvidia", "tensorrt")) for n in cpu)
    assert "onnxruntime" not in gpu  # both provide the same module; never together
    shared = set(cpu) & set(gpu)
    assert {n: cpu[n] for n in shared} == {n: gpu[n] for n in shared}
    assert set(cpu) - shared == {"onnxruntime"}


def test_gpu_runtime_is_cuda_13_cudnn_9_tensorrt_10():
    gpu = pins("gpu")
    assert gpu["onnxruntime-gpu"].startswith("1.31.")
    assert gpu["nvidia-cuda-runtime"].startswith("13.")
    assert gpu["nvidia-cudnn-cu13"].startswith("9.")
    assert gpu["tensorrt-cu13-libs"].startswith("10.")  # TensorRT 11 does not load in ORT 1.31
    assert gpu["nvidia-cublas"].startswith("13.")


def test_the_default_model_ships_as_package_data():
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "default_model/*" in setuptools["package-data"]["peftsp"]
