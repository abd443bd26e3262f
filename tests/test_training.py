"""Training end to end on a tiny fair-esm checkpoint: fitting, frozen weights, checkpoints,
and the train / evaluate / crossval commands."""

import json

import numpy as np
import pytest
import torch
from synthetic import write_dataset

from peftsp import evaluation, grammar, labels
from peftsp.cli import main
from peftsp.errors import PeftSPError
from peftsp.fasta import LabelledRecord, read_labelled_list
from peftsp.train import backbone, training
from peftsp.train.model import ModelConfig, SignalPeptideModel, load_checkpoint
from peftsp.train.training import (
    TrainOptions,
    epoch_records,
    fit,
    learning_rate,
    make_batch,
    mask_residues,
    predict_records,
)

METHODS = ("lora", "adapter", "prompt", "full")


def _truth(records):
    types = [r.sp_type for r in records]
    sites = [labels.true_cleavage_site(r.labels, r.sp_type) for r in records]
    return types, sites


@pytest.mark.parametrize("peft", METHODS)
def test_tiny_model_fits_synthetic_records_with_each_method(peft, trained, synthetic_file):
    model, _ = load_checkpoint(trained(peft))
    records = read_labelled_list(synthetic_file)
    assert len(records) == 30
    assert predict_records(model, records) == _truth(records)
    log = json.loads((trained(peft).parent / "train_log.json").read_text())
    losses = [entry["train_loss"] for entry in log["history"]]
    assert losses[-1] < 0.25 * losses[0]


@pytest.mark.parametrize("peft", ("lora", "adapter", "prompt"))
def test_a_training_step_leaves_the_frozen_backbone_unchanged(peft, tiny_backbone_file, tmp_path):
    esm = backbone.load_backbone(str(tiny_backbone_file))
    config = ModelConfig(str(tiny_backbone_file), backbone.backbone_config(esm), peft=peft)
    model = SignalPeptideModel(esm, config, seed=0)
    frozen = {
        name: p.detach().clone() for name, p in model.named_parameters() if not p.requires_grad
    }
    trainable = {
        name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad
    }
    records = read_labelled_list(write_dataset(tmp_path / "d.fasta", per_type=2))
    fit(model, records, [], TrainOptions(epochs=1, batch_size=12, lr=0.01, quiet=True), tmp_path)
    params = dict(model.named_parameters())
    assert frozen and all(torch.equal(params[n], v) for n, v in frozen.items())
    changed = [n for n, v in trainable.items() if not torch.equal(params[n], v)]
    assert any(n.startswith("backbone.") or n.startswith("prompt") for n in changed)


def test_checkpoint_keeps_only_trained_weights_and_reproduces_predictions(trained, synthetic_file):
    path = trained("lora")
    state = torch.load(path, weights_only=True)["state"]
    backbone_keys = [k for k in state if k.startswith("backbone.")]
    assert backbone_keys and all("lora_" in k for k in backbone_keys)
    records = read_labelled_list(synthetic_file)
    first, _ = load_checkpoint(path)
    second, _ = load_checkpoint(path)
    ids = torch.randint(4, 24, (3, 30))
    ids[:, 0], ids[:, -1] = 0, 2
    with torch.no_grad():
        assert torch.equal(first(ids), second(ids))
    assert predict_records(first, records) == predict_records(second, records)


def test_train_command_writes_checkpoint_log_and_test_metrics(tiny_backbone_file, tmp_path):
    data = write_dataset(tmp_path / "d.fasta", per_type=4)
    out = tmp_path / "run"
    argv = ["train", "--data", str(data), "--backbone", str(tiny_backbone_file)]
    argv += ["--peft", "lora", "--lora-rank", "4", "--epochs", "2", "--batch-size", "8"]
    argv += ["--test-partition", "0", "--val-partition", "1", "--outdir", str(out), "--quiet"]
    assert main(argv) == 0
    log = json.loads((out / "train_log.json").read_text())
    assert [e["epoch"] for e in log["history"]] == [1, 2]
    assert log["best"]["epoch"] in (1, 2)
    model, extra = load_checkpoint(out / "model.pt")
    assert extra["best_epoch"] == log["best"]["epoch"]
    assert model.config.lora_rank == 4
    test = json.loads((out / "test_metrics.json").read_text())["metrics"]
    assert any(key.startswith("EUKARYA") for key in test)


