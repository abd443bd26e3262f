"""nf-schema's parameter validation (`validateParameters()`, nf-schema 2.8), in Python.

Nextflow cannot run here, so the tests validate parameters the way the plugin does, from its
source (nextflow-io/nf-schema, src/main/groovy/nextflow/validation):

- parameters: the `params {}` of nextflow.config, then of the -profile configs, then the command
  line (Nextflow casts `--x 5` to an integer, `--x true` to a boolean, a bare `--x` to true);
  `help`, `help_full`, `show_hidden` default to false; null values are left out
  (ParameterValidator: JsonGenerator.excludeNulls);
- JSON Schema draft 2020-12 plus nf-schema's keywords (CustomEvaluatorFactory):
  `format` file-path (not a directory), directory-path (not a file), path, file-path-pattern;
  `exists` (relative paths from the launch directory); `uniqueEntries`; and `schema`: the file
  is read as a samplesheet, the type from its extension (csv, tsv, json, yml/yaml; otherwise by
  counting commas and tabs in the first line, TSV when equal), CSV/TSV with a header, values
  stripped and typed like org.json's stringToValue (an empty cell is left out, "12" becomes an
  integer), and the rows validated against that schema, found relative to the pipeline
  directory (SchemaEvaluator, FilesHelper, Types.inferType);
- parameters the schema does not describe are warnings ("unrecognised"), not errors.

jsonschema's own `format` checks are replaced by nf-schema's; its other keywords are the
standard ones.
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import jsonschema
import yaml

HELP_PARAMS = {"help": False, "help_full": False, "show_hidden": False}


# --- Nextflow configuration and command line -------------------------------------------------


def strip_comments(text: str) -> str:
    """Groovy comments out, strings kept (a // inside quotes is not a comment)."""
    out, i, quote = [], 0, None
    while i < len(text):
        c = text[i]
        if quote:
            out.append(c)
            if c == "\\":
                out.append(text[i + 1])
                i += 1
            elif c == quote:
                quote = None
        elif c in "'\"":
            quote = c
            out.append(c)
        elif text.startswith("//", i):
            i = text.find("\n", i)
            i = len(text) if i < 0 else i
            continue
        elif text.startswith("/*", i):
            i = text.index("*/", i) + 2
            continue
        else:
            out.append(c)
        i += 1
    return "".join(out)


def block(text: str, name: str) -> str | None:
    """The body of the top-level `name { ... }` block of a config, or None."""
    match = re.search(rf"^\s*{name}\s*\{{", text, re.MULTILINE)
    if not match:
        return None
    depth, i = 1, match.end()
    while depth:
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        i += 1
    return text[match.end() : i - 1]


def groovy_value(raw: str, params: dict, project_dir: Path):
    """A params value of a Nextflow config: literals, strings with ${params.x}/${projectDir},
    and `new java.util.Date().format('...')` (the run's start time)."""
    raw = raw.strip()
    if raw in ("null", "true", "false"):
        return {"null": None, "true": True, "false": False}[raw]
    if re.fullmatch(r"-?\d+", raw):
        return int(raw)
    if re.fullmatch(r"-?\d+\.\d+", raw):
        return float(raw)
    if raw.startswith("'") and raw.endswith("'"):
        return raw[1:-1]
    if raw.startswith('"') and raw.endswith('"'):

        def substitute(match: re.Match) -> str:
            name = match[1]
            if name == "projectDir":
                return str(project_dir)
            return str(params[name.removeprefix("params.")])

        return re.sub(r"\$\{([\w.]+)\}", substitute, raw[1:-1])
    date = re.fullmatch(r"new java\.util\.Date\(\)\.format\(\s*'([^']+)'\s*\)", raw)
    if date:
        java_to_strftime = {
            "yyyy": "%Y",
            "MM": "%m",
            "dd": "%d",
            "HH": "%H",
            "mm": "%M",
            "ss": "%S",
        }
        pattern = re.sub("|".join(java_to_strftime), lambda m: java_to_strftime[m[0]], date[1])
        return datetime.datetime.now().strftime(pattern)
    raise ValueError(f"config value not understood: {raw}")


def config_params(path: Path, project_dir: Path, params: dict | None = None) -> dict:
    """params of one config file's `params {}` block, evaluated over `params` (earlier files)."""
    params = dict(params or {})
    body = block(strip_comments(path.read_text()), "params")
    for line in (body or "").splitlines():
        match = re.match(r"\s*(\w+)\s*=\s*(.+?)\s*$", line)
        if match:
            params[match[1]] = groovy_value(match[2], params, project_dir)
    return params


def profile_configs(project_dir: Path) -> dict[str, list[Path]]:
    """profile name -> the config files it includes (nextflow.config's profiles block)."""
    text = strip_comments((project_dir / "nextflow.config").read_text())
    profiles = block(text, "profiles")
    result: dict[str, list[Path]] = {}
    for match in re.finditer(r"^    (\w+)\s*\{", profiles, re.MULTILINE):
        body = block(profiles[match.start() :], match[1])
        includes = re.findall(r"includeConfig\s+'([^']+)'\s*$", body, re.MULTILINE)
        result[match[1]] = [project_dir / path for path in includes]
    return result


def cli_value(text: str):
    """Nextflow's CmdRun.parseParamValue: true/false, integers, decimals, else the string."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    if re.fullmatch(r"-?\d+\.\d+", text):
        return float(text)
    return text


@dataclass
class Command:
    """A `nextflow run` command line: its profiles and --params."""

    profiles: list[str] = field(default_factory=list)
    params: dict = field(default_factory=dict)

    @classmethod
    def parse(cls, line: str, env: dict[str, str] | None = None) -> Command:
        words = shlex.split(line.replace("\\\n", " "), comments=True)
        words = [
            re.sub(r"\$(\w+)|\$\{(\w+)\}", lambda m: (env or {})[m[1] or m[2]], w) for w in words
        ]
        assert words[:2] == ["nextflow", "run"], line
        command, i = cls(), 3  # words[2] is the pipeline
        while i < len(words):
            word = words[i]
            if word == "-profile":
                command.profiles += words[i + 1].split(",")
                i += 2
            elif word.startswith("--"):
                name = word[2:].replace("-", "_")
                if i + 1 < len(words) and not words[i + 1].startswith("-"):
                    command.params[name] = cli_value(words[i + 1])
                    i += 2
                else:
                    command.params[name] = True
                    i += 1
            elif word.startswith("-"):  # a Nextflow option and its value, e.g. -c site.config
                i += 2 if word in ("-c", "-params-file", "-w", "-work-dir", "-r", "-name") else 1
            else:
                raise ValueError(f"unexpected word {word!r} in {line!r}")
        return command


def run_params(project_dir: Path, command: Command) -> dict:
    """The params of a run: nextflow.config, then each profile's configs, then the command."""
    params = config_params(project_dir / "nextflow.config", project_dir)
    configs = profile_configs(project_dir)
    for profile in command.profiles:
        if profile not in configs:
            raise KeyError(f"no profile {profile!r} in nextflow.config")
        for path in configs[profile]:
            params = config_params(path, project_dir, params)
    return {**HELP_PARAMS, **params, **command.params}


# --- samplesheets ----------------------------------------------------------------------------


def string_to_value(text: str):
    """org.json JSONObject.stringToValue, as nf-schema types CSV/TSV cells (Types.inferType):
    "" -> left out, true/false/null, integers (not with a leading 0), decimals, else text."""
    if text == "":
        return None
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if text.lower() == "null":
        return None
    if text[0].isdigit() or text[0] == "-":
        if re.search(r"[.eE]", text) or text == "-0":
            if re.fullmatch(r"-?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", text):
                return float(text)
        elif re.fullmatch(r"-?(0|[1-9]\d*)", text):
            return int(text)
    return text


def file_type(path: Path) -> str:
    """FilesHelper.getFileType: the extension, else commas vs tabs of the first line."""
    extension = path.suffix.lower().lstrip(".")
    if extension in ("csv", "tsv", "yml", "yaml", "json"):
        return "yaml" if extension == "yml" else extension
    with path.open(encoding="utf-8") as handle:
        header = handle.readline()
    return "csv" if header.count(",") > header.count("\t") else "tsv"


def read_samplesheet(path: Path):
    """A samplesheet as nf-schema's validator sees it: rows of typed values, empty cells and
    nulls left out."""
    kind = file_type(path)
    if kind == "json":
        data = json.loads(path.read_text(encoding="utf-8"))
    elif kind == "yaml":
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    else:
        lines = path.read_text(encoding="utf-8").splitlines()
        if lines and lines[0].endswith((",", "\t")):  # sanitize(): trailing separators
            lines = [re.sub(r"[,\t]*$", "", line) for line in lines]
        reader = csv.reader(io.StringIO("\n".join(lines)), delimiter="," if kind == "csv" else "\t")
        rows = [row for row in reader if row]
        header = [name.strip() for name in rows[0]] if rows else []
        data = [
            {name: string_to_value(value.strip()) for name, value in zip(header, row, strict=False)}
            for row in rows[1:]
        ]
    return drop_nulls(data)


def drop_nulls(value):
    if isinstance(value, dict):
        return {k: drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_nulls(v) for v in value if v is not None]
    return value


# --- the validator -----------------------------------------------------------------------------


def _path(value: str, launch_dir: Path) -> Path:
    path = Path(value)
    return path if path.is_absolute() else launch_dir / path


def make_validator(schema: dict, launch_dir: Path, project_dir: Path):
    """A jsonschema validator with nf-schema's keywords, paths from `launch_dir`."""

    def format_(validator, kind, value, schema):
        if not isinstance(value, str):
            return
        path = _path(value, launch_dir)
        if kind == "file-path":
            if any(c in value for c in "*?[{"):
                yield jsonschema.ValidationError(
                    f"'{value}' is not a file, but a file path pattern"
                )
            elif path.is_dir():
                yield jsonschema.ValidationError(f"'{value}' is not a file, but a directory")
        elif kind == "directory-path" and path.is_file():
            yield jsonschema.ValidationError(f"'{value}' is not a directory, but a file")

    def exists(validator, expected, value, schema):
        if not isinstance(value, str) or expected is not True:
            return
        matches = list(launch_dir.glob(value)) if not Path(value).is_absolute() else None
        found = _path(value, launch_dir).exists() or bool(matches)
        if not found:
            yield jsonschema.ValidationError(f"the file or directory '{value}' does not exist")

    def unique_entries(validator, keys, value, schema):
        if not isinstance(value, list):
            return
        seen = set()
        for number, row in enumerate(value, start=1):
            if not isinstance(row, dict):
                return
            entry = tuple(f"{k}:{row[k]}" for k in keys if k in row)
            if entry and entry in seen:
                yield jsonschema.ValidationError(
                    f"Entry {number}: Detected duplicate entries: {entry}"
                )
                return
            seen.add(entry)

    def samplesheet(validator, schema_file, value, schema):
        if not isinstance(value, str):
            return
        path = _path(value, launch_dir)
        if not path.is_file():
            return  # `exists` reports it; nf-schema skips a missing file or a directory
        sub_schema = json.loads(_path(schema_file, project_dir).read_text())
        rows = read_samplesheet(path)
        errors = list(make_validator(sub_schema, launch_dir, project_dir).iter_errors(rows))
        if errors:
            lines = [f"-> {describe(e)}" for e in errors]
            yield jsonschema.ValidationError("Validation of file failed:\n" + "\n".join(lines))

    cls = jsonschema.validators.extend(
        jsonschema.Draft202012Validator,
        {
            "format": format_,
            "exists": exists,
            "uniqueEntries": unique_entries,
            "schema": samplesheet,
        },
    )
    return cls(schema)


def describe(error: jsonschema.ValidationError) -> str:
    where = list(error.absolute_path)
    if where and isinstance(where[0], int):
        field_name = "/".join(map(str, where[1:]))
        return (
            f"Entry {where[0] + 1}: "
            + (f"field '{field_name}': " if field_name else "")
            + error.message
        )
    return (f"--{'.'.join(map(str, where))}: " if where else "") + error.message


@dataclass
class Result:
    errors: list[str]
    unrecognised: list[str]
    params: dict


def schema_properties(schema: dict) -> dict:
    properties = dict(schema.get("properties", {}))
    for group in schema.get("$defs", {}).values():
        properties.update(group.get("properties", {}))
    return properties


def validate_parameters(project_dir: Path, launch_dir: Path, params: dict) -> Result:
    """validateParameters(): errors, unrecognised parameters, the validated params."""
    schema = json.loads((project_dir / "nextflow_schema.json").read_text())
    instance = {k: v for k, v in params.items() if v is not None}
    validator = make_validator(schema, launch_dir, project_dir)
    errors = sorted(describe(e) for e in validator.iter_errors(instance))
    known = schema_properties(schema)
    unrecognised = sorted(k for k in instance if k not in known)
    return Result(errors, unrecognised, instance)


def run_commands(markdown: str) -> Iterator[str]:
    """The `nextflow run` commands of a Markdown text's code blocks (continuations joined)."""
    inside, lines = False, []
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            inside = not inside
            lines.append("")
        else:
            lines.append(line if inside else "")
    for line in "\n".join(lines).replace("\\\n", " ").splitlines():
        command = re.sub(r"^(\w+=\S*\s+)*", "", line.strip())  # e.g. NXF_OFFLINE=true
        if command.startswith("nextflow run"):
            yield command
