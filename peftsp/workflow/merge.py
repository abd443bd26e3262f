"""`peftsp merge`: the predictions of a proteome's shards written as one prediction (workflow
step)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from peftsp.errors import InputError
from peftsp.writers import read_predictions_json, write_outputs


def merge_command(args: argparse.Namespace) -> None:
    """`peftsp merge`: write the outputs of per-shard predictions, concatenated in order."""
    merge_predictions([Path(p) for p in args.shards], Path(args.outdir))


def merge_predictions(inputs: Sequence[Path], outdir: Path) -> None:
    """Write the outputs of the shard predictions `inputs`, in the given order, to `outdir`.

    Each input is a `peftsp predict` output directory or its output.json. All shards must come
    from the same model and settings (the same run information, the sample included); the
    merged files are written once, by the same writer as predict, so they equal a direct
    prediction of the same sample byte for byte, except that a merge names no input file
    (output.json's "source" is null, summary.html's Input says "(merged shards)").
    """
    run_info = None
    predictions = []
    for path in inputs:
        json_path = path / "output.json" if path.is_dir() else path
        if not json_path.is_file():
            raise InputError("no such prediction file", path=str(json_path))
        info, shard_predictions = read_predictions_json(json_path)
        if run_info is None:
            run_info = info
        elif info != run_info:
            raise InputError(
                f"predicted with other settings than {inputs[0]} (model, organism, sample or "
                "version)",
                path=str(json_path),
            )
        predictions.extend(shard_predictions)
    write_outputs(predictions, outdir, run_info)