def _train_argv(data, backbone_file, out, epochs):
    argv = ["train", "--data", str(data), "--backbone", str(backbone_file), "--peft", "lora"]
    argv += ["--lora-rank", "4", "--epochs", str(epochs), "--batch-size", "8"]
    return [*argv, "--majority-fraction", "0.5", "--outdir", str(out), "--quiet"]


def _weights(path):
    return torch.load(path, weights_only=True)["state"]


def test_a_resumed_run_ends_exactly_where_an_uninterrupted_one_does(tiny_backbone_file, tmp_path):
    data = write_dataset(tmp_path / "d.fasta", per_type=4)
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert main(_train_argv(data, tiny_backbone_file, whole, 3)) == 0
    assert main(_train_argv(data, tiny_backbone_file, split, 1)) == 0  # "killed" after epoch 1
    assert main([*_train_argv(data, tiny_backbone_file, split, 3), "--resume"]) == 0
    logs = [json.loads((d / "train_log.json").read_text()) for d in (whole, split)]
    assert [e["epoch"] for e in logs[1]["history"]] == [1, 2, 3]
    assert logs[0] == logs[1]
    last = [torch.load(d / "last.pt", weights_only=True)["model"] for d in (whole, split)]
    assert all(torch.equal(last[0][k], last[1][k]) for k in last[0])
    first, second = _weights(whole / "model.pt"), _weights(split / "model.pt")
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_resume_refuses_a_missing_state_or_another_model(tiny_backbone_file, tmp_path, capsys):
    data = write_dataset(tmp_path / "d.fasta", per_type=2)
    out = tmp_path / "run"
    assert main([*_train_argv(data, tiny_backbone_file, out, 1), "--resume"]) == 1
    assert "last.pt: nothing to resume" in capsys.readouterr().err
    assert not out.exists()
    assert main(_train_argv(data, tiny_backbone_file, out, 1)) == 0
    other = [*_train_argv(data, tiny_backbone_file, out, 2), "--lora-rank", "2", "--resume"]
    assert main(other) == 1
    assert "another model" in capsys.readouterr().err


def test_a_run_is_not_overwritten_nor_resumed_with_other_data_or_options(
    tiny_backbone_file, tmp_path, capsys
):
    data = write_dataset(tmp_path / "d.fasta", per_type=2)
    other_data = write_dataset(tmp_path / "e.fasta", per_type=3)
    out = tmp_path / "run"
    assert main(_train_argv(data, tiny_backbone_file, out, 1)) == 0
    before = (out / "last.pt").read_bytes(), (out / "train_log.json").read_bytes()
    assert main(_train_argv(data, tiny_backbone_file, out, 1)) == 1  # --resume forgotten
    assert "holds a training run" in capsys.readouterr().err
    for changed, what in (
        (["--lr", "0.5"], "lr"),
        (["--test-partition", "1", "--val-partition", "0"], "test_partition"),
        ([], "data"),
    ):
        source = other_data if what == "data" else data
        argv = [*_train_argv(source, tiny_backbone_file, out, 2), *changed, "--resume"]
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert "started with other" in err and what in err, err
    assert ((out / "last.pt").read_bytes(), (out / "train_log.json").read_bytes()) == before
    # only --epochs may change: a longer run continues
    assert main([*_train_argv(data, tiny_backbone_file, out, 2), "--resume"]) == 0
    assert len(json.loads((out / "train_log.json").read_text())["history"]) == 2


