"""Static checks of the container recipes: pinned versions, the package installed, every file
they copy present, the base image a build argument, no caches left, the CUDA major a build
argument. The CPU image and the Apptainer debootstrap steps are built and run by
bench/container.py (podman); the GPU image needs NVIDIA's package index, not reachable here."""

from __future__ import annotations

import fnmatch
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
DEFINITIONS = {
    "docker": CONTAINERS / "peftsp.def",
    "debootstrap": CONTAINERS / "peftsp-debootstrap.def",
}
PINNED_IMAGE = re.compile(r"^[\w.-]+(/[\w.-]+)*:\d+\.\d+\.\d+[\w.-]*(@sha256:[0-9a-f]{64})?$")
CUDA_MAJORS = ("12", "13")


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"^\s*#.*\n", "", dockerfile.read_text(), flags=re.MULTILINE)
    text = text.replace("\\\n", " ")
    return [tuple(line.split(None, 1)) for line in text.splitlines() if line.strip()]


def pins(name: str) -> dict[str, str]:
    """name -> version of containers/requirements-<name>.txt; every line an exact pin."""
    result = {}
    for line in (CONTAINERS / f"requirements-{name}.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            match = re.fullmatch(r"([A-Za-z0-9_.-]+)==([\w.]+)", line)
            assert match, f"not pinned exactly: {line}"
            package = match[1].lower().replace("_", "-")
            assert package not in result, f"pinned twice: {package}"
            result[package] = match[2]
    return result


def apptainer_sections(text: str) -> dict[str, str]:
    parts = re.split(r"^%(\w+)\s*$", text, flags=re.MULTILINE)
    return {name: body for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def apptainer_header(text: str) -> dict[str, str]:
    head = text[: re.search(r"^%\w+", text, re.MULTILINE).start()]
    lines = [line for line in head.splitlines() if line.strip() and not line.startswith("#")]
    return {key.strip(): value.strip() for key, value in (line.split(":", 1) for line in lines)}


def package_dependencies() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in project["dependencies"]]


def dockerignore_keeps(path: str) -> bool:
    """Whether .dockerignore (an allowlist: `*` then `!path` lines) keeps a context path."""
    kept = False
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated, pattern = line.startswith("!"), line.lstrip("!")
        if fnmatch.fnmatch(path, pattern) or path.startswith(pattern.rstrip("/") + "/"):
            kept = negated
    return kept


# --- Dockerfiles ------------------------------------------------------------------------------


@pytest.mark.parametrize("flavour", DOCKERFILES)
def test_dockerfile_base_is_a_build_argument_with_a_pinned_default(flavour):
    steps = instructions(DOCKERFILES[flavour])
    assert steps[0][0] == "ARG"
    name, default = steps[0][1].split("=", 1)
    assert name == "BASE_IMAGE" and PINNED_IMAGE.match(default), default
    froms = [args for op, args in steps if op == "FROM"]
    assert froms == ["scratch AS source", "${BASE_IMAGE}"]


@pytest.mark.parametrize("flavour", DOCKERFILES)
def test_dockerfile_mounts_the_sources_instead_of_keeping_them(flavour):
    steps = instructions(DOCKERFILES[flavour])
    final = steps[[op for op, _ in steps].index("FROM", 2) :]
    assert "COPY" not in [op for op, _ in final] and "ADD" not in [op for op, _ in final]
    (install,) = [args for op, args in final if op == "RUN"]
    assert install.startswith("--mount=type=bind,from=source,source=/opt/peftsp/src,")
    suffix = 'gpu "${CUDA_MAJOR}"' if flavour == "gpu" else "cpu"
    assert f"sh /tmp/peftsp-src/containers/install.sh {suffix}" in install
    assert install.endswith("&& rm -rf /tmp/peftsp-src")
    env = " ".join(args for op, args in final if op == "ENV")
    for setting in ("ORT_DISABLE_TELEMETRY=1", "PIP_NO_CACHE_DIR=1", "PYTHONDONTWRITEBYTECODE=1"):
        assert setting in env


@pytest.mark.parametrize("flavour", DOCKERFILES)
def test_dockerfile_copies_files_that_exist_and_that_the_context_keeps(flavour):
    steps = instructions(DOCKERFILES[flavour])
    copied = [args.split()[:-1] for op, args in steps if op == "COPY"]
    sources = {source for group in copied for source in group}
    for source in sources:
        assert (REPO / source).exists(), source
        assert dockerignore_keeps(source), f".dockerignore drops {source}"
    # the package (with its embedded default model, package data) and what builds it
    assert {"peftsp", "pyproject.toml", "README.md", "containers/install.sh"} <= sources
    assert {f"containers/requirements-{n}.txt" for n in ("cpu", "gpu-cu12", "gpu-cu13")} <= sources
    assert not dockerignore_keeps(".venv") and not dockerignore_keeps("runs")


def test_gpu_dockerfile_takes_the_cuda_major_with_a_12_default():
    steps = instructions(DOCKERFILES["gpu"])
    assert ("ARG", "CUDA_MAJOR=12") in steps
    text = DOCKERFILES["gpu"].read_text()
    assert "--build-arg CUDA_MAJOR=13" in text
    for major in CUDA_MAJORS:
        assert (CONTAINERS / f"requirements-gpu-cu{major}.txt").is_file()


@pytest.mark.parametrize("flavour", DOCKERFILES)
def test_dockerfile_documents_its_build_command(flavour):
    text = DOCKERFILES[flavour].read_text()
    suffix = "-gpu" if flavour == "gpu" else ""
    assert (
        f"docker build -f containers/Dockerfile.{flavour} -t peftsp:{__version__}{suffix} ." in text
    )
    assert f'org.opencontainers.image.version="{__version__}"' in text


def test_module_images_carry_the_package_version():
    predict = (REPO / "modules/nf-core/peftsp/predict/main.nf").read_text()
    assert f"'ghcr.io/peftsp/peftsp:{__version__}'" in predict
    assert f"'ghcr.io/peftsp/peftsp:{__version__}-gpu'" in predict
    assert f"'docker://ghcr.io/peftsp/peftsp:{__version__}-gpu'" in predict
    sif = f"releases/download/v{__version__}/peftsp-{__version__}.sif'"
    for step in ("shard", "predict", "merge"):
        assert sif in (REPO / f"modules/nf-core/peftsp/{step}/main.nf").read_text()


# --- Apptainer ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", DEFINITIONS)
def test_apptainer_definition_copies_files_that_exist_and_installs_the_package(kind):
    text = DEFINITIONS[kind].read_text()
    parts = apptainer_sections(text)
    arguments = dict(line.split("=", 1) for line in parts["arguments"].split())
    assert arguments["FLAVOUR"] == "cpu" and arguments["CUDA_MAJOR"] == "12"
    for line in parts["files"].strip().splitlines():
        source = line.split()[0]
        assert (REPO / source).exists(), source
    assert (
        "sh /opt/peftsp/src/containers/install.sh {{ FLAVOUR }} {{ CUDA_MAJOR }}" in parts["post"]
    )
    assert parts["post"].rstrip().endswith("rm -rf /opt/peftsp/src")
    assert "ORT_DISABLE_TELEMETRY=1" in parts["environment"]
    assert f"org.opencontainers.image.version {__version__}" in parts["labels"]


def test_apptainer_docker_definition_uses_the_dockerfiles_base():
    header = apptainer_header(DEFINITIONS["docker"].read_text())
    assert header["Bootstrap"] == "docker"
    for dockerfile in DOCKERFILES.values():
        assert f"ARG BASE_IMAGE={header['From']}\n" in dockerfile.read_text()


def test_apptainer_debootstrap_definition_needs_only_a_debian_mirror():
    text = DEFINITIONS["debootstrap"].read_text()
    header = apptainer_header(text)
    assert header["Bootstrap"] == "debootstrap"
    assert header["OSVersion"] == "bookworm"  # the Debian of the official python image
    assert header["MirrorURL"] == "{{ MIRROR }}"
    # Apptainer's debootstrap call excludes openssl, which ca-certificates needs to configure
    assert set(header["Include"].split()) == {
        "python3",
        "python3-venv",
        "ca-certificates",
        "openssl",
    }
    parts = apptainer_sections(text)
    arguments = dict(line.split("=", 1) for line in parts["arguments"].split())
    assert arguments["MIRROR"].startswith("http") and arguments["PIP_INDEX"].startswith("http")
    assert "PIP_INDEX_URL={{ PIP_INDEX }}" in parts["post"]
    assert "python3 -m venv /opt/peftsp/venv" in parts["post"]
    assert "PATH=/opt/peftsp/venv/bin:$PATH" in parts["environment"]


# --- install.sh and the pins --------------------------------------------------------------------


def test_install_script_installs_the_package_from_pins_and_leaves_no_caches():
    script = CONTAINERS / "install.sh"
    subprocess.run(["sh", "-n", str(script)], check=True)
    text = script.read_text()
    assert "requirements=$src/containers/requirements-gpu-cu$cuda.txt" in text
    assert 'pip install $index -r "$requirements"' in text
    assert 'pip install --no-deps "$src"' in text
    assert 'index="--extra-index-url https://pypi.nvidia.com"' in text  # TensorRT's wheels
    smoke = re.search(r'--fasta "\$src/([^"]+)"', text)[1]
    assert (REPO / smoke).is_file()
    assert "peftsp predict" in text and "--device cpu" in text
    exports = re.search(r"^export (.*)$", text, re.MULTILINE)[1]
    assert {"PIP_NO_CACHE_DIR=1", "ORT_DISABLE_TELEMETRY=1", "PYTHONDONTWRITEBYTECODE=1"} <= set(
        exports.split()
    )
    assert "rm -rf /var/lib/apt/lists/*" in text and "rm -rf /root/.cache" in text


def test_install_script_refuses_an_unknown_flavour_or_cuda_major(tmp_path):
    for args in (["tpu"], ["gpu", "11"]):
        result = subprocess.run(
            ["sh", str(CONTAINERS / "install.sh"), *args], capture_output=True, text=True
        )
        assert result.returncode == 2, result.stderr
        assert "install.sh:" in result.stderr


@pytest.mark.parametrize("name", ["cpu", "gpu-cu12", "gpu-cu13"])
def test_requirements_pin_every_dependency_of_the_package(name):
    pinned = pins(name)
    for requirement in package_dependencies():
        package = requirement.name.lower()
        if name.startswith("gpu") and package == "onnxruntime":
            package = "onnxruntime-gpu"  # same module, CUDA/TensorRT build
        assert package in pinned, f"{package} not pinned for {name}"
        assert requirement.specifier.contains(pinned[package]), (package, pinned[package])
    assert "torch" not in pinned  # prediction needs no torch


@pytest.mark.parametrize("major", CUDA_MAJORS)
def test_cpu_and_gpu_runtimes_differ_only_in_onnxruntime_and_its_gpu_libraries(major):
    cpu, gpu = pins("cpu"), pins(f"gpu-cu{major}")
    assert not any(n.startswith(("onnxruntime-", "nvidia", "tensorrt")) for n in cpu)
    assert "onnxruntime" not in gpu  # both provide the same module; never together
    shared = set(cpu) & set(gpu)
    assert {n: cpu[n] for n in shared} == {n: gpu[n] for n in shared}
    assert set(cpu) - shared == {"onnxruntime"}


def test_gpu_runtimes_pair_onnxruntime_with_its_cuda_cudnn_and_tensorrt():
    # onnxruntime-gpu on PyPI: 1.26.0 is the last CUDA 12 build (libcudart.so.12), 1.27 and
    # later are CUDA 13; both link cuDNN 9 and TensorRT 10 (libnvinfer.so.10).
    cu12, cu13 = pins("gpu-cu12"), pins("gpu-cu13")
    assert cu12["onnxruntime-gpu"] == "1.26.0"
    assert cu12["nvidia-cuda-runtime-cu12"].startswith("12.")
    assert cu12["nvidia-cublas-cu12"].startswith("12.")
    assert cu12["nvidia-cudnn-cu12"].startswith("9.")
    assert cu12["tensorrt-cu12-libs"].startswith("10.")
    assert not [n for n in cu12 if "cu13" in n or n in ("nvidia-cuda-runtime", "nvidia-cublas")]
    major, minor = map(int, cu13["onnxruntime-gpu"].split(".")[:2])
    assert (major, minor) >= (1, 27)
    assert cu13["nvidia-cuda-runtime"].startswith("13.")
    assert cu13["nvidia-cudnn-cu13"].startswith("9.")
    assert cu13["tensorrt-cu13-libs"].startswith("10.")  # TensorRT 11 does not load
    assert not [n for n in cu13 if "cu12" in n]


def test_the_default_model_ships_as_package_data():
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "default_model/*" in setuptools["package-data"]["peftsp"]
