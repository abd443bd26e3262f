"""`peftsp merge` (peftsp.workflow.merge): shard predictions written as one, in the given
order, only when they come from the same run settings."""

from __future__ import annotations

import pytest

from peftsp.decoding import Prediction
from peftsp.errors import InputError
from peftsp.workflow.merge import merge_predictions
from peftsp.writers import write_outputs

RUN = {"model": "m", "organism": "other", "peftsp_version": "9.9.9", "sample": "s1"}


@pytest.fixture(autouse=True)
def _reproducible_timestamp(monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")


def prediction(i: int) -> Prediction:
    return Prediction(
        id=f"p{i}",
        header=f"p{i} protein {i}",
        sequence="MDEKNQSTGPRHY" * (i + 1),
        sp_type="NO_SP",
        probabilities=(0.9, 0.02, 0.02, 0.02, 0.02, 0.02),
        cs=None,
        cs_probability=None,
    )


def shard_outputs(tmp_path, sizes, run=RUN):
    """Prediction directories of consecutive shards of `sizes` proteins."""
    dirs, start = [], 0
    for n, size in enumerate(sizes, start=1):
        out = tmp_path / f"shard_{n}"
        write_outputs([prediction(i) for i in range(start, start + size)], out, run)
        dirs.append(out)
        start += size
    return dirs


def test_merge_equals_one_write_of_all_predictions_in_order(tmp_path):
    shards = shard_outputs(tmp_path, [2, 3, 1])
    write_outputs([prediction(i) for i in range(6)], tmp_path / "whole", RUN)
    # directories or their output.json, as the Nextflow module stages them
    merge_predictions([shards[0], shards[1] / "output.json", shards[2]], tmp_path / "merged")
    files = sorted(p.name for p in (tmp_path / "whole").iterdir())
    assert sorted(p.name for p in (tmp_path / "merged").iterdir()) == files
    for name in files:
        assert (tmp_path / "merged" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()


def test_merge_keeps_the_given_order(tmp_path):
    first, second = shard_outputs(tmp_path, [1, 1])
    merge_predictions([second, first], tmp_path / "merged")
    text = (tmp_path / "merged" / "prediction_results.txt").read_text()
    assert text.index("p1\t") < text.index("p0\t")


@pytest.mark.parametrize("key", ["sample", "model", "organism"])
def test_merge_refuses_shards_of_other_settings(tmp_path, key):
    (first,) = shard_outputs(tmp_path / "a", [1])
    (second,) = shard_outputs(tmp_path / "b", [1], run={**RUN, key: "other-value"})
    with pytest.raises(InputError) as error:
        merge_predictions([first, second], tmp_path / "merged")
    assert error.value.path == str(second / "output.json")
    assert not (tmp_path / "merged").exists()


def test_merge_refuses_a_missing_prediction(tmp_path):
    (first,) = shard_outputs(tmp_path, [1])
    with pytest.raises(InputError, match="no such prediction file"):
        merge_predictions([first, tmp_path / "missing"], tmp_path / "merged")