def test_export_names_what_is_wrong_with_the_checkpoint_it_is_given(
    tiny_backbone_file, tmp_path, capsys
):
    data = write_dataset(tmp_path / "d.fasta", per_type=2)
    moved = tmp_path / "backbone.pt"
    moved.write_bytes(tiny_backbone_file.read_bytes())
    out = tmp_path / "run"
    assert main(_train_argv(data, moved, out, 1)) == 0
    export = ["export", "--outdir", str(tmp_path / "bundle"), "--quiet", "--checkpoint"]
    for given, reason in (
        (out, "is a directory; give the checkpoint file in it"),
        (out / "last.pt", "a resume file of `peftsp train`"),
    ):
        assert main([*export, str(given)]) == 1
        assert reason in capsys.readouterr().err
    moved.unlink()  # the frozen backbone a LoRA checkpoint needs, moved away
    assert main([*export, str(out / "model.pt")]) == 1
    err = capsys.readouterr().err
    assert f"{out / 'model.pt'}: its backbone '{moved}' cannot be loaded" in err, err
    assert not (tmp_path / "bundle").exists()


def test_average_is_the_mean_of_the_trained_weights(tiny_backbone_file, tmp_path, capsys):
    data = write_dataset(tmp_path / "d.fasta", per_type=3)
    run, again, other = tmp_path / "run", tmp_path / "again", tmp_path / "other"
    assert main(_train_argv(data, tiny_backbone_file, run, 2)) == 0
    assert main([*_train_argv(data, tiny_backbone_file, again, 1), "--seed", "1"]) == 0
    soup = tmp_path / "soup.pt"
    argv = ["average", "--checkpoints", str(run / "model.pt"), str(again / "last.pt")]
    assert main([*argv, "--out", str(soup), "--quiet"]) == 0
    best = _weights(run / "model.pt")
    last = torch.load(again / "last.pt", weights_only=True)["model"]
    averaged, extra = _weights(soup), torch.load(soup, weights_only=True)["extra"]
    assert set(averaged) == set(best)
    for name, value in best.items():
        if value.is_floating_point():
            assert torch.allclose(averaged[name], (value + last[name]) / 2, atol=1e-7)
        else:  # masks and other fixed buffers
            assert torch.equal(averaged[name], value)
    changed = [n for n, v in best.items() if v.is_floating_point() and not torch.equal(v, last[n])]
    assert changed  # the two checkpoints differ, so the mean is a new model
    assert extra["test_partition"] == 0 and len(extra["averaged"]) == 2
    model, _ = load_checkpoint(soup)  # a checkpoint export and evaluate read
    assert model.config.lora_rank == 4
    argv_other = [*_train_argv(data, tiny_backbone_file, other, 1), "--lora-rank", "2"]
    assert main(argv_other) == 0
    assert main([*argv, str(other / "model.pt"), "--out", str(tmp_path / "x.pt")]) == 1
    assert "configs differ in lora_rank" in capsys.readouterr().err
    twice = [*argv, str(run / "model.pt"), "--out", str(tmp_path / "z.pt")]
    assert main(twice) == 1
    assert "given twice" in capsys.readouterr().err and not (tmp_path / "z.pt").exists()
    assert main(["average", "--checkpoints", str(data), "--out", str(tmp_path / "y.pt")]) == 1
    assert "not a readable PEFT-SP checkpoint" in capsys.readouterr().err
    nowhere = tmp_path / "missing" / "soup.pt"
    assert main([*argv, "--out", str(nowhere)]) == 1
    err = capsys.readouterr().err
    assert f"No such file or directory: '{nowhere}'" in err and ".tmp" not in err
    folder = tmp_path / "folder"
    (folder / "inside").mkdir(parents=True)
    assert main([*argv, "--out", str(folder)]) == 1
    err = capsys.readouterr().err
    assert str(folder) in err and ".tmp" not in err, err  # the rename's target, not the temp
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    assert not (tmp_path / "x.pt").exists() and not (tmp_path / "y.pt").exists()


