"""Static checks of the Nextflow workflow, the nf-core modules and their configs.

Nextflow cannot run here, so the .nf files are parsed with reftrace (syntax, includes, process
directives) and, for what reftrace does not expose (sections, outputs, topics), read with
regular expressions over the conventional nf-core layout.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import jsonschema
import pytest
import reftrace
import yaml

from peftsp import __version__, pipeline
from peftsp.grammar import ORGANISMS

REPO = Path(__file__).resolve().parents[1]
MODULES = REPO / "modules" / "nf-core" / "peftsp"
STEPS = ("shard", "predict", "merge")
COMMANDS = {
    "shard": pipeline.SHARD_COMMAND,
    "predict": pipeline.PREDICT_COMMAND,
    "merge": pipeline.MERGE_COMMAND,
}
STANDARD_LABELS = {
    "process_single",
    "process_low",
    "process_medium",
    "process_high",
    "process_long",
    "process_high_memory",
}
SECTION = re.compile(r"^\s*(input|output|when|script|stub):\s*$", re.MULTILINE)
CONFIGS = ["nextflow.config", *sorted(str(p.relative_to(REPO)) for p in REPO.glob("conf/*.config"))]


def nf_files() -> list[Path]:
    return sorted(
        p
        for p in REPO.rglob("*.nf")
        if not {".venv", "work", ".nextflow"} & set(p.relative_to(REPO).parts)
    )


def sections(text: str) -> dict[str, str]:
    """The input/output/when/script/stub sections of a single-process module."""
    body = text[: text.rstrip().rindex("}")]  # drop the process's closing brace
    marks = list(SECTION.finditer(body))
    return {
        m[1]: body[m.end() : marks[i + 1].start() if i + 1 < len(marks) else len(body)]
        for i, m in enumerate(marks)
    }


def triple_quoted(section: str) -> str:
    """The shell text of a script/stub section, continuation lines joined."""
    shell = re.search(r'"""(.*?)"""', section, re.DOTALL)[1]
    return " ".join(shell.replace("\\\n", " ").split())


def element_names(line: str) -> list[str]:
    """Names of the elements of one input/output declaration, as meta.yml spells them."""
    quoted = r"""(?:"([^"]*)"|'([^']*)'|([A-Za-z_]\w*))"""
    pattern = rf"\b(?:val|path|eval|env)\(\s*{quoted}"
    return ["".join(g or "" for g in m.groups()) for m in re.finditer(pattern, line)]


def module_io(text: str) -> tuple[list[list[str]], dict[str, list[str]]]:
    """Inputs (channels of element names) and outputs (emit -> element names) of main.nf."""
    parts = sections(text)
    inputs = [element_names(line) for line in parts["input"].splitlines() if line.strip()]
    outputs = {}
    for line in parts["output"].splitlines():
        if line.strip():
            outputs[re.search(r"emit:\s*(\w+)", line)[1]] = element_names(line)
    return inputs, outputs


def yml_names(channel) -> list[str]:
    elements = channel if isinstance(channel, list) else [channel]
    return [next(iter(element)) for element in elements]


@pytest.fixture(scope="module")
def parsed() -> reftrace.ModuleListResult:
    return reftrace.parse_modules(str(REPO))


# --- must-show 1: parsing, includes, process conventions ---------------------------------


def test_every_nf_file_parses_and_is_seen(parsed):
    assert parsed.errors == []
    seen = {Path(m.path).resolve() for m in parsed.results}
    assert seen == {p.resolve() for p in nf_files()}
    assert len(seen) >= 5  # main.nf, the subworkflow and the three modules


def test_every_include_resolves_to_a_defined_name(parsed):
    unresolved = [
        path
        for include in parsed.unresolved_includes
        for path in include.includes
        if not path.startswith("plugin/")
    ]
    assert unresolved == []
    defined = {
        Path(m.path).resolve(): {p.name for p in m.processes} | {w.name for w in m.workflows}
        for m in parsed.results
    }
    checked = 0
    for module in parsed.results:
        for include in module.includes:
            if include.from_module.startswith("plugin/"):
                continue
            target = (REPO / Path(module.path).parent / f"{include.from_module}.nf").resolve()
            assert {item.name for item in include.items} <= defined[target], include.from_module
            checked += 1
    assert checked == 4  # main.nf -> subworkflow -> three modules


