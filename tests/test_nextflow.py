"""Static checks of the Nextflow workflow, the nf-core modules and their configs.

Nextflow cannot run here, so the .nf files are parsed with reftrace (syntax, includes, process
directives) and, for what reftrace does not expose (sections, outputs, topics), read with
regular expressions over the conventional nf-core layout.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import jsonschema
import nf_schema
import pytest
import reftrace
import yaml
from nf_schema import config_params, strip_comments

from peftsp import __version__
from peftsp.cli import ORGANISM_ALIASES
from peftsp.grammar import ORGANISMS
from peftsp.workflow import commands, samplesheet

REPO = Path(__file__).resolve().parents[1]
MODULES = REPO / "modules" / "nf-core" / "peftsp"
STEPS = ("shard", "predict", "merge")
COMMANDS = {
    "shard": commands.SHARD_COMMAND,
    "predict": commands.PREDICT_COMMAND,
    "merge": commands.MERGE_COMMAND,
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
CONFIGS = [
    "nextflow.config",
    "tests/nextflow.config",
    *sorted(str(p.relative_to(REPO)) for p in REPO.glob("conf/*.config")),
]


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
    assert len([label for label in labels if label in STANDARD_LABELS]) == 1
    # the GPU process also carries process_gpu (a lint warning in nf-core/modules, asked for
    # here so that -profile gpu reaches it through base.config's selector)
    assert set(labels) - STANDARD_LABELS == ({"process_gpu"} if step == "predict" else set())
    assert [c.possible_values for c in process.condas] == [["$moduleDir/environment.yml"]]
    (container,) = process.containers
    assert container.format.name == "TERNARY"
    assert "workflow.containerEngine in [singularity, apptainer]" in container.condition
    assert "!(task.ext.singularity_pull_docker_container)" in container.condition
    # Singularity/Apptainer: the SIF release asset over https (oras:// fails nf-core lint), or
    # for the GPU image, too large for a release asset, the Docker image converted at pull
    singularity = re.findall(r"(https://\S+\.sif|docker://\S+)", container.true_name)
    assert singularity and "oras://" not in container.true_name
    assert "://" not in container.false_name

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
        for url in re.findall(r"https://\S+\.sif", container.true_name):
            assert url.endswith(f"/v{__version__}/peftsp-{__version__}.sif"), url


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


def schema_properties() -> dict[str, dict]:
    schema = json.loads((REPO / "nextflow_schema.json").read_text())
    return {k: v for group in schema["$defs"].values() for k, v in group["properties"].items()}


def test_nextflow_schema_is_valid_and_its_defaults_are_the_config_params():
    schema = json.loads((REPO / "nextflow_schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    properties = schema_properties()
    assert [ref["$ref"].split("/")[-1] for ref in schema["allOf"]] == list(schema["$defs"])
    params = config_params(REPO / "nextflow.config", REPO)
    assert set(properties) == set(params)
    dynamic = {"trace_report_suffix"}  # the start time: no default in the schema
    for name, value in params.items():
        if name not in dynamic:
            assert properties[name].get("default") == (value or None), name
    assert properties["organism"]["enum"] == [*ORGANISMS, *ORGANISM_ALIASES]
    io_group = schema["$defs"]["input_output_options"]
    assert io_group["required"] == ["outdir"]
    assert io_group["oneOf"] == [{"required": ["input"]}, {"required": ["fasta"]}]
    # --input is a samplesheet read with assets/schema_input.json, --fasta a single proteome
    assert properties["input"]["schema"] == "assets/schema_input.json"
    assert "schema" not in properties["fasta"]


def test_samplesheet_schema_agrees_with_the_local_runner():
    schema = json.loads((REPO / "assets" / "schema_input.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    columns = schema["items"]["properties"]
    assert tuple(columns) == samplesheet.SAMPLESHEET_COLUMNS
    assert tuple(schema["items"]["required"]) == samplesheet.REQUIRED_COLUMNS
    assert columns["sample"]["pattern"] == samplesheet.SAMPLE_ID_PATTERN
    assert [o for o in columns["organism"]["enum"] if o] == [*ORGANISMS, *ORGANISM_ALIASES]
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


def profiles() -> dict[str, str]:
    text = strip_comments((REPO / "nextflow.config").read_text())
    body = nf_schema.block(text, "profiles")
    names = re.findall(r"^    (\w+)\s*\{", body, re.MULTILINE)
    return {name: nf_schema.block(body[body.index(f"    {name} {{") :], name) for name in names}


def test_profiles_and_gpu_options_scoped_to_the_gpu_label():
    found = profiles()
    assert {"docker", "podman", "singularity", "apptainer", "conda", "gpu", "test", "debug"} <= set(
        found
    )
    gpu = found["gpu"]
    # only processes labelled process_gpu: the engine's GPU flag (and the TensorRT cache
    # mount), the scheduler request that grid executors need, and maxForks
    assert re.search(r"withLabel: 'process_gpu' \{", gpu)
    assert "withName" not in gpu
    assert "'--nv'" in gpu and "'--gpus all'" in gpu and "'--device nvidia.com/gpu=all'" in gpu
    assert "-B ${params.trt_cache}" in gpu and "-v ${params.trt_cache}:${params.trt_cache}" in gpu
    assert "clusterOptions   = { params.gpu_cluster_options ?: '' }" in gpu
    assert "maxForks         = params.gpu_max_forks" in gpu
    assert "includeConfig params.container_gpu ? 'conf/container_gpu.config' : '/dev/null'" in gpu
    others = "".join(v for k, v in found.items() if k != "gpu")
    assert "--gpus" not in others and "--nv" not in others  # never for every process
    # base.config: the label asks for one GPU only under -profile gpu
    base = (REPO / "conf" / "base.config").read_text()
    assert "accelerator = { workflow.profile.tokenize(',').contains('gpu') ? 1 : null }" in base
    params = config_params(REPO / "nextflow.config", REPO)
    assert params["gpu_cluster_options"] == "--gres=gpu:1"  # SLURM's, documented per executor
    assert params["gpu_max_forks"] == 1


def test_the_gpu_process_is_predict_only():
    for step in STEPS:
        (process,) = reftrace.Module.from_file(str(MODULES / step / "main.nf")).processes
        labels = {label.value for label in process.labels}
        assert ("process_gpu" in labels) == (step == "predict")


def test_images_you_build_replace_the_registry_images():
    text = (REPO / "nextflow.config").read_text()
    assert "includeConfig params.container ? 'conf/container.config' : '/dev/null'" in text
    cpu = (REPO / "conf" / "container.config").read_text()
    gpu = (REPO / "conf" / "container_gpu.config").read_text()
    assert "withName: 'PEFTSP_SHARD|PEFTSP_MERGE' {\n        container = params.container" in cpu
    assert "withName: 'PEFTSP_PREDICT' {\n        container = params.container\n" in cpu
    # the same selector, included later by the gpu profile: it wins for the GPU process
    assert "withName: 'PEFTSP_PREDICT' {\n        container = params.container_gpu" in gpu
    assert text.index("conf/container.config") < text.index("conf/container_gpu.config")
    for config in ("container.config", "container_gpu.config"):
        assert reftrace.ConfigFile.from_file(str(REPO / "conf" / config)).error is None


def test_template_pieces():
    text = (REPO / "nextflow.config").read_text()
    # nf-core/configs: institutional profiles, skipped offline
    assert "${params.custom_config_base}/nfcore_custom.config" in text
    assert "System.getenv('NXF_OFFLINE')" in text
    # trace, report, timeline and DAG in <outdir>/pipeline_info
    for scope in ("timeline", "report", "trace", "dag"):
        body = nf_schema.block(strip_comments(text), scope)
        assert "enabled = true" in body and "${params.outdir}/pipeline_info/" in body, scope
    # bash with pipefail
    shell = re.search(r"process\.shell = \[(.*?)\]", strip_comments(text), re.DOTALL)[1]
    assert re.findall(r"'([^']+)'", shell) == ["bash", "-C", "-e", "-u", "-o", "pipefail"]
    # nf-schema >= 2.7 (2.x: the API main.nf uses)
    version = re.search(r"id 'nf-schema@(\d+)\.(\d+)\.(\d+)'", text).groups()
    assert (2, 7) <= tuple(map(int, version[:2])) < (3, 0)
    # onnxruntime's device id under $HOME: never, also with -profile conda
    assert re.search(r"ORT_DISABLE_TELEMETRY\s*=\s*'1'", text)
    # retries: 130..145 (killed by a signal), 104, 175..177
    base = (REPO / "conf" / "base.config").read_text()
    assert "task.exitStatus in ((130..145) + 104 + (175..177)) ? 'retry' : 'finish'" in base


def test_help_comes_from_the_schema():
    main = (REPO / "main.nf").read_text()
    assert re.search(r"include \{[^}]*\bparamsHelp\b[^}]*\} from 'plugin/nf-schema'", main)
    help_at = main.index("if (params.help || params.help_full)")
    assert help_at < main.index("validateParameters()")  # --help needs no --input
    assert "paramsHelp(help_options" in main and "exit 0" in main
    properties = schema_properties()
    for name in ("help", "help_full", "show_hidden", "validate_params"):
        assert properties[name]["hidden"] is True


def versions_yaml(entries: list[tuple[str, str, str]]) -> str:
    """main.nf's versions file from topic entries (process, tool, version), in Python: one
    key per process with its tools, a Workflow key (the .map/.groupTuple/.collectFile chain)."""
    grouped: dict[str, list[str]] = {}
    for process, tool, version in entries:
        line = f"  {tool}: {version}"
        name = process.split(":")[-1]
        if line not in grouped.setdefault(name, []):
            grouped[name].append(line)
    chunks = [f"{name}:\n" + "\n".join(sorted(lines)) for name, lines in grouped.items()]
    chunks.append("Workflow:\n  Nextflow: 25.10.4\n  peftsp: 0.1.0")
    return "\n".join(sorted(chunks)) + "\n"


def test_versions_file_has_one_key_per_process_with_all_its_tools():
    main = (REPO / "main.nf").read_text()
    chain = main[main.index("channel.topic('versions')") :]
    by_process = "[ process.tokenize(':').last(), \"  ${tool}: ${version}\" ]"
    assert f".map {{ process, tool, version -> {by_process} }}" in chain
    assert ".groupTuple(sort: true)" in chain
    assert ".map { process, tools -> \"${process}:\\n${tools.join('\\n')}\" }" in chain
    # what the old chain wrote (one "PROCESS:\n  tool: v" chunk per entry) loses a tool in YAML
    entries = [
        (f"FASTA_PREDICT_PEFTSP:PEFTSP_{step.upper()}", tool, version)
        for step in STEPS
        for tool, version in (("peftsp", __version__), ("onnxruntime", "1.32.0"))
        if tool == "peftsp" or step == "predict"
    ] * 3  # one entry per task
    old = "\n".join(sorted({f"{p.split(':')[-1]}:\n  {t}: {v}" for p, t, v in entries}))
    assert yaml.safe_load(old)["PEFTSP_PREDICT"] == {"peftsp": __version__}  # onnxruntime lost
    loaded = yaml.safe_load(versions_yaml(entries))
    assert loaded["PEFTSP_PREDICT"] == {"onnxruntime": "1.32.0", "peftsp": __version__}
    assert set(loaded) == {"PEFTSP_SHARD", "PEFTSP_PREDICT", "PEFTSP_MERGE", "Workflow"}


def test_the_tensorrt_cache_is_in_the_task_directory_or_trt_cache():
    text = (REPO / "conf" / "modules.config").read_text()
    ext_args = re.search(r"withName: 'PEFTSP_PREDICT' \{\s*ext\.args\s*=\s*\{ (.*) \}\n", text)[1]
    assert (
        "(task.accelerator ? \" --trt-cache ${params.trt_cache ?: 'trt_cache'}\""
        " + (params.use_tensorrt ? ' --device tensorrt' : '') : '')"
    ) in ext_args
    # a relative path: the task's own directory (not $HOME, unwritable under docker -u)
    assert "$HOME" not in ext_args and "~" not in ext_args


def test_base_config_defines_every_label_the_modules_use():
    text = (REPO / "conf" / "base.config").read_text()
    defined = set(re.findall(r"withLabel:\s*(\w+)", text))
    assert defined == STANDARD_LABELS | {"process_gpu"}
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
    # a CPU task (no accelerator): exactly the runner's arguments; a GPU task adds the
    # TensorRT cache (test_the_tensorrt_cache_is_in_the_task_directory_or_trt_cache)
    ext_args = re.search(
        r"""withName: 'PEFTSP_PREDICT' \{\s*ext\.args\s*=\s*\{ "([^"]*)" \+""", text
    )
    assert ext_args[1] == commands.PREDICT_ARGS
    # the runner fills the same names the config uses
    argv = commands.render(
        commands.PREDICT_ARGS, {"meta.organism": "eukarya", "params.batch_size": "8"}
    )
    assert argv == ["--organism", "eukarya", "--batch-size", "8"]