def test_a_checkpoint_written_before_a_config_field_existed_averages_with_a_new_one(
    trained, tmp_path
):
    new = trained("full")
    payload = torch.load(new, weights_only=True)
    payload["config"].pop("kingdom_input")  # as files from before that option record it
    old = tmp_path / "old.pt"
    torch.save(payload, old)
    soup = tmp_path / "soup.pt"
    argv = ["average", "--checkpoints", str(old), str(new), "--out", str(soup), "--quiet"]
    assert main(argv) == 0
    assert load_checkpoint(soup)[0].config == load_checkpoint(new)[0].config


def test_models_trained_on_other_validation_records_are_not_built_on(
    tiny_backbone_file, tmp_path, capsys
):
    data = write_dataset(tmp_path / "d.fasta", per_type=3)
    first, third = tmp_path / "first", tmp_path / "third"
    share = ["--val-fraction", "0.2"]
    assert main([*_train_argv(data, tiny_backbone_file, first, 1), *share]) == 0
    start = first / "model.pt"
    cont = ["train", "--data", str(data), "--init", str(start), "--epochs", "1", *share]
    cont += ["--batch-size", "8", "--quiet"]
    # another --seed keeps the validation records (the split has its own --val-seed)
    assert main([*cont, "--seed", "5", "--outdir", str(tmp_path / "same")]) == 0
    assert main([*cont, "--val-seed", "1", "--outdir", str(tmp_path / "other")]) == 1
    assert "its validation records would be trained on" in capsys.readouterr().err
    assert main([*cont, "--val-fraction", "0.3", "--outdir", str(tmp_path / "other")]) == 1
    assert not (tmp_path / "other").exists()  # a refused run leaves no directory
    soup = ["average", "--out", str(tmp_path / "soup.pt"), "--quiet", "--checkpoints", str(start)]
    assert main([*soup, str(tmp_path / "same" / "last.pt"), "--data", str(data)]) == 0
    printed = dict(
        line.rsplit(": validation score ", 1)
        for line in capsys.readouterr().out.split("\n")
        if ": validation score " in line
    )
    # the split rebuilt from the checkpoint's record is the one its epoch was selected on
    assert float(printed[str(start)]) == pytest.approx(
        load_checkpoint(start)[1]["val_score"], abs=5e-5
    )
    averaged_score = torch.load(tmp_path / "soup.pt", weights_only=True)["extra"]["val_score"]
    assert printed["average"].startswith(f"{averaged_score:.4f} (")
    other_split = [*_train_argv(data, tiny_backbone_file, third, 1), *share, "--val-seed", "1"]
    assert main(other_split) == 0
    assert main([*soup, str(third / "last.pt")]) == 1
    assert "its validation records would be trained on" in capsys.readouterr().err


def test_init_continues_from_a_trained_checkpoint(trained, synthetic_file, tmp_path, capsys):
    start = trained("lora")
    out = tmp_path / "more"
    argv = ["train", "--data", str(synthetic_file), "--init", str(start), "--epochs", "1"]
    argv += ["--lr", "0", "--batch-size", "8", "--outdir", str(out), "--quiet"]
    assert main(argv) == 0
    before, _ = load_checkpoint(start)
    after, extra = load_checkpoint(out / "model.pt")
    assert extra["init"] == str(start) and after.config == before.config
    records = read_labelled_list(synthetic_file)
    assert predict_records(after, records) == predict_records(before, records) == _truth(records)
    assert main([*argv, "--backbone", "random:L1-E8-H1"]) == 1
    assert "one of --init, --backbone" in capsys.readouterr().err
    assert main(argv[:3] + argv[5:]) == 1
    assert "one of --backbone, --init is required" in capsys.readouterr().err


