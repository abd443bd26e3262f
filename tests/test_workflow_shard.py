"""`peftsp shard` (peftsp.workflow.shard): whole records in order, validated first, all or
nothing, line endings normalised."""

from __future__ import annotations

import gzip
import os

import pytest
from workflow_fixtures import make_fasta

from peftsp import cli
from peftsp.errors import InputError, PeftSPError
from peftsp.fasta import read_proteins
from peftsp.workflow.shard import write_shards


@pytest.mark.parametrize(("size", "expected"), [(1, 10), (3, 4), (7, 2), (10, 1), (100, 1)])
def test_shards_hold_the_input_lines_in_order(tmp_path, size, expected):
    fasta = make_fasta(tmp_path / "in.faa", 10)
    shards = write_shards(fasta, tmp_path / "shards", size)
    assert len(shards) == expected
    assert shards == sorted(shards)  # lexical order is input order
    assert [p.name for p in shards][:2] == ["shard_0001.fasta", "shard_0002.fasta"][:expected]
    assert b"".join(p.read_bytes() for p in shards) == fasta.read_bytes()
    counts = [p.read_text().count(">") for p in shards]
    assert counts == [size] * (expected - 1) + [10 - size * (expected - 1)]
    assert sorted(os.listdir(tmp_path)) == ["in.faa", "shards"]  # no temporary left


def test_crlf_input_gives_lf_shards_with_the_same_records(tmp_path):
    fasta = make_fasta(tmp_path / "in.faa", 7, newline="\r\n")
    assert b"\r\n" in fasta.read_bytes()
    shards = write_shards(fasta, tmp_path / "shards", 3)
    joined = b"".join(p.read_bytes() for p in shards)
    assert b"\r" not in joined
    assert joined == fasta.read_bytes().replace(b"\r\n", b"\n")  # not the input's bytes
    shard_records = [p for shard in shards for p in read_proteins(shard)]
    input_records = list(read_proteins(fasta))
    assert [(p.id, p.header, p.sequence, p.notes) for p in shard_records] == [
        (p.id, p.header, p.sequence, p.notes) for p in input_records
    ]


def test_gzipped_input_gives_plain_shards(tmp_path):
    fasta = make_fasta(tmp_path / "in.faa", 5)
    packed = tmp_path / "in.faa.gz"
    packed.write_bytes(gzip.compress(fasta.read_bytes()))
    shards = write_shards(packed, tmp_path / "shards", 2)
    assert b"".join(p.read_bytes() for p in shards) == fasta.read_bytes()


def test_lines_before_the_first_record_go_to_the_first_shard(tmp_path):
    fasta = tmp_path / "in.faa"
    fasta.write_text("\n\n>a\nMKV\n>b\nMKL\n")
    shards = write_shards(fasta, tmp_path / "shards", 1)
    assert [p.read_text() for p in shards] == ["\n\n>a\nMKV\n", ">b\nMKL\n"]


def test_invalid_fasta_leaves_no_shards(tmp_path):
    fasta = make_fasta(tmp_path / "in.faa", 6)
    fasta.write_text(fasta.read_text() + ">bad\nMKV@@\n")
    with pytest.raises(InputError) as error:
        write_shards(fasta, tmp_path / "shards", 2)
    assert error.value.line is not None
    assert os.listdir(tmp_path) == ["in.faa"]


def test_shard_refuses_a_non_empty_outdir_and_a_zero_size(tmp_path):
    fasta = make_fasta(tmp_path / "in.faa", 2)
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "old.fasta").write_text(">x\nM\n")
    with pytest.raises(PeftSPError, match="not empty"):
        write_shards(fasta, tmp_path / "shards", 1)
    with pytest.raises(PeftSPError, match="at least 1"):
        write_shards(fasta, tmp_path / "other", 0)


def test_shard_command_through_the_cli(tmp_path):
    fasta = make_fasta(tmp_path / "in.faa", 5)
    argv = ["shard", "--fasta", str(fasta), "--outdir", str(tmp_path / "s"), "--shard-size", "2"]
    assert cli.main([*argv, "--quiet"]) == 0
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == [
        "shard_0001.fasta",
        "shard_0002.fasta",
        "shard_0003.fasta",
    ]
