"""Calibration: the prior shift is Bayes' rule on the type posterior, the EM recovers a known
prior, ECE and reliability, and `peftsp calibrate` writes a bundle that loads and predicts."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from synthetic import make_dataset

from peftsp import grammar
from peftsp.bundle import Bundle, load_bundle
from peftsp.calibration import (
    estimate_prior,
    expected_calibration_error,
    reliability,
    training_prior,
)
from peftsp.cli import main
from peftsp.decoding import decode
from peftsp.errors import ModelError
from peftsp.fasta import read_labelled_list
from peftsp.predict import tempered


def _crf(rng):
    return {
        "transitions": np.where(grammar.ALLOWED, rng.normal(0, 1, (37, 37)), -1e4),
        "start": np.where(grammar.STARTS, rng.normal(0, 1, 37), -1e4),
        "end": np.where(grammar.ENDS, 0.0, -1e4),
    }


def test_a_prior_shift_multiplies_each_type_posterior_by_its_weight():
    rng = np.random.default_rng(0)
    crf = _crf(rng)
    weights = np.array([4.0, 0.5, 2.0, 0.1, 1.0, 3.0])
    meta = {"calibration": {"log_prior_shift": {"proteome": {"other": np.log(weights).tolist()}}}}
    bundle = Bundle(None, meta, crf)
    em = rng.normal(0, 2, (50, 30, 37))
    lengths = rng.integers(5, 31, 50)
    before = decode(em, lengths, crf).type_probabilities
    after = decode(em, lengths, bundle.decoder_crf("other")).type_probabilities
    expected = before * weights
    expected /= expected.sum(axis=1, keepdims=True)
    assert after == pytest.approx(expected, abs=1e-9)
    # The training prior (no shift stored) and an unknown organism leave the posterior alone.
    assert decode(em, lengths, bundle.decoder_crf("other", "training")).type_probabilities == (
        pytest.approx(before, abs=1e-12)
    )
    with pytest.raises(ModelError, match="unknown prior"):
        bundle.decoder_crf("other", "benchmark")


def test_temperature_reshapes_type_probabilities_but_keeps_the_call():
    rng = np.random.default_rng(1)
    probabilities = rng.dirichlet(np.full(6, 0.3), 200)
    softer = tempered(probabilities, 2.0)
    assert softer.sum(axis=1) == pytest.approx(np.ones(200))
    assert (softer.argmax(axis=1) == probabilities.argmax(axis=1)).all()
    assert (softer.max(axis=1) <= probabilities.max(axis=1) + 1e-12).all()
    assert tempered(probabilities, 1.0) is probabilities


def test_em_recovers_the_prior_of_an_unlabelled_population():
    rng = np.random.default_rng(2)
    train_prior = np.array([0.5, 0.3, 0.2])
    true_prior = np.array([0.85, 0.1, 0.05])
    means = np.array([-2.0, 0.0, 2.0])
    labels = rng.choice(3, size=20000, p=true_prior)
    x = rng.normal(means[labels], 1.0)
    likelihood = np.exp(-0.5 * (x[:, None] - means[None]) ** 2)
    posterior = likelihood * train_prior
    posterior /= posterior.sum(axis=1, keepdims=True)
    assert estimate_prior(posterior, train_prior) == pytest.approx(true_prior, abs=0.02)
    # The naive mean posterior is biased towards the training prior.
    assert abs(posterior.mean(axis=0)[0] - 0.85) > 0.04


def test_expected_calibration_error_and_reliability_bins():
    rng = np.random.default_rng(3)
    confidence = rng.uniform(0.5, 1.0, 50000)
    calibrated = rng.random(50000) < confidence
    assert expected_calibration_error(confidence, calibrated) < 0.01
    overconfident = rng.random(50000) < confidence - 0.2
    assert expected_calibration_error(confidence, overconfident) == pytest.approx(0.2, abs=0.01)
    rows = reliability(np.array([0.05, 0.95, 0.97]), np.array([False, True, False]))
    assert [(r["count"], r["accuracy"]) for r in rows] == [(1, 0.0), (2, 0.5)]


def test_training_prior_downweights_the_subsampled_class(synthetic_file):
    records = read_labelled_list(synthetic_file)
    full = training_prior(records, "other", 1.0)
    half = training_prior(records, "other", 0.5)
    assert full.sum() == pytest.approx(1) and half.sum() == pytest.approx(1)
    largest = np.argmax(full)
    assert half[largest] < full[largest]
    eukarya = training_prior(records, "eukarya", 1.0)
    assert set(np.flatnonzero(eukarya)) <= {0, 1}  # only NO_SP and Sec/SPI in eukaryotes


@pytest.fixture(scope="module")
def recorded_bundle(trained, tmp_path_factory):
    """The tiny LoRA model exported with the training split recorded, as `peftsp train` does."""
    from peftsp.train.export import export_bundle
    from peftsp.train.model import load_checkpoint

    out = tmp_path_factory.mktemp("recorded") / "bundle"
    training = {
        "test_partition": 0,
        "val_fraction": 0.3,
        "options": {"seed": 0, "majority_fraction": 0.5},
    }
    export_bundle(load_checkpoint(trained("lora"))[0], out, training=training)
    return out


def with_training(bundle: Path, target: Path, training: dict) -> Path:
    """A copy of a bundle whose model.json records `training` instead."""
    shutil.copytree(bundle, target)
    meta = json.loads((target / "model.json").read_text())
    meta["training"] = training
    (target / "model.json").write_text(json.dumps(meta))
    return target


def _calibrated_copy(bundle: Path, data: Path, tmp_path: Path, training: dict):
    """A copy of the bundle recording `training`, calibrated on a one-protein proteome sheet;
    (model, calibrate argv without --proteomes, sheet)."""
    model = with_training(bundle, tmp_path / "model", training)
    sheet = tmp_path / "sheet.csv"
    (tmp_path / "proteome.faa").write_text(">p\nMKKLLLLAAAQ\n")
    sheet.write_text("fasta,organism\nproteome.faa,gram_negative\n")
    argv = ["calibrate", "--model", str(model), "--data", str(data), "--quiet"]
    assert main([*argv, "--proteomes", str(sheet)]) == 0
    return model, argv, sheet


def test_calibrate_fits_on_the_validation_partition_of_a_partition_split(
    recorded_bundle, synthetic_file, tmp_path, capsys
):
    split = {"test_partition": 0, "val_partition": 1, "val_fraction": None, "options": {}}
    model, argv, sheet = _calibrated_copy(recorded_bundle, synthetic_file, tmp_path, split)
    fitted = load_bundle(model).meta["calibration"]["fitted_on"]["validation_records"]
    assert fitted == sum(r.partition == 1 for r in read_labelled_list(synthetic_file))
    unrecorded = with_training(recorded_bundle, tmp_path / "none", {"test_partition": 0})
    argv[2] = str(unrecorded)
    assert main([*argv, "--proteomes", str(sheet)]) == 1
    assert "does not record the training split" in capsys.readouterr().err


def test_calibrate_writes_a_temperature_and_finite_priors_that_load_and_predict(
    recorded_bundle, synthetic_file, tmp_path
):
    model = tmp_path / "model"
    shutil.copytree(recorded_bundle, model)
    proteome = tmp_path / "proteome.faa"
    lines = make_dataset(per_type=8, seed=9)
    proteome.write_text("".join(f">p{i}\n{lines[i + 1]}\n" for i in range(0, len(lines), 3)))
    sheet = tmp_path / "sheet.csv"
    sheet.write_text("fasta,organism\nproteome.faa,gram_negative\n")
    argv = ["calibrate", "--model", str(model), "--data", str(synthetic_file)]
    assert main([*argv, "--proteomes", str(sheet), "--quiet"]) == 0
    loaded = load_bundle(model)
    assert loaded.meta["format_version"] == 2
    assert 0.25 <= loaded.temperature <= 8
    shifts = loaded.meta["calibration"]["log_prior_shift"]
    assert set(shifts["proteome"]) == {"gram_negative"}
    assert {"other", "eukarya", "gram_negative"} <= set(shifts["training"])
    assert all(np.isfinite(v).all() for v in shifts["proteome"].values())
    out = tmp_path / "out"
    assert main(["predict", "--fasta", str(proteome), "--outdir", str(out), "--model", str(model),
                 "--organism", "gram_negative", "--quiet"]) == 0  # fmt: skip
    assert (out / "prediction_results.txt").is_file()


@pytest.mark.parametrize(
    ("calibration", "problem"),
    [
        ({"temperature": 0}, "temperature"),
        ({"log_prior_shift": {"proteome": {"other": [0, 0, 0]}}}, "malformed"),
        ({"log_prior_shift": {"proteome": {"other": [0, "nan", 0, 0, 0, 0]}}}, "malformed"),
        ({"log_prior_shift": {"someday": {"other": [0] * 6}}}, "unknown prior"),
    ],
)
def test_a_bundle_with_a_broken_calibration_is_refused(
    recorded_bundle, tmp_path, calibration, problem
):
    model = tmp_path / "model"
    shutil.copytree(recorded_bundle, model)
    meta = json.loads((model / "model.json").read_text())
    meta["calibration"] = calibration
    (model / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match=problem):
        load_bundle(model)


def test_em_keeps_a_type_the_training_prior_lacks_at_zero():
    posterior = np.array([[0.7, 0.3, 0.0], [0.2, 0.8, 0.0], [0.9, 0.1, 0.0]])
    estimated = estimate_prior(posterior, np.array([0.6, 0.4, 0.0]))
    assert np.isfinite(estimated).all() and estimated[2] == 0
    assert estimated.sum() == pytest.approx(1)


def test_the_proteome_prior_acts_on_the_tempered_probabilities():
    """With temperature T the stored proteome weights w multiply the calibrated (tempered)
    type probabilities: p_final = normalise(p_raw ** (1/T) * w), and the call follows it."""
    from peftsp.predict import DecodePlan

    rng = np.random.default_rng(4)
    crf = _crf(rng)
    weights = np.array([6.0, 0.3, 1.0, 0.05, 1.0, 2.0])
    shifts = {"proteome": {"other": np.log(weights).tolist()}}
    meta = {"calibration": {"temperature": 3.0, "log_prior_shift": shifts}}
    meta |= {"sequence_rules": False}
    bundle = Bundle(None, meta, crf)
    em = rng.normal(0, 2, (40, 25, 37)).astype(np.float32)
    ids = np.full((40, 27), 5)
    lengths = rng.integers(5, 26, 40)
    raw = decode(em, lengths, crf).type_probabilities
    expected = tempered(raw, 3.0) * weights
    expected /= expected.sum(axis=1, keepdims=True)
    out = DecodePlan.of(bundle, "other")(em, ids, lengths)
    assert out.type_probabilities == pytest.approx(expected, abs=1e-6)
    assert (out.types == expected.argmax(axis=1)).all()


@pytest.mark.parametrize(
    ("sheet", "problem"),
    [
        ("fasta,organism\nproteome.faa,plants\n", "line 2: need a fasta path and an organism"),
        ("fasta,organism\nmissing.faa,gram_negative\n", "line 2: .*missing.faa: no such FASTA"),
    ],
)
def test_calibrate_refuses_a_bad_proteome_sheet_before_touching_the_bundle(
    recorded_bundle, synthetic_file, tmp_path, capsys, sheet, problem
):
    model = tmp_path / "model"
    shutil.copytree(recorded_bundle, model)
    before = (model / "model.json").read_bytes()
    (tmp_path / "proteome.faa").write_text(">p\nMKKLLLLAAAQ\n")
    (tmp_path / "sheet.csv").write_text(sheet)
    argv = ["calibrate", "--model", str(model), "--data", str(synthetic_file)]
    assert main([*argv, "--proteomes", str(tmp_path / "sheet.csv"), "--quiet"]) == 1
    assert re.search(problem, capsys.readouterr().err)
    assert (model / "model.json").read_bytes() == before


def test_calibrate_undoes_the_recorded_class_balance_in_the_training_shift(
    recorded_bundle, synthetic_file, tmp_path
):
    """A run trained with --class-balance saw other type shares than the labelled data; the
    training prior shift written by calibrate must be the log ratio of exactly those."""
    from peftsp.calibration import log_ratio
    from peftsp.evaluation import run_split

    options = {"seed": 0, "majority_fraction": 0.5, "class_balance": 0.5}
    split = {"test_partition": 0, "val_partition": 1, "val_fraction": None, "options": options}
    model, _, _ = _calibrated_copy(recorded_bundle, synthetic_file, tmp_path, split)
    train, _, _ = run_split(read_labelled_list(synthetic_file), 0, 1)
    written = load_bundle(model).meta["calibration"]["log_prior_shift"]["training"]
    for organism, shift in written.items():
        seen = training_prior(train, organism, 0.5, 0.5)
        assert shift == log_ratio(training_prior(train, organism), seen)
    assert any(v != 0 for v in written["other"])  # the balance really shifted something
