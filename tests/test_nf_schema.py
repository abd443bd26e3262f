"""Every parameter validated the way nf-schema validates it (tests/nf_schema.py), for the test
profile, for every `nextflow run` command of the README and docs/nextflow.md, and for
samplesheets in each format the plugin reads."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from nf_schema import (
    Command,
    config_params,
    read_samplesheet,
    run_commands,
    run_params,
    string_to_value,
    validate_parameters,
)

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", REPO / "docs" / "nextflow.md"]
FASTA = REPO / "assets" / "test" / "proteome.faa"


def validate(line: str, launch_dir: Path = REPO, env: dict | None = None):
    return validate_parameters(REPO, launch_dir, run_params(REPO, Command.parse(line, env)))


# --- the test profile ----------------------------------------------------------------------


def test_the_test_profile_is_valid_from_a_checkout():
    result = validate("nextflow run . -profile test,docker --outdir results")
    assert result.errors == []
    assert result.unrecognised == []
    samplesheet = Path(result.params["input"])
    assert samplesheet.parent == REPO / "assets"
    rows = read_samplesheet(samplesheet)
    assert [row["sample"] for row in rows] == ["test", "test_eukarya"]
    assert rows[0] == {"sample": "test", "fasta": "assets/test/proteome.faa"}  # organism: empty
    assert rows[1]["organism"] == "eukarya"
    assert result.params["shard_size"] == 3


def test_the_test_profile_ships_a_samplesheet_not_a_fasta():
    params = config_params(REPO / "conf" / "test.config", REPO)
    assert params["input"].endswith(".csv")
    assert "fasta" not in params


def test_a_fasta_given_as_input_is_refused_row_by_row_like_nf_schema(tmp_path):
    # The bug: nf-schema reads --input as a samplesheet whatever its name; a FASTA has no
    # commas or tabs, so it is read as TSV, its first line the header, every other line a row
    # without `sample` and `fasta`.
    result = validate(f"nextflow run . --input {FASTA} --outdir results")
    (samplesheet_error,) = [e for e in result.errors if "Validation of file failed" in e]
    rows = FASTA.read_text().count("\n") - 1
    assert (
        len(re.findall(r"-> Entry \d+: 'sample' is a required property", samplesheet_error)) == rows
    )
    assert any("does not match" in e for e in result.errors)  # --input's pattern
    # ... while the same file as --fasta is valid
    assert validate(f"nextflow run . --fasta {FASTA} --outdir results").errors == []


def test_input_and_fasta_exclude_each_other_and_one_is_required():
    both = validate(
        f"nextflow run . --input assets/samplesheet_test.csv --fasta {FASTA} --outdir r"
    )
    assert any("is valid under each of" in e for e in both.errors)
    neither = validate("nextflow run . --outdir results")
    assert any("is not valid under any of the given schemas" in e for e in neither.errors)
    assert validate("nextflow run . --fasta assets/samplesheet_test.csv --outdir r").errors


# --- the documented commands -------------------------------------------------------------------


def documented_commands() -> list[str]:
    commands = [c for doc in DOCS for c in run_commands(doc.read_text())]
    assert len(commands) >= 3
    return commands


def docs_samplesheet() -> str:
    """The example samplesheet of docs/nextflow.md (its first csv code block)."""
    text = (REPO / "docs" / "nextflow.md").read_text()
    return re.search(r"```csv\n(.*?)```", text, re.DOTALL)[1]


def launch_dir_for(command: Command, root: Path) -> Path:
    """A launch directory holding the files a documented command names, made the way a user
    would: the docs' samplesheet and its FASTA files, a FASTA, a model bundle directory, a
    TensorRT cache directory (relative paths only: nothing is written outside it)."""
    root.mkdir(parents=True, exist_ok=True)
    for name, value in command.params.items():
        if not isinstance(value, str) or name == "outdir":
            continue
        if Path(value).is_absolute():
            continue  # .sif images: checked by pattern only
        path = root / value
        if name == "input":
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(docs_samplesheet())
            for row in read_samplesheet(path):
                (root / row["fasta"]).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(FASTA, root / row["fasta"])
        elif name == "fasta":
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(FASTA, path)
        elif name in ("model", "trt_cache"):
            path.mkdir(parents=True, exist_ok=True)
    return root


@pytest.mark.parametrize("line", documented_commands())
def test_documented_command_is_valid(line, tmp_path):
    if " -profile test" in line or ",test" in line:
        launch = REPO  # the test profile's samplesheet names files in the checkout
        env = {"PWD": str(REPO), "HOME": str(tmp_path)}
    else:
        env = {"PWD": str(tmp_path / "launch"), "HOME": str(tmp_path)}
        launch = launch_dir_for(Command.parse(line, env), tmp_path / "launch")
    result = validate(line, launch, env)
    assert result.errors == [], line
    assert result.unrecognised == [], line


def test_params_in_the_docs_config_snippets_are_valid(tmp_path):
    # e.g. the gpu.config of docs/nextflow.md: values starting with '-' go in a config file
    text = (REPO / "docs" / "nextflow.md").read_text()
    snippets = [g for g in re.findall(r"```groovy\n(.*?)```", text, re.DOTALL) if "params {" in g]
    assert snippets
    for snippet in snippets:
        config = tmp_path / "snippet.config"
        config.write_text(snippet)
        params = config_params(
            config,
            REPO,
            run_params(REPO, Command.parse(f"nextflow run . --fasta {FASTA} --outdir results")),
        )
        result = validate_parameters(REPO, REPO, params)
        assert result.errors == [] and result.unrecognised == [], snippet


# --- samplesheets in every format ---------------------------------------------------------------


ROWS = [
    {"sample": "ecoli", "fasta": "ecoli.faa", "organism": "gram_negative"},
    {"sample": "2024", "fasta": "yeast.faa", "organism": ""},
]


def write_samplesheet(path: Path, rows: list[dict]) -> Path:
    if path.suffix in (".csv", ".tsv", ".txt"):
        sep = "\t" if path.suffix == ".tsv" else ","
        lines = [sep.join(rows[0])] + [sep.join(str(v) for v in row.values()) for row in rows]
        path.write_text("\n".join(lines) + "\n")
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows))
    else:
        path.write_text(yaml.safe_dump(rows))
    return path


@pytest.fixture
def launch(tmp_path) -> Path:
    for name in ("ecoli.faa", "yeast.faa", "my ecoli.faa"):
        shutil.copy(FASTA, tmp_path / name)
    return tmp_path


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".json", ".yaml", ".yml"])
def test_samplesheet_formats_are_valid(suffix, launch):
    path = write_samplesheet(launch / f"samples{suffix}", ROWS)
    result = validate_parameters(REPO, launch, {"input": str(path), "outdir": "results"})
    assert result.errors == []
    rows = read_samplesheet(path)
    if suffix in (".csv", ".tsv"):
        # typed like nf-schema: a numeric id becomes an integer, an empty organism is left out
        assert rows[1] == {"sample": 2024, "fasta": "yeast.faa"}
    assert rows[0] == ROWS[0]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"sample": ".hidden", "fasta": "ecoli.faa"}, "does not match"),
        ({"sample": "a", "fasta": "ecoli.faa", "organism": "plant"}, "is not one of"),
        ({"sample": "a", "fasta": "missing.faa"}, "does not exist"),
        ({"sample": "a", "fasta": "my ecoli.faa"}, "does not match"),  # it exists
        ({"sample": "1.5", "fasta": "ecoli.faa"}, "is not of type"),
        ({"sample": "-5", "fasta": "ecoli.faa"}, "less than the minimum"),
    ],
)
def test_bad_samplesheet_rows_are_refused(row, message, launch):
    path = write_samplesheet(launch / "samples.csv", [row])
    result = validate_parameters(REPO, launch, {"input": str(path), "outdir": "results"})
    assert len(result.errors) == 1 and message in result.errors[0], result.errors


def test_an_unknown_extension_is_read_by_counting_separators_but_refused(launch):
    # nf-schema reads any file: no known extension -> CSV if the first line has more commas
    # than tabs, else TSV. --input's pattern refuses such a name with a clear message.
    path = write_samplesheet(launch / "samples.txt", ROWS)
    assert read_samplesheet(path)[0] == ROWS[0]
    result = validate_parameters(REPO, launch, {"input": str(path), "outdir": "results"})
    assert len(result.errors) == 1 and "does not match" in result.errors[0]


def test_duplicate_samples_are_refused(launch):
    path = write_samplesheet(launch / "samples.csv", [ROWS[0], ROWS[0]])
    result = validate_parameters(REPO, launch, {"input": str(path), "outdir": "results"})
    assert any("Detected duplicate entries" in e for e in result.errors)


def test_numeric_sample_ids_need_the_integer_type(launch, tmp_path):
    # nf-schema types the CSV cell "2024" as an integer: with "type": "string" alone a numeric
    # sample id would be refused (nextflow-io/nf-schema#81); the schema allows both.
    project = tmp_path / "project"
    shutil.copytree(REPO / "assets", project / "assets")
    shutil.copy(REPO / "nextflow_schema.json", project)
    schema = json.loads((project / "assets" / "schema_input.json").read_text())
    schema["items"]["properties"]["sample"]["type"] = "string"
    (project / "assets" / "schema_input.json").write_text(json.dumps(schema))
    path = write_samplesheet(launch / "samples.csv", ROWS)
    result = validate_parameters(project, launch, {"input": str(path), "outdir": "r"})
    assert any("2024 is not of type 'string'" in e for e in result.errors)


def test_string_to_value_types_cells_like_org_json():
    assert [string_to_value(v) for v in ["", "7", "-3", "007", "1.5", "1e3", "true", "ecoli"]] == [
        None,
        7,
        -3,
        "007",
        1.5,
        1000.0,
        True,
        "ecoli",
    ]


# --- the parameters' other checks ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ("--shard_size 0", "less than the minimum"),
        ("--shard_size many", "is not of type 'integer'"),
        ("--organism plant", "is not one of"),
        ("--container peftsp.sif", "does not match"),  # a .sif must be an absolute path
        ("--model assets/test/proteome.faa", "is not a directory"),
        ("--trt_cache /nonexistent/trt", "does not exist"),
        ("--gpu_max_forks 0", "less than the minimum"),
    ],
)
def test_bad_parameters_are_refused(arguments, message):
    result = validate(f"nextflow run . --fasta {FASTA} --outdir results {arguments}")
    assert any(message in e for e in result.errors), result.errors


def test_unknown_parameters_are_reported():
    result = validate(f"nextflow run . --fasta {FASTA} --outdir results --shard-sise 3")
    assert result.unrecognised == ["shard_sise"]


def test_a_fasta_path_with_a_space_is_refused(tmp_path):
    spaced = tmp_path / "my proteome.faa"
    shutil.copy(FASTA, spaced)
    result = validate(f"nextflow run . --fasta '{spaced}' --outdir results")
    assert any("does not match" in e for e in result.errors), result.errors
    assert validate(f"nextflow run . --fasta {FASTA} --outdir results").errors == []
