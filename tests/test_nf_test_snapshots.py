"""The modules' nf-test snapshots (modules/nf-core/peftsp/*/tests/main.nf.test.snap).

nf-test cannot run here (it needs a Nextflow runtime), so the snapshots are written by this
file, in nf-test's own format (nf-test 0.9.5: SnapshotFile/SnapshotFileItem/PathConverter),
from what the tests snapshot: the shard files the `peftsp shard` step writes (their md5, as
nf-test's PathConverter serialises a file), the output file names of predict and merge, empty
files for the stubs, and every versions output with the values the CPU image's eval commands
print. Regenerate after a change with

    python tests/test_nf_test_snapshots.py --write

and when nf-test is available, check them with `nf-test test modules/nf-core/peftsp --ci`.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODULES = REPO / "modules" / "nf-core" / "peftsp"
STEPS = ("shard", "predict", "merge")
OUTPUTS = ("results", "gff", "regions", "mature", "json", "html", "mqc", "mqc_stats")
EMPTY_MD5 = "d41d8cd98f00b204e9800998ecf8427e"
# What wrote the snapshots, for the entries' "meta" (nf-test compares only "content").
NF_TEST_META = {"nf-test": "0.9.5", "nextflow": "25.10.4"}


# --- nf-test's serialisation ---------------------------------------------------------------


def java_string_hash(text: str) -> int:
    """java.lang.String.hashCode (UTF-16 code units), as an unsigned 32-bit value."""
    value = 0
    units = text.encode("utf-16-be")
    for i in range(0, len(units), 2):
        value = (31 * value + int.from_bytes(units[i : i + 2], "big")) & 0xFFFFFFFF
    return value


def java_hashmap_order(keys: list[str]) -> list[str]:
    """Iteration order of a java.util.HashMap<String, ?> filled with `keys` in this order
    (nf-test keeps a snapshot file's entries in one): by bucket, then by insertion."""
    capacity = 16
    while len(keys) > capacity * 0.75:
        capacity *= 2
    buckets: dict[int, list[str]] = {}
    for key in keys:
        h = java_string_hash(key)
        buckets.setdefault((h ^ (h >> 16)) & (capacity - 1), []).append(key)
    return [key for bucket in sorted(buckets) for key in buckets[bucket]]


def groovy_pretty_json(value) -> str:
    """Groovy's JsonOutput.prettyPrint of JsonGenerator output, for the values snapshots hold
    (strings, lists, maps; no empty containers, whose layout differs from Python's)."""

    def check(item):
        if isinstance(item, dict | list):
            if not item:
                raise ValueError("empty list or map in a snapshot")
            for child in item.values() if isinstance(item, dict) else item:
                check(child)

    check(value)
    return json.dumps(value, indent=4, ensure_ascii=False)


def java_timestamp(moment: datetime.datetime) -> str:
    """DateTimeFormatter.ISO_DATE_TIME of a LocalDateTime (fraction without trailing zeros)."""
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    fraction = f"{moment.microsecond:06d}".rstrip("0")
    return f"{text}.{fraction}" if fraction else text


def snapshot_file(entries: dict[str, list], timestamps: dict[str, str]) -> str:
    """A .nf.test.snap file: {test name: {content, timestamp, meta}}, in HashMap order, no
    newline at the end (nf-test writes the pretty JSON as it is)."""
    ordered = {
        name: {"content": entries[name], "timestamp": timestamps[name], "meta": NF_TEST_META}
        for name in java_hashmap_order(list(entries))
    }
    return groovy_pretty_json(ordered)


def file_entry(path: Path) -> str:
    """nf-test's PathConverter for a file: name:md5,<md5 of the content>."""
    return f"{path.name}:md5,{hashlib.md5(path.read_bytes()).hexdigest()}"


# --- what each module's tests snapshot --------------------------------------------------------


def versions(step: str) -> dict[str, list]:
    """`process.out.findAll { key, val -> key.startsWith('versions') }`: every versions emit,
    keys sorted (nf-test loads process.out into a TreeMap), values as the image's eval print:
    `peftsp --version | sed 's/^peftsp //'` and the image's pinned onnxruntime."""
    cli = [sys.executable, str(REPO / "bin" / "peftsp"), "--version"]
    printed = subprocess.run(cli, capture_output=True, text=True, check=True).stdout.strip()
    values = {
        "peftsp": re.sub(r"^peftsp ", "", printed),
        "onnxruntime": requirement_pin("cpu", "onnxruntime"),
    }
    text = (MODULES / step / "main.nf").read_text()
    pattern = r"val\('(\w+)'\), eval\(.*emit: (versions_\w+)"
    tools = {emit: tool for tool, emit in re.findall(pattern, text)}
    process = f"PEFTSP_{step.upper()}"
    return {emit: [[process, tools[emit], values[tools[emit]]]] for emit in sorted(tools)}


def requirement_pin(flavour: str, name: str) -> str:
    text = (REPO / "containers" / f"requirements-{flavour}.txt").read_text()
    return re.search(rf"^{re.escape(name)}==(\S+)", text, re.MULTILINE)[1]


def output_names(step: str) -> dict[str, str]:
    """emit -> file name under ${prefix}/ of a predict or merge module."""
    text = (MODULES / step / "main.nf").read_text()
    return dict(
        (emit, name)
        for name, emit in re.findall(r'path\("\$\{prefix\}/([^"]+)"\)\s*,\s*emit:\s*(\w+)', text)
    )


def shard_files(tmp: Path, size: int) -> list[Path]:
    """The shards `peftsp shard` writes for the module test's input (the module's command)."""
    outdir = tmp / "test"
    subprocess.run(
        [
            sys.executable, str(REPO / "bin" / "peftsp"), "shard", "--quiet",
            "--fasta", str(MODULES / "shard" / "tests" / "data" / "proteome.faa"),
            "--outdir", str(outdir), "--shard-size", str(size),
        ],
        check=True,
    )  # fmt: skip
    return sorted(outdir.glob("shard_*.fasta"))


def expected_entries(tmp: Path) -> dict[str, dict[str, list]]:
    """module -> {test name -> snapshot content}."""
    meta = {"id": "test"}
    shards = shard_files(tmp, 3)
    entries = {
        "shard": {
            "proteome - faa - 3 per shard": [
                [[meta, [file_entry(p) for p in shards]]],
                versions("shard"),
            ],
            # the stub touches one shard; one file is emitted as a path, not a list
            "proteome - faa - 3 per shard - stub": [
                [[meta, f"shard_0001.fasta:md5,{EMPTY_MD5}"]],
                versions("shard"),
            ],
        }
    }
    for step, name in (
        ("predict", "proteome - faa - default model"),
        ("merge", "proteome - 3 shards - default model"),
    ):
        names = output_names(step)
        assert tuple(names) == OUTPUTS, names
        entries[step] = {
            name: [[[[meta, names[o]]] for o in OUTPUTS], versions(step)],
            f"{name} - stub": [
                *([[meta, f"{names[o]}:md5,{EMPTY_MD5}"]] for o in OUTPUTS),
                versions(step),
            ],
        }
    return entries


def snap_path(step: str) -> Path:
    return MODULES / step / "tests" / "main.nf.test.snap"


def write(tmp: Path) -> None:
    now = java_timestamp(datetime.datetime.now())
    for step, entries in expected_entries(tmp).items():
        path = snap_path(step)
        old = json.loads(path.read_text()) if path.exists() else {}
        # keep the time of an entry whose content did not change, as nf-test does
        stamps = {
            name: old[name]["timestamp"] if old.get(name, {}).get("content") == content else now
            for name, content in entries.items()
        }
        path.write_text(snapshot_file(entries, stamps))
        print(f"wrote {path.relative_to(REPO)}")


# --- tests ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def expected(tmp_path_factory) -> dict[str, dict[str, list]]:
    return expected_entries(tmp_path_factory.mktemp("nftest"))


@pytest.mark.parametrize("step", STEPS)
def test_snapshot_content_is_what_the_module_tests_produce(step, expected):
    recorded = json.loads(snap_path(step).read_text())
    assert {name: entry["content"] for name, entry in recorded.items()} == expected[step], (
        "regenerate: python tests/test_nf_test_snapshots.py --write"
    )


@pytest.mark.parametrize("step", STEPS)
def test_snapshot_file_is_in_nf_tests_format(step):
    text = snap_path(step).read_text()
    recorded = json.loads(text)
    for entry in recorded.values():
        assert list(entry) == ["content", "timestamp", "meta"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?", entry["timestamp"])
        assert set(entry["meta"]) == {"nf-test", "nextflow"}
    stamps = {name: entry["timestamp"] for name, entry in recorded.items()}
    contents = {name: entry["content"] for name, entry in recorded.items()}
    assert text == snapshot_file(contents, stamps)


@pytest.mark.parametrize("step", STEPS)
def test_snapshots_cover_every_test_and_every_versions_output(step):
    tests = (MODULES / step / "tests" / "main.nf.test").read_text()
    names = re.findall(r'^    test\("([^"]+)"\)', tests, re.MULTILINE)
    recorded = json.loads(snap_path(step).read_text())
    assert sorted(recorded) == sorted(names)
    # each test snapshots every versions emit, and the snapshot holds all of them
    assert tests.count("process.out.findAll { key, val -> key.startsWith('versions') }") == len(
        names
    )
    module = (MODULES / step / "main.nf").read_text()
    emits = sorted(re.findall(r"emit:\s*(versions_\w+)", module))
    for entry in recorded.values():
        assert sorted(entry["content"][-1]) == emits


@pytest.mark.parametrize("step", STEPS)
def test_tests_read_the_fixture_in_the_modules_own_tests_directory(step):
    tests = (MODULES / step / "tests" / "main.nf.test").read_text()
    assert "projectDir" not in tests
    assert 'file("${moduleTestDir}/data/proteome.faa", checkIfExists: true)' in tests
    fixture = MODULES / step / "tests" / "data" / "proteome.faa"
    assert fixture.read_bytes() == (REPO / "assets" / "test" / "proteome.faa").read_bytes()


def test_java_hashmap_order_matches_snapshot_files_written_by_nf_test():
    # The entry order of nf-core/modules' seqkit/split2 snapshot as nf-test 0.9.5 wrote it;
    # reloaded in file order it is a fixed point (two bucket collisions keep insertion order).
    written = [
        "paired_end - size",
        "single_end - size",
        "single_end - part",
        "single_end - length",
        "single_end - size - stub",
        "single_end - part - stub",
        "single_end - length - no_compression",
        "single_end - length - stub",
        "paired_end - length",
        "paired_end - part",
    ]
    assert java_hashmap_order(written) == written
    assert java_hashmap_order(written[::-1]) != written  # insertion order counts on collision
    assert java_string_hash("") == 0 and java_string_hash("ab") == 97 * 31 + 98
    # meta is a HashMap too: nf-test writes "nf-test" before "nextflow"
    assert java_hashmap_order(["nextflow", "nf-test"]) == ["nf-test", "nextflow"]


def test_java_timestamp_drops_trailing_zeros_like_iso_date_time():
    moment = datetime.datetime(2026, 6, 12, 17, 29, 55, 223080)
    assert java_timestamp(moment) == "2026-06-12T17:29:55.22308"
    assert java_timestamp(moment.replace(microsecond=0)) == "2026-06-12T17:29:55"


if __name__ == "__main__":
    import tempfile

    parser = argparse.ArgumentParser(description="Write the modules' nf-test snapshots.")
    parser.add_argument("--write", action="store_true", required=True)
    parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        write(Path(directory))