@pytest.mark.parametrize("step", STEPS)
def test_process_follows_nf_core_conventions(step):
    path = MODULES / step / "main.nf"
    module = reftrace.Module.from_file(str(path))
    (process,) = module.processes
    assert process.name == f"PEFTSP_{step.upper()}"
    assert [t.tag for t in process.tags] == ["${meta.id}"]
    labels = [label.value for label in process.labels]
    assert len(labels) == 1 and labels[0] in STANDARD_LABELS
    assert [c.possible_values for c in process.condas] == [["$moduleDir/environment.yml"]]
    (container,) = process.containers
    assert container.format.name == "TERNARY"
    assert "workflow.containerEngine in [singularity, apptainer]" in container.condition
    assert "!(task.ext.singularity_pull_docker_container)" in container.condition
    assert re.findall(r"oras://\S+", container.true_name)
    assert "oras://" not in container.false_name

    text = path.read_text()
    assert "params." not in text  # modules take everything as inputs or ext
    parts = sections(text)
    assert parts["when"].strip() == "task.ext.when == null || task.ext.when"
    script, stub = parts["script"], parts["stub"]
    assert "def args = task.ext.args ?: ''" in script
    assert "${args}" in triple_quoted(script)
    for block in (script, stub):
        assert 'prefix = task.ext.prefix ?: "${meta.id}"' in block
    _, outputs = module_io(text)
    for emit, elements in outputs.items():
        if emit.startswith("versions_"):
            assert "topic: versions" in re.search(rf".*emit:\s*{emit}\b.*", text)[0]
            continue
        produced = elements[1].replace("${prefix}", "")
        assert re.search(re.escape(produced).replace(r"\*", r"\d+"), triple_quoted(stub)), emit
    assert "versions_peftsp" in outputs


def test_container_images_carry_the_package_version():
    for step in STEPS:
        (process,) = reftrace.Module.from_file(str(MODULES / step / "main.nf")).processes
        container = process.containers[0]
        for image in re.findall(r"[\w./:-]+peftsp[\w.-]*:[\w.-]+", container.true_name):
            assert image.rsplit(":", 1)[1].split("-")[0] == __version__, image
        for image in re.findall(r"[\w./:-]+peftsp[\w.-]*:[\w.-]+", container.false_name):
            assert image.rsplit(":", 1)[1].split("-")[0] == __version__, image


def test_predict_takes_the_gpu_image_and_device_from_the_accelerator():
    text = (MODULES / "predict" / "main.nf").read_text()
    (process,) = reftrace.Module.from_file(str(MODULES / "predict" / "main.nf")).processes
    for branch in (process.containers[0].true_name, process.containers[0].false_name):
        gpu, cpu = re.fullmatch(r"\(task\.accelerator\) \? (\S+) : (\S+)", branch).groups()
        assert gpu.endswith("-gpu") and not cpu.endswith("-gpu")
    assert "def device = task.accelerator ? 'cuda' : 'cpu'" in sections(text)["script"]
    # the model bundle is its own input channel, optional ([] = the embedded model)
    inputs, _ = module_io(text)
    assert inputs == [["meta", "fasta"], ["model"]]
    assert """def model_option = model ? "--model ${model}" : ''""" in sections(text)["script"]


# --- must-show 2: meta.yml, environment.yml, schemas and configs ---------------------------


@pytest.mark.parametrize("step", STEPS)
def test_meta_yml_lists_the_inputs_and_outputs_of_main_nf(step):
    inputs, outputs = module_io((MODULES / step / "main.nf").read_text())
    meta = yaml.safe_load((MODULES / step / "meta.yml").read_text())
    assert meta["name"] == f"peftsp_{step}"
    assert len(meta["keywords"]) >= 3
    assert [yml_names(channel) for channel in meta["input"]] == inputs
    assert {emit: yml_names(channels[0]) for emit, channels in meta["output"].items()} == outputs
    versions = [yml_names(channel) for channel in meta["topics"]["versions"]]
    assert versions == [v for emit, v in outputs.items() if emit.startswith("versions_")]


