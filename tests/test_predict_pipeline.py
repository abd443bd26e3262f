"""The prediction pipeline (model thread ahead of the decode, optional decode processes):
batch-by-batch output in input order, bounded read-ahead, the same bits for every batch size,
thread count and decode setting, and nothing left running when the consumer stops or fails."""

import multiprocessing
import subprocess
import sys
import threading
from itertools import islice
from pathlib import Path

import numpy as np
import pytest

from peftsp import grammar
from peftsp.bundle import DEFAULT_MODEL, load_bundle
from peftsp.fasta import read_proteins
from peftsp.predict import (
    MODEL_AHEAD,
    DecodePlan,
    auto_decode_workers,
    predict_batch,
    predict_batches,
    predict_proteins,
)
from peftsp.runtime import Session

PROTEOME = Path(__file__).parent / "data" / "mgenitalium.faa"


@pytest.fixture(scope="module")
def bundle():
    return load_bundle(DEFAULT_MODEL)


@pytest.fixture(scope="module")
def proteins():
    return list(islice(read_proteins(PROTEOME), 90))


def _fields(p):
    return (p.id, p.sp_type, p.probabilities, p.cs, p.cs_probability, p.cs_marginal, p.regions)


def test_batches_come_in_input_order_with_bounded_read_ahead(bundle, proteins):
    pulled = 0

    def stream():
        nonlocal pulled
        for protein in proteins:
            pulled += 1
            yield protein

    session = Session(bundle, "cpu", threads=1)
    batches = predict_batches(stream(), session, "other", batch_size=4)
    first = next(batches)
    # One batch decoded, MODEL_AHEAD more submitted to the model, one being read.
    assert pulled <= (MODEL_AHEAD + 2) * 4 < len(proteins)
    rest = list(batches)
    assert [len(b) for b in [first, *rest]] == [4] * 22 + [2]
    assert [p.id for b in [first, *rest] for p in b] == [p.id for p in proteins]


@pytest.mark.parametrize("precision", ["fp32", "int8"])  # the default model's int8 is static
@pytest.mark.parametrize(
    ("threads", "batch_size", "decode_workers"), [(1, 1, 0), (2, 16, 0), (2, 64, 2), (1, 7, 1)]
)
def test_the_same_bits_for_any_batch_size_threads_and_decode_workers(
    bundle, proteins, threads, batch_size, decode_workers, precision
):
    plan = DecodePlan.of(bundle, "gram_negative", keep_marginals=True)
    whole = Session(bundle, "cpu", precision, threads=2)
    reference = predict_batch(proteins, whole, "gram_negative", plan)
    session = Session(bundle, "cpu", precision, threads=threads)
    got = list(
        predict_proteins(
            proteins, session, "gram_negative", batch_size, True, decode_workers=decode_workers
        )
    )
    assert [_fields(p) for p in got] == [_fields(p) for p in reference]
    for p, q in zip(got, reference, strict=True):
        assert np.array_equal(p.marginals, q.marginals)
    assert any(p.cs is not None for p in got)


def test_marginals_only_when_asked_and_cs_marginal_is_signalp_s_definition(bundle, proteins):
    session = Session(bundle, "cpu", threads=1)
    plain = list(predict_proteins(proteins, session, "other", 32))
    assert all(p.marginals is None for p in plain)
    kept = list(predict_proteins(proteins, session, "other", 32, keep_marginals=True))
    for p in kept:
        assert p.marginals.shape == (min(p.length, bundle.window), grammar.NUM_STATES)
        assert p.marginals.dtype == np.float32
        np.testing.assert_allclose(p.marginals.sum(axis=1), 1.0, atol=1e-5)
        assert (p.cs_marginal is None) == (p.cs is None)
    with_cs = [p for p in kept if p.cs is not None]
    assert with_cs
    for p in with_cs:
        # The marginal, at the last SP residue, of the state the Viterbi path has there: the
        # path's regions end at the CS, so that state is an SP-region state of the type.
        column = p.marginals[p.cs - 1]
        block = np.equal(grammar.STATE_TYPE, grammar.SP_TYPES.index(p.sp_type))
        sp_states = np.flatnonzero(grammar.IS_SP_REGION & block)
        assert any(p.cs_marginal == pytest.approx(column[s], abs=1e-4) for s in sp_states)
        assert p.regions and p.regions[-1].end <= p.cs


def _no_workers_left(threads_before: int) -> bool:
    return threading.active_count() <= threads_before and not multiprocessing.active_children()


def test_stopping_early_or_failing_leaves_nothing_running(bundle, proteins):
    before = threading.active_count()
    session = Session(bundle, "cpu", threads=1)
    for workers in (0, 1):
        batches = predict_batches(proteins, session, "other", 8, decode_workers=workers)
        next(batches)
        batches.close()
        assert _no_workers_left(before)

    class Broken(Session):
        def emissions(self, tokens, kingdom):
            raise RuntimeError("device lost")

    broken = Broken(bundle, "cpu", threads=1)
    for workers in (0, 1):
        with pytest.raises(RuntimeError, match="device lost"):
            list(predict_proteins(proteins, broken, "other", 8, decode_workers=workers))
        assert _no_workers_left(before)
    with pytest.raises(ValueError, match="batch size"):
        next(predict_batches(proteins, session, "other", 0))


def test_decode_processes_only_when_a_gpu_runs_the_model():
    cpu = ["CPUExecutionProvider"]
    assert auto_decode_workers(cpu, cpus=64) == 0
    cuda = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert [auto_decode_workers(cuda, cpus=c) for c in (1, 2, 3, 4, 16)] == [0, 0, 1, 2, 4]
    assert auto_decode_workers(["TensorrtExecutionProvider", *cuda], cpus=16) == 4


def test_decode_processes_from_a_script_read_from_stdin_fall_back_to_this_thread(tmp_path):
    """New processes re-import the main script; `python -` has none to import."""
    fasta = tmp_path / "in.faa"
    fasta.write_text(">a\nMKKLLLLAVLAAALLASQAEDK\n>b\nMDEKNQSTGPRHY\n")
    script = (
        "from peftsp.bundle import load_bundle\n"
        "from peftsp.fasta import read_proteins\n"
        "from peftsp.predict import predict_proteins\n"
        "from peftsp.runtime import Session\n"
        f"proteins = list(read_proteins({str(fasta)!r}))\n"
        "session = Session(load_bundle(), 'cpu', threads=1)\n"
        "got = list(predict_proteins(proteins, session, 'other', 1, decode_workers=2))\n"
        "print(' '.join(p.id for p in got))\n"
    )
    done = subprocess.run(
        [sys.executable, "-"], input=script, capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == ["a", "b"]
    assert "decoding in this thread" in done.stderr