def test_train_refuses_missing_partition_and_unknown_backbone(tiny_backbone_file, tmp_path, capsys):
    data = write_dataset(tmp_path / "d.fasta", per_type=2)
    base = ["train", "--data", str(data), "--outdir", str(tmp_path / "o"), "--quiet"]
    assert main([*base, "--backbone", str(tiny_backbone_file), "--test-partition", "7"]) == 1
    assert "test partition 7 has no records" in capsys.readouterr().err
    assert main([*base, "--backbone", str(tmp_path / "nope.pt")]) == 1
    assert "nope.pt" in capsys.readouterr().err
    assert not (tmp_path / "o" / "model.pt").exists()


def test_evaluate_command_prints_the_cell_table(trained, synthetic_file, tmp_path, capsys):
    out = tmp_path / "metrics.csv"
    argv = ["evaluate", "--data", str(synthetic_file), "--partition", "0"]
    assert main([*argv, "--model", str(trained("lora")), "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "| Eukarya       | Sec/SPI   |" in printed and "**Mean**" in printed
    assert out.read_text().count("\n") >= 2


def test_crossval_writes_six_models_and_both_tables(tiny_backbone_file, tmp_path):
    data = write_dataset(tmp_path / "d.fasta", per_type=3)
    out = tmp_path / "cv"
    argv = ["crossval", "--data", str(data), "--backbone", str(tiny_backbone_file)]
    argv += ["--epochs", "1", "--batch-size", "8", "--outdir", str(out), "--quiet"]
    assert main(argv) == 0
    models = sorted(p.parent.name for p in out.glob("*/model.pt"))
    assert models == [f"test_{t}_valid_{v}" for t in range(3) for v in range(3) if t != v]
    header = (out / "crossval_metrics.csv").read_text().splitlines()[0].split(",")
    assert header == ["metric", *models]
    cells = (out / "crossval_table.csv").read_text().splitlines()
    assert len(cells) == 1 + 16 + 1 and cells[1].startswith("Archaea,Sec/SPI,")
    assert cells[-1].lower().startswith("mean")
    table = (out / "crossval_table.md").read_text()
    assert "SignalP 6.0" in table and "Mean" in table
    assert (out / "crossval_table.csv").stat().st_size > 0


def test_training_batches_carry_the_decoder_sequence_rules_except_for_rule_breakers():
    records = [
        LabelledRecord(
            "lipo", "NEGATIVE", "LIPO", 0, "MKKLLLLLLLLLLLAGCDDEEK", "L" * 16 + "O" * 6, 1
        ),
        LabelledRecord(
            "tat", "NEGATIVE", "TAT", 0, "MSRRFLTAGLAVLLAGAAHAQAEDK", "T" * 20 + "O" * 5, 4
        ),
        # A Tat SP without an [RK]R motif breaks the rules: trained without them.
        LabelledRecord(
            "odd", "NEGATIVE", "TAT", 0, "MSTQFLTAGLAVLLAGAAHAQAEDK", "T" * 20 + "O" * 5, 7
        ),
    ]
    batch = make_batch(records, 70, rules=True)
    expected = grammar.sequence_mask(batch.tokens[:, 1:-1].numpy())
    assert np.array_equal(batch.rules[:2].numpy(), expected[:2])
    assert batch.rules[2].all() and not expected[2].all()
    assert not make_batch(records, 70).rules.logical_not().any()  # off unless asked


def test_epoch_records_subsample_only_the_largest_class():
    records = [LabelledRecord(str(i), "EUKARYA", "NO_SP", 0, "MK", "II", i) for i in range(200)]
    records += [LabelledRecord(f"s{i}", "NEGATIVE", "SP", 0, "MK", "SS", i) for i in range(20)]
    kept = epoch_records(records, 0.25, np.random.default_rng(0))
    assert set(range(200, 220)) <= set(kept.tolist())
    assert 30 < sum(k < 200 for k in kept) < 70
    assert len(epoch_records(records, 1.0, np.random.default_rng(0))) == 220


def test_cosine_schedule_anneals_from_lr_to_zero_and_constant_stays():
    cosine = TrainOptions(lr=0.01, lr_schedule="cosine")
    assert learning_rate(cosine, 0.0) == pytest.approx(0.01)
    assert learning_rate(cosine, 0.5) == pytest.approx(0.005)
    assert learning_rate(cosine, 1.0) == pytest.approx(0.0, abs=1e-12)
    rates = [learning_rate(cosine, x / 10) for x in range(11)]
    assert rates == sorted(rates, reverse=True)
    assert learning_rate(TrainOptions(lr=0.01), 0.9) == 0.01


def test_a_cosine_run_ends_near_zero_and_resumes_on_the_same_schedule(
    tiny_backbone_file, tmp_path, monkeypatch
):
    data = write_dataset(tmp_path / "d.fasta", per_type=4)
    whole, split = tmp_path / "whole", tmp_path / "split"
    argv = [*_train_argv(data, tiny_backbone_file, whole, 3), "--lr-schedule", "cosine"]
    assert main(argv) == 0
    final = torch.load(whole / "last.pt", weights_only=False)["optimizer"]["param_groups"][0]
    assert 0 < final["lr"] < 0.0067 / 2  # annealed: the last batch runs at a fraction of --lr

    real_save = training.save_progress

    def save_then_interrupt(path, model, optimizer, rng, state):
        real_save(path, model, optimizer, rng, state)
        if state["epoch"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(training, "save_progress", save_then_interrupt)
    argv = [*_train_argv(data, tiny_backbone_file, split, 3), "--lr-schedule", "cosine"]
    assert main(argv) == 130
    monkeypatch.undo()
    assert main([*argv, "--resume"]) == 0
    first, second = (torch.load(d / "last.pt", weights_only=True)["model"] for d in (whole, split))
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_a_validation_share_is_drawn_the_same_whatever_the_validation_partition(tmp_path):
    records = read_labelled_list(write_dataset(tmp_path / "d.fasta", per_type=4, partitions=4))
    ids = [[r.accession for r in part] for part in evaluation.run_split(records, 0, 1, 0.25, 7)]
    for val in (2, 3, None):
        again = evaluation.run_split(records, 0, val, 0.25, 7)
        assert [[r.accession for r in part] for part in again] == ids
    train, held, test = ids
    assert set(train).isdisjoint(held) and len(held) == round((len(train) + len(held)) * 0.25)
    assert {r.partition for r in records if r.accession in test} == {0}
    # the runs made before run_split (test 0, validation 1) keep their validation records
    old_train, old_val, _ = evaluation.split_partitions(records, 0, 1)
    assert [
        r.accession for r in evaluation.split_validation(old_train + old_val, 0.25, 7)[1]
    ] == held
    with pytest.raises(PeftSPError, match="validation partition or a validation fraction"):
        evaluation.run_split(records, 0)


def test_init_with_kingdom_input_grows_the_model_without_changing_it(
    synthetic_file, trained, tmp_path, capsys
):
    from peftsp.train.model import save_checkpoint

    esm = backbone.load_backbone("random:L1-E16-H2", seed=0)
    config = ModelConfig(
        backbone="random:L1-E16-H2",
        backbone_shape=backbone.backbone_config(esm),
        peft="full",
        kingdom_conditioning=True,
    )
    start = tmp_path / "start.pt"
    save_checkpoint(SignalPeptideModel(esm, config), start)
    out = tmp_path / "grown"
    argv = ["train", "--data", str(synthetic_file), "--epochs", "1", "--lr", "0"]
    argv += ["--kingdom-input", "--batch-size", "8", "--quiet"]
    assert main([*argv, "--init", str(start), "--outdir", str(out)]) == 0
    grown, _ = load_checkpoint(out / "model.pt")
    before, _ = load_checkpoint(start)
    assert grown.config.kingdom_input and not before.config.kingdom_input
    records = read_labelled_list(synthetic_file)
    assert predict_records(grown, records) == predict_records(before, records)
    refused = tmp_path / "refused"
    assert main([*argv, "--init", str(trained("lora")), "--outdir", str(refused)]) == 1
    assert "needs kingdom conditioning" in capsys.readouterr().err


def test_selection_decodes_with_the_training_shift_its_calibrated_bundle_uses(
    tiny_backbone_file, tmp_path, monkeypatch
):
    """Epoch selection must see the predictions the shipped model will make: class subsampling
    and balancing undone by the run's training prior shift, decoded exactly as a bundle
    calibrated with that shift decodes."""
    from peftsp.bundle import Bundle, load_bundle
    from peftsp.calibration import training_shifts
    from peftsp.runtime import Session
    from peftsp.train.export import export_bundle

    seen = []
    real = training.selection_score
    monkeypatch.setattr(
        training, "selection_score", lambda m, r, s=None: seen.append(s) or real(m, r, s)
    )
    data = write_dataset(tmp_path / "d.fasta", per_type=4)
    out = tmp_path / "run"
    argv = _train_argv(data, tiny_backbone_file, out, 2)
    assert main([*argv, "--class-balance", "0.5", "--val-fraction", "0.3"]) == 0
    model, extra = load_checkpoint(out / "model.pt")
    train, val, _ = evaluation.recorded_run_split(read_labelled_list(data), extra)
    shifts = training_shifts(train, extra["options"])
    assert seen == [shifts, shifts] and any(any(v) for v in shifts.values())

    export_bundle(model, tmp_path / "bundle", training=extra)
    bundle = load_bundle(tmp_path / "bundle")
    strong = {o: [0.0, 0.0, 0.0, 8.0, 0.0, 0.0] for o in shifts}  # Tat/SPI made likely
    meta = {**bundle.meta, "calibration": {"log_prior_shift": {"training": strong}}}
    session = Session(Bundle(bundle.path, meta, bundle.crf), "cpu", "fp32", 1)
    shipped = evaluation.predict_labelled(session, val)
    ours = predict_records(model, val, shifts=strong)
    assert ([p.sp_type for p in shipped], [p.cs for p in shipped]) == ours
    assert ours != predict_records(model, val)


@pytest.mark.parametrize(
    ("option", "value"), [("--class-balance", "0"), ("--majority-fraction", "1.5")]
)
def test_bad_sampling_options_are_refused_before_any_output(
    tiny_backbone_file, tmp_path, capsys, option, value
):
    data = write_dataset(tmp_path / "d.fasta", per_type=2)
    out = tmp_path / "run"
    argv = ["train", "--data", str(data), "--backbone", str(tiny_backbone_file)]
    assert main([*argv, option, value, "--outdir", str(out), "--quiet"]) == 1
    assert f"{option} must be in (0, 1], got {float(value)}" in capsys.readouterr().err
    assert not out.exists()


def test_residue_masking_hides_only_residues_at_the_asked_rate_and_is_seeded():
    from peftsp import tokens

    ids = torch.as_tensor(tokens.encode(["MKTAYIAKQR" * 7, "MLLK"], 70)[0])
    residue = (ids != tokens.CLS) & (ids != tokens.EOS) & (ids != tokens.PAD)
    assert mask_residues(ids, 0.0) is ids
    torch.manual_seed(3)
    masked = mask_residues(ids, 0.3)
    changed = masked != ids
    assert bool((masked[changed] == tokens.MASK).all()) and not bool((changed & ~residue).any())
    assert 0.15 < changed.sum().item() / residue.sum().item() < 0.45
    torch.manual_seed(3)
    assert torch.equal(mask_residues(ids, 0.3), masked)
    assert mask_residues(ids, 0.999).eq(tokens.MASK).sum() > 0.9 * residue.sum()


def test_layer_dropout_acts_in_training_only(tiny_backbone_file, tmp_path):
    data = write_dataset(tmp_path / "d.fasta", per_type=2)
    records = [r for r in read_labelled_list(data) if r.sp_type == "SP"]
    batch = make_batch(records, 70)
    esm = backbone.load_backbone(str(tiny_backbone_file))
    plain = SignalPeptideModel(esm, _config(tiny_backbone_file, esm), seed=1).eval()
    dropped = SignalPeptideModel(esm, _config(tiny_backbone_file, esm), seed=1)
    dropped.load_state_dict(plain.state_dict())
    dropped.layer_dropout = 0.3
    dropped.eval()
    assert torch.equal(dropped(batch.tokens), plain(batch.tokens))  # what export traces
    dropped.train()
    dropped.dropout.p = 0.0  # only the layers' dropout left
    torch.manual_seed(0)
    first = dropped(batch.tokens)
    assert not torch.allclose(first, plain(batch.tokens), atol=1e-4)
    assert not torch.allclose(first, dropped(batch.tokens), atol=1e-4)


def _config(backbone_file, esm):
    return ModelConfig(
        backbone=str(backbone_file), backbone_shape=backbone.backbone_config(esm), peft="full"
    )


def test_masked_training_regularises_on_the_true_residues(tiny_backbone_file, tmp_path):
    records = read_labelled_list(write_dataset(tmp_path / "d.fasta", per_type=2))
    batch = make_batch(records, 70)
    esm = backbone.load_backbone(str(tiny_backbone_file))
    model = SignalPeptideModel(esm, _config(tiny_backbone_file, esm), seed=1).eval()
    torch.manual_seed(0)
    seen = mask_residues(batch.tokens, 0.5)
    args = (batch.lengths, batch.allowed, batch.types, None, 0.5)
    with_true = model.loss(batch.tokens, *args, seen=seen)
    # the model reads the masked rows; the composition regulariser reads the true residues
    nll_only = model.loss(seen, *args[:-1], 0.0)
    assert not torch.isclose(with_true, model.loss(seen, *args))
    assert with_true > nll_only


@pytest.mark.parametrize("option", ["--residue-mask", "--layer-dropout"])
def test_masking_and_layer_dropout_rates_are_checked_before_any_output(
    tiny_backbone_file, tmp_path, capsys, option
):
    data = write_dataset(tmp_path / "d.fasta", per_type=2)
    out = tmp_path / "run"
    argv = ["train", "--data", str(data), "--backbone", str(tiny_backbone_file)]
    assert main([*argv, option, "1", "--outdir", str(out), "--quiet"]) == 1
    assert f"{option} must be in [0, 1), got 1.0" in capsys.readouterr().err
    assert not out.exists()


def test_masking_and_layer_dropout_reach_training_and_checkpoints_still_average(
    tiny_backbone_file, tmp_path, capsys
):
    data = write_dataset(tmp_path / "d.fasta", per_type=2)
    runs = {name: tmp_path / name for name in ("plain", "masked", "dropped")}
    options = {
        "plain": [],
        "masked": ["--residue-mask", "0.2"],
        "dropped": ["--layer-dropout", "0.2"],
    }
    for name, out in runs.items():
        assert main([*_train_argv(data, tiny_backbone_file, out, 1), *options[name]]) == 0
    weights = {name: _weights(out / "model.pt") for name, out in runs.items()}
    for name in ("masked", "dropped"):  # the same seed: only the option differs
        assert any(not torch.equal(weights[name][k], weights["plain"][k]) for k in weights[name])
    extra = torch.load(runs["masked"] / "model.pt", weights_only=True)["extra"]
    assert extra["options"]["residue_mask"] == 0.2
    soup = tmp_path / "soup.pt"
    argv = ["average", "--checkpoints", *(str(out / "model.pt") for out in runs.values())]
    assert main([*argv, "--out", str(soup)]) == 0  # a training option, not another model
    assert load_checkpoint(soup)[0].config == load_checkpoint(runs["plain"] / "model.pt")[0].config
