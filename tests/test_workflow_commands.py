"""The workflow's command templates (peftsp.workflow.commands): how they are filled, and that
each is a command line `peftsp` accepts. tests/test_nextflow.py checks that the modules'
main.nf run exactly these strings."""

from __future__ import annotations

import pytest

from peftsp import cli
from peftsp.workflow import commands
from peftsp.workflow.commands import MERGE_COMMAND, PREDICT_COMMAND, SHARD_COMMAND, render

VALUES = {
    "fasta": "in.faa",
    "prefix": "out",
    "shard_size": "3",
    "args": ["--quiet"],
    "model_option": ["--model", "m"],
    "meta.id": "ecoli",
    "device": "cuda",
    "task.cpus": "2",
    "shard_json": ["1/output.json", "2/output.json"],
}


def test_render_fills_dotted_names_and_expands_lists():
    values = {
        "fasta": "shard 1.fasta",
        "model_option": [],
        "prefix": "out",
        "meta.id": "s1",
        "device": "cpu",
        "task.cpus": "4",
        "args": ["--organism", "eukarya"],
    }
    assert render(PREDICT_COMMAND, values) == [
        "peftsp", "predict", "--fasta", "shard 1.fasta", "--outdir", "out", "--sample", "s1",
        "--device", "cpu", "--threads", "4", "--organism", "eukarya",
    ]  # fmt: skip
    values["model_option"] = ["--model", "bundle"]
    assert render(PREDICT_COMMAND, values)[4:6] == ["--model", "bundle"]


def test_render_rejects_an_unfilled_name():
    values = {k: v for k, v in VALUES.items() if k != "task.cpus"}
    with pytest.raises(KeyError, match=r"task\.cpus"):
        render(PREDICT_COMMAND, values)


def test_every_template_parses_as_its_cli_command():
    parser = cli.build_parser()
    shard = parser.parse_args(render(SHARD_COMMAND, VALUES)[1:])
    assert (shard.fasta, shard.outdir, shard.shard_size, shard.quiet) == ("in.faa", "out", 3, True)
    predict = parser.parse_args(render(PREDICT_COMMAND, VALUES)[1:])
    assert (predict.model, predict.device, predict.threads) == ("m", "cuda", 2)
    assert predict.sample == "ecoli"
    merge = parser.parse_args(render(MERGE_COMMAND, VALUES)[1:])
    assert merge.shards == ["1/output.json", "2/output.json"] and merge.outdir == "out"
    assert [render(t, VALUES)[:2] for t in (SHARD_COMMAND, PREDICT_COMMAND, MERGE_COMMAND)] == [
        ["peftsp", "shard"],
        ["peftsp", "predict"],
        ["peftsp", "merge"],
    ]


def test_predict_args_fill_the_organism_and_batch_size():
    argv = render(commands.PREDICT_ARGS, {"meta.organism": "eukarya", "params.batch_size": "8"})
    assert argv == ["--organism", "eukarya", "--batch-size", "8"]