@pytest.mark.parametrize("step", STEPS)
def test_environment_pins_this_version_of_the_package(step):
    env = yaml.safe_load((MODULES / step / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge", "bioconda"]
    assert env["dependencies"] == [f"bioconda::peftsp={__version__}"]


def config_params() -> dict[str, object]:
    """The `params { }` block of nextflow.config as Python values."""
    text = (REPO / "nextflow.config").read_text()
    block = re.search(r"^params\s*\{(.*?)^\}", text, re.MULTILINE | re.DOTALL)[1]
    params = {}
    for line in block.splitlines():
        match = re.match(r"\s*(\w+)\s*=\s*(.+?)\s*(?://.*)?$", line)
        if match:
            raw = match[2]
            literal = {"null": None, "true": True, "false": False}
            params[match[1]] = literal[raw] if raw in literal else json.loads(raw.replace("'", '"'))
    return params


def test_nextflow_schema_is_valid_and_its_defaults_are_the_config_params():
    schema = json.loads((REPO / "nextflow_schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    properties = {}
    for group in schema["$defs"].values():
        properties.update(group["properties"])
    assert [ref["$ref"].split("/")[-1] for ref in schema["allOf"]] == list(schema["$defs"])
    params = config_params()
    assert set(properties) == set(params)
    for name, value in params.items():
        assert properties[name].get("default") == value, name
    assert properties["organism"]["enum"] == list(ORGANISMS)
    assert schema["$defs"]["input_output_options"]["required"] == ["input", "outdir"]
    # the defaults themselves satisfy the schema
    instance = {k: v for k, v in params.items() if v is not None}
    instance |= {"input": "proteome.faa", "outdir": "results"}
    jsonschema.Draft202012Validator(schema).validate(instance)


def test_samplesheet_schema_agrees_with_the_local_runner():
    schema = json.loads((REPO / "assets" / "schema_input.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    columns = schema["items"]["properties"]
    assert tuple(columns) == pipeline.SAMPLESHEET_COLUMNS
    assert tuple(schema["items"]["required"]) == pipeline.REQUIRED_COLUMNS
    assert columns["sample"]["pattern"] == pipeline.SAMPLE_ID_PATTERN
    assert [o for o in columns["organism"]["enum"] if o] == list(ORGANISMS)
    validator = jsonschema.Draft202012Validator(schema)
    good = [{"sample": "ecoli", "fasta": "e.faa", "organism": "gram_negative"}]
    assert validator.is_valid(good)
    assert not validator.is_valid([{"sample": ".hidden", "fasta": "e.faa"}])
    assert not validator.is_valid([{"sample": "a", "fasta": "e.faa", "organism": "plant"}])


@pytest.mark.parametrize("config", CONFIGS)
def test_config_parses_in_strict_syntax(config):
    result = reftrace.ConfigFile.from_file(str(REPO / config))
    assert result.error is None
    code = re.sub(r"/\*.*?\*/|//[^\n]*", "", (REPO / config).read_text(), flags=re.DOTALL)
    assert not re.search(r"^\s*(if|def|switch|for|while)\b", code, re.MULTILINE)


def test_profiles_and_gpu_options_scoped_to_predict():
    text = (REPO / "nextflow.config").read_text()
    profiles = re.search(r"^profiles\s*\{(.*?)^\}", text, re.MULTILINE | re.DOTALL)[1]
    names = re.findall(r"^    (\w+)\s*\{", profiles, re.MULTILINE)
    assert {"docker", "singularity", "apptainer", "conda", "gpu", "test"} <= set(names)
    config = reftrace.ConfigFile.from_file(str(REPO / "nextflow.config")).config_file
    scopes = {s.name: s for p in config.process_scopes for s in p.named_scopes}
    assert list(scopes) == ["PEFTSP_PREDICT"]  # accelerator on the predict process only
    assert {d.name for d in scopes["PEFTSP_PREDICT"].directives} == {
        "accelerator",
        "containerOptions",
    }
    gpu = re.search(r"^    gpu\s*\{(.*?)^    \}", profiles, re.MULTILINE | re.DOTALL)[1]
    assert "'--nv'" in gpu and "'--gpus all'" in gpu
    assert "accelerator      = 1" in gpu
    assert "--gpus" not in profiles.replace(gpu, "")  # not in docker.runOptions for all


def test_test_profile_uses_a_tiny_input_and_the_default_model():
    text = (REPO / "conf" / "test.config").read_text()
    path = re.search(r'input\s*=\s*"\$\{projectDir\}/([^"]+)"', text)[1]
    fasta = (REPO / path).read_text()
    assert 1 <= fasta.count(">") <= 20
    assert not re.search(r"^\s*model\s*=", text, re.MULTILINE)


def test_base_config_defines_every_label_the_modules_use():
    text = (REPO / "conf" / "base.config").read_text()
    defined = set(re.findall(r"withLabel:\s*(\w+)", text))
    assert defined == STANDARD_LABELS
    for step in STEPS:
        (process,) = reftrace.Module.from_file(str(MODULES / step / "main.nf")).processes
        assert {label.value for label in process.labels} <= defined


# --- must-show 3 (one source): the module commands are the runner's templates --------------


@pytest.mark.parametrize("step", STEPS)
def test_module_command_is_the_runner_template(step):
    text = (MODULES / step / "main.nf").read_text()
    assert triple_quoted(sections(text)["script"]) == " ".join(COMMANDS[step].split())


def test_predict_ext_args_are_the_runner_args():
    text = (REPO / "conf" / "modules.config").read_text()
    ext_args = re.search(r"""withName: 'PEFTSP_PREDICT' \{\s*ext\.args\s*=\s*\{ "(.*)" \}""", text)
    assert ext_args[1] == pipeline.PREDICT_ARGS
    # the runner fills the same names the config uses
    argv = pipeline.render(
        pipeline.PREDICT_ARGS, {"meta.organism": "eukarya", "params.batch_size": "8"}
    )
    assert argv == ["--organism", "eukarya", "--batch-size", "8"]


def test_subworkflow_orders_shards_by_name_before_merging():
    text = (REPO / "subworkflows/local/fasta_predict_peftsp/main.nf").read_text()
    assert "shard: shard.baseName" in text
    assert "shards.sort { shard -> shard[0] }" in text
    assert "groupKey(proteome, meta.n_shards)" in text
    config = (REPO / "conf" / "modules.config").read_text()
    assert 'ext.prefix = { "${meta.id}_${meta.shard}" }' in config


# --- nf-test files --------------------------------------------------------------------------


@pytest.mark.parametrize("step", STEPS)
def test_nf_test_snapshots_match_the_tests(step):
    tests = (MODULES / step / "tests" / "main.nf.test").read_text()
    snapshot = json.loads((MODULES / step / "tests" / "main.nf.test.snap").read_text())
    names = re.findall(r'^    test\("([^"]+)"\)', tests, re.MULTILINE)
    assert list(snapshot) == names
    assert any(name.endswith(" - stub") for name in names)
    assert f'process "PEFTSP_{step.upper()}"' in tests
    for entry in snapshot.values():
        versions = entry["content"][-1]["versions_peftsp"]
        assert versions == [[f"PEFTSP_{step.upper()}", "peftsp", __version__]]


def test_shard_snapshot_is_what_the_shard_step_writes(tmp_path):
    tests = (MODULES / "shard" / "tests" / "main.nf.test").read_text()
    fasta = REPO / re.search(r'file\("\$\{projectDir\}/([^"]+)"', tests)[1]
    size = int(re.search(r"input\[1\] = (\d+)", tests)[1])
    shards = pipeline.write_shards(fasta, tmp_path / "test", size)
    written = [f"{p.name}:md5,{hashlib.md5(p.read_bytes()).hexdigest()}" for p in shards]
    snapshot = json.loads((MODULES / "shard" / "tests" / "main.nf.test.snap").read_text())
    (recorded,) = snapshot["proteome - faa - 3 per shard"]["content"][0]
    assert recorded == [{"id": "test"}, written]