def test_subworkflow_orders_shards_by_name_before_merging():
    text = (REPO / "subworkflows/local/fasta_predict_peftsp/main.nf").read_text()
    assert "shard: shard.baseName" in text
    assert "shards.sort { shard -> shard[0] }" in text
    assert "groupKey(proteome, meta.n_shards)" in text
    config = (REPO / "conf" / "modules.config").read_text()
    assert 'ext.prefix = { "${meta.id}_${meta.shard}" }' in config


# --- the test profile ---------------------------------------------------------------------


def test_test_profile_uses_a_tiny_samplesheet_and_the_default_model():
    text = (REPO / "conf" / "test.config").read_text()
    path = re.search(r'input\s*=\s*"\$\{projectDir\}/([^"]+)"', text)[1]
    rows = list(csv.DictReader((REPO / path).open()))
    assert [row["sample"] for row in rows] == ["test", "test_eukarya"]
    for row in rows:  # relative to the launch directory: a checkout's root
        assert 1 <= (REPO / row["fasta"]).read_text().count(">") <= 20
    assert not re.search(r"^\s*(model|fasta)\s*=", text, re.MULTILINE)


# nf-test files and snapshots: tests/test_nf_test_snapshots.py


def test_main_nf_names_a_single_fasta_sample_as_predict_does():
    """main.nf's defaultSample mirrors peftsp.predict.default_sample: same extension list."""
    import re

    from peftsp.predict import SAMPLE_EXTENSIONS

    source = (REPO / "main.nf").read_text()
    listed = re.search(r"def defaultSample\(path\) \{\s*def extensions = \[([^\]]*)\]", source)
    assert listed, "main.nf has no defaultSample with an extension list"
    assert set(re.findall(r"'([^']+)'", listed.group(1))) == set(SAMPLE_EXTENSIONS)
    assert "defaultSample(params.fasta)" in source
