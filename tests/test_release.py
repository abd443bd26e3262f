"""The release workflow (.github/workflows/release.yml) publishes exactly what the modules name:
the images, the SIF behind the modules' https:// URL, and the wheel. (GitHub Actions cannot run
here; the file is also valid against GitHub's workflow schema: `check-jsonschema
--builtin-schema vendor.github-workflows .github/workflows/release.yml`.)"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from peftsp import __version__

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / ".github" / "workflows" / "release.yml"
MODULES = REPO / "modules" / "nf-core" / "peftsp"


def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def module_images() -> set[str]:
    text = "".join(
        (MODULES / step / "main.nf").read_text() for step in ("shard", "predict", "merge")
    )
    return set(re.findall(r"'(?:docker://)?(ghcr\.io/[^']+)'", text))


def test_runs_on_a_version_tag_and_checks_it_is_the_package_version():
    flow = workflow()
    assert flow[True]["push"]["tags"] == ["v*.*.*"]  # YAML reads the key `on` as True
    (step,) = [s for s in flow["jobs"]["version"]["steps"] if s.get("id") == "version"]
    command = re.search(r"version=\$\((sed .*)\)", step["run"])[1]
    printed = subprocess.run(command, shell=True, cwd=REPO, capture_output=True, text=True)
    assert printed.stdout.strip() == __version__
    assert 'test "v${version}" = "${GITHUB_REF_NAME}"' in step["run"]


def test_pushes_every_image_the_modules_name():
    flow = workflow()
    image = flow["env"]["REGISTRY_IMAGE"]
    job = flow["jobs"]["images"]
    assert job["permissions"]["packages"] == "write"
    (build,) = [s for s in job["steps"] if s.get("uses", "").startswith("docker/build-push-action")]
    assert build["with"]["push"] is True
    assert build["with"]["tags"] == (
        "${{ env.REGISTRY_IMAGE }}:${{ needs.version.outputs.version }}${{ matrix.suffix }}"
    )
    pushed = {f"{image}:{__version__}{m['suffix']}" for m in job["strategy"]["matrix"]["include"]}
    assert module_images() <= pushed
    assert f"{image}:{__version__}-gpu-cuda13" in pushed
    dockerfiles = {m["dockerfile"] for m in job["strategy"]["matrix"]["include"]}
    assert dockerfiles == {"containers/Dockerfile.cpu", "containers/Dockerfile.gpu"}
    cuda = {m["suffix"]: m["cuda"] for m in job["strategy"]["matrix"]["include"]}
    assert cuda["-gpu"] == "12" and cuda["-gpu-cuda13"] == "13"


def test_the_sif_is_the_release_asset_behind_the_modules_url():
    flow = workflow()
    text = (MODULES / "predict" / "main.nf").read_text()
    url = re.search(r"'(https://github\.com/[^']+\.sif)'", text)[1]
    assert url == (
        f"https://github.com/peftsp/peftsp/releases/download/v{__version__}/peftsp-{__version__}.sif"
    )
    build = "\n".join(s.get("run", "") for s in flow["jobs"]["sif"]["steps"])
    assert (
        'apptainer build "peftsp-${VERSION}.sif" "docker://${REGISTRY_IMAGE}:${VERSION}"' in build
    )
    release = flow["jobs"]["release"]
    (publish,) = [s for s in release["steps"] if s.get("uses", "").startswith("softprops/")]
    assert "artifacts/*.sif" in publish["with"]["files"]
    assert set(release["needs"]) >= {"wheel", "sif"}


def test_builds_checks_and_publishes_the_wheel():
    flow = workflow()
    steps = flow["jobs"]["wheel"]["steps"]
    runs = "\n".join(s.get("run", "") for s in steps)
    assert "python -m build" in runs
    assert "peftsp predict --fasta assets/test/proteome.faa" in runs
    release = flow["jobs"]["release"]
    (publish,) = [s for s in release["steps"] if s.get("uses", "").startswith("softprops/")]
    assert "artifacts/*.whl" in publish["with"]["files"]
    pypi = [s for s in release["steps"] if s.get("uses", "").startswith("pypa/")]
    assert pypi and pypi[0]["if"] == "vars.PUBLISH_PYPI == 'true'"
    assert release["permissions"]["id-token"] == "write"


def test_actions_are_pinned_to_a_release():
    for job in workflow()["jobs"].values():
        for step in job["steps"]:
            if "uses" in step:
                assert re.fullmatch(r"[\w.-]+/[\w.-]+@(v\d+(\.\d+)*|release/v\d+)", step["uses"])
