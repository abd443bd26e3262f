"""ESM-2 in the Hugging Face layout: tiny checkpoints written by transformers itself load into
fair-esm's ESM2 and compute what transformers computes; HF cache snapshots and `hf:` offline;
train -> export -> predict on one; bad directories are clear errors naming file and keys."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import transformers
from esm_fixtures import MASK, PAD, make_tokens
from hf_fixtures import (
    edit_config,
    edit_tensors,
    esm2_config,
    fake_hub_cache,
    read_tensors,
    save_hf_model,
    tiny_hf_esm2,
    write_vocab,
)
from synthetic import write_dataset
from transformers import BertConfig, EsmForMaskedLM, EsmModel

from peftsp.cli import main
from peftsp.errors import ModelError
from peftsp.train import backbone, hf_weights
from peftsp.train.model import load_checkpoint

transformers.logging.set_verbosity_error()  # no load reports for the deliberately headless loads
REPO = "peftsp-test/tiny-esm2"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def hf_model():
    return tiny_hf_esm2(seed=0)


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory, hf_model):
    """The tiny model as transformers 5 saves it, with its tokenizer's vocab.txt."""
    return save_hf_model(hf_model, tmp_path_factory.mktemp("hf") / "tiny-esm2")


def transformers_outputs(directory: Path, tokens: torch.Tensor):
    """(last hidden state, MLM logits) of transformers' own load of `directory`."""
    model = EsmForMaskedLM.from_pretrained(directory).eval()
    with torch.no_grad():
        out = model(input_ids=tokens, attention_mask=tokens.ne(PAD), output_hidden_states=True)
    return out.hidden_states[-1], out.logits


def assert_close_on_residues(a: torch.Tensor, b: torch.Tensor, tokens: torch.Tensor) -> None:
    valid = tokens.ne(PAD)
    torch.testing.assert_close(a[valid], b[valid], atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("layout", "token_dropout"), [("transformers 5", True), ("hub / transformers 4", False)]
)
def test_hf_directory_computes_what_transformers_computes(tmp_path, layout, token_dropout):
    model = tiny_hf_esm2(seed=1, token_dropout=token_dropout)
    directory = save_hf_model(model, tmp_path / "m", legacy=layout != "transformers 5")
    keys = set(read_tensors(directory / "model.safetensors"))
    assert ("esm.encoder.layer.0.LayerNorm.gamma" in keys) == (layout == "transformers 5")
    esm = backbone.load_backbone(str(directory))
    assert not esm.training
    assert backbone.backbone_config(esm) == {
        "layers": 2,
        "embed_dim": 32,
        "heads": 4,
        "token_dropout": token_dropout,
    }
    tokens = make_tokens([9, 4, 6], seed=2, masks=3)  # padding and <mask> (token dropout)
    hidden, logits = transformers_outputs(directory, tokens)
    with torch.no_grad():
        ours = backbone.encode(esm, tokens)
        ours_logits = esm(tokens)["logits"]  # fair-esm's LM head: mapped dense, norm, bias
    assert_close_on_residues(ours, hidden, tokens)
    assert_close_on_residues(ours_logits, logits, tokens)
    # and transformers' load is the model that was saved (the reference is not itself off)
    with torch.no_grad():
        saved = model(input_ids=tokens, attention_mask=tokens.ne(PAD)).logits
    assert_close_on_residues(logits, saved, tokens)


def test_mask_handling_really_differs_with_token_dropout(tmp_path):
    """The flag is honoured: with and without it a masked input gives different outputs."""
    tokens = make_tokens([8], seed=3, masks=2)
    outputs = []
    for flag in (True, False):
        directory = save_hf_model(tiny_hf_esm2(seed=1, token_dropout=flag), tmp_path / str(flag))
        with torch.no_grad():
            outputs.append(backbone.encode(backbone.load_backbone(str(directory)), tokens))
    assert (outputs[0] - outputs[1]).abs().max() > 1e-3


def test_esm_model_checkpoint_without_prefix_lm_head_but_with_pooler(tmp_path, hf_model):
    """EsmModel.save_pretrained: keys without `esm.`, a pooler, no LM head."""
    bare = EsmModel(hf_model.config, add_pooling_layer=True).eval()
    missing, _ = bare.load_state_dict(hf_model.esm.state_dict(), strict=False)
    assert all(key.startswith("pooler.") for key in missing)
    directory = save_hf_model(bare, tmp_path / "bare")
    keys = set(read_tensors(directory / "model.safetensors"))
    assert "pooler.dense.weight" in keys and not any(
        k.startswith(("esm.", "lm_head")) for k in keys
    )
    tokens = make_tokens([7, 3], seed=4, masks=1)
    with torch.no_grad():
        ours = backbone.encode(backbone.load_backbone(str(directory)), tokens)
        reference = EsmModel.from_pretrained(directory).eval()(
            input_ids=tokens, attention_mask=tokens.ne(PAD)
        )
    assert_close_on_residues(ours, reference.last_hidden_state, tokens)


def test_sharded_checkpoint_loads_like_the_single_file(tmp_path, hf_model, hf_dir):
    directory = save_hf_model(hf_model, tmp_path / "sharded", max_shard_size="20KB")
    assert not (directory / "model.safetensors").exists()
    shards = json.loads((directory / "model.safetensors.index.json").read_text())["weight_map"]
    assert len(set(shards.values())) > 1
    single = backbone.load_backbone(str(hf_dir)).state_dict()
    sharded = backbone.load_backbone(str(directory)).state_dict()
    assert single.keys() == sharded.keys()
    assert all(torch.equal(single[k], sharded[k]) for k in single if "contact_head" not in k)


def test_every_fair_esm_weight_has_a_transformers_name():
    """The name table covers ESM2 exactly: all but the contact head, the tied LM-head weight
    and the rotary frequencies (which are mapped apart)."""
    esm = backbone.build_backbone({"layers": 3, "embed_dim": 16, "heads": 2})
    mapped = set(hf_weights.weight_names(3).values())
    apart = {
        key
        for key in esm.state_dict()
        if key.startswith("contact_head.") or key == "lm_head.weight" or key.endswith("inv_freq")
    }
    assert mapped == set(esm.state_dict()) - apart
    assert len(hf_weights.weight_names(3)) == len(mapped)


def test_vocabulary_written_by_the_tokenizer_is_fair_esm_s_and_another_is_refused(
    tmp_path, hf_model
):
    directory = save_hf_model(hf_model, tmp_path / "m")
    backbone.load_backbone(str(directory))  # transformers' ESM-2 vocab.txt is accepted
    vocab = (directory / "vocab.txt").read_text().split("\n")
    swapped = list(vocab)
    swapped[4], swapped[5] = vocab[5], vocab[4]  # A and L swapped: every id still in range
    write_vocab(directory, swapped)
    with pytest.raises(ModelError, match=r"token 4 is 'A', fair-esm's ESM-2 alphabet has 'L'"):
        backbone.load_backbone(str(directory))
    write_vocab(directory, vocab[:20])
    with pytest.raises(ModelError, match="20 tokens, fair-esm's ESM-2 alphabet has 33") as info:
        backbone.load_backbone(str(directory))
    assert str(directory / "vocab.txt") in str(info.value)
    (directory / "vocab.txt").unlink()  # a model saved without its tokenizer still loads
    backbone.load_backbone(str(directory))


def _break_directory(case: str, directory: Path) -> tuple[Path, str]:
    """Damage a copy of a good directory; returns (file the error must name, message regex)."""
    weights, config = directory / "model.safetensors", directory / "config.json"
    if case == "missing config.json":
        config.unlink()
        return directory, "no config.json"
    if case == "config.json not JSON":
        config.write_text("{ not json")
        return config, "not a readable JSON config"
    if case == "model_type bert":
        config.unlink()
        BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4).save_pretrained(
            directory
        )
        return config, "model_type is 'bert', not 'esm'"
    if case == "ESM-1b style config":
        edit_config(directory, position_embedding_type="absolute", emb_layer_norm_before=True)
        return config, "not 'rotary' .ESM-1b / ESM-1v, not ESM-2.; emb_layer_norm_before"
    if case == "FFN not 4 x E":
        edit_config(directory, intermediate_size=100)
        return config, "intermediate_size 100 is not 4 x 32"
    if case == "layer norm eps":
        edit_config(directory, layer_norm_eps=1e-12)
        return config, "layer_norm_eps is 1e-12, not 1e-05"
    if case == "other vocabulary size":
        edit_config(directory, vocab_size=34)
        return config, "vocab_size is 34, not 33"
    if case == "missing model.safetensors":
        weights.unlink()
        return weights, "no such file. A Hugging Face ESM-2 directory needs model.safetensors"
    if case == "only pickled weights":
        weights.rename(directory / "pytorch_model.bin")
        return weights, r"found pytorch_model.bin; only safetensors weights are read"
    if case == "truncated model.safetensors":
        data = weights.read_bytes()
        weights.write_bytes(data[: len(data) * 2 // 3])
        return weights, "not a readable safetensors file"
    if case == "missing keys":
        edit_tensors(weights, lambda s: s.pop("esm.encoder.layer.1.intermediate.dense.weight"))
        return (
            weights,
            r"missing keys esm.encoder.layer.1.intermediate.dense.weight, extra keys none",
        )
    if case == "incomplete LM head":
        edit_tensors(weights, lambda s: s.pop("lm_head.bias"))
        return weights, r"missing keys lm_head.bias, extra"
    if case == "extra keys":

        def add(state):
            state["classifier.weight"] = torch.zeros(2, 32)
            state["esm.encoder.layer.2.output.dense.bias"] = torch.zeros(32)  # a third layer

        edit_tensors(weights, add)
        return weights, (
            r"missing keys none, extra keys classifier.weight, "
            r"esm.encoder.layer.2.output.dense.bias"
        )
    if case == "wrong shapes":
        edit_tensors(
            weights,
            lambda s: s.update(
                {"esm.encoder.layer.0.intermediate.dense.weight": torch.zeros(64, 32)}
            ),
        )
        return weights, (
            r"shapes do not match .* \(L2-E32-H4\): "
            r"esm.encoder.layer.0.intermediate.dense.weight is \[64, 32\], expected \[128, 32\]"
        )
    if case == "config larger than the weights":
        edit_config(directory, hidden_size=64, intermediate_size=256)
        return weights, r"esm.embeddings.word_embeddings.weight is \[33, 32\], expected \[33, 64\]"
    if case == "missing shard":
        weights.unlink()
        (directory / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors"}})
        )
        return directory / "model.safetensors.index.json", "lists shards that are missing"
    raise AssertionError(case)


BAD_CASES = (
    "missing config.json",
    "config.json not JSON",
    "model_type bert",
    "ESM-1b style config",
    "FFN not 4 x E",
    "layer norm eps",
    "other vocabulary size",
    "missing model.safetensors",
    "only pickled weights",
    "truncated model.safetensors",
    "missing keys",
    "incomplete LM head",
    "extra keys",
    "wrong shapes",
    "config larger than the weights",
    "missing shard",
)


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_hf_directories_are_clear_errors_naming_the_file(tmp_path, hf_model, case):
    directory = save_hf_model(hf_model, tmp_path / "m")
    named, reason = _break_directory(case, directory)
    with pytest.raises(ModelError, match=reason) as info:
        backbone.load_backbone(str(directory))
    assert str(named) in str(info.value)


def test_weights_are_checked_before_any_is_copied(tmp_path, hf_model, monkeypatch):
    """A bad file never leaves a half-loaded model behind: nothing is read before the checks."""
    directory = save_hf_model(hf_model, tmp_path / "m")
    edit_tensors(
        directory / "model.safetensors", lambda s: s.pop("esm.encoder.layer.1.output.dense.bias")
    )
    esm = backbone.build_backbone(hf_weights.read_config(directory))
    before = {k: v.clone() for k, v in esm.state_dict().items()}
    with pytest.raises(ModelError, match="missing keys"):
        hf_weights.load_weights(esm, directory)
    assert all(torch.equal(before[k], v) for k, v in esm.state_dict().items())


def test_cache_snapshot_and_cache_repo_folder_load_as_directories(tmp_path, hf_dir):
    snapshot = fake_hub_cache(tmp_path / "hub", REPO, hf_dir)
    assert (snapshot / "model.safetensors").is_symlink()
    expected = backbone.load_backbone(str(hf_dir)).state_dict()
    for spec in (snapshot, snapshot.parent.parent):  # .../snapshots/<commit>, .../models--org--name
        loaded = backbone.load_backbone(str(spec)).state_dict()
        assert all(torch.equal(expected[k], loaded[k]) for k in expected if "contact" not in k)


_OFFLINE_SCRIPT = textwrap.dedent(
    """
    import json, sys, torch
    from peftsp.errors import ModelError
    from peftsp.train import backbone
    from peftsp.train.model import ModelConfig, SignalPeptideModel, load_checkpoint, save_checkpoint
    tokens = torch.tensor([[0, 5, 9, 13, 4, 32, 2], [0, 7, 7, 2, 1, 1, 1]])
    esm = backbone.load_backbone("hf:{repo}")
    pinned = backbone.load_backbone("hf:{repo}@{commit}")  # a revision: the commit itself
    with torch.no_grad():
        hidden = backbone.encode(esm, tokens)
        pinned_same = torch.equal(backbone.encode(pinned, tokens), hidden)
    config = ModelConfig("hf:{repo}", backbone.backbone_config(esm), peft="lora", lora_rank=2)
    model = SignalPeptideModel(esm, config).eval()
    save_checkpoint(model, sys.argv[1])
    reloaded, _ = load_checkpoint(sys.argv[1])
    with torch.no_grad():
        same = torch.equal(model(tokens), reloaded(tokens))
    try:
        backbone.load_backbone("hf:peftsp-test/not-cached")
        error = None
    except ModelError as err:
        error = str(err)
    result = {{"hidden": hidden.tolist(), "pinned": pinned_same, "same": same, "error": error}}
    print(json.dumps(result))
    """
)


def test_hf_spec_reads_the_cache_offline_and_explains_a_miss(tmp_path, hf_dir):
    """In a fresh process, as a user would run it: HF_HOME points at a cache that holds the
    model, HF_HUB_OFFLINE=1; huggingface_hub resolves refs/main to the snapshot."""
    commit = fake_hub_cache(tmp_path / "home" / "hub", REPO, hf_dir).name
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(HF_HOME=str(tmp_path / "home"), HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    script = _OFFLINE_SCRIPT.format(repo=REPO, commit=commit)
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "model.pt")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    tokens = torch.tensor([[0, 5, 9, 13, 4, MASK, 2], [0, 7, 7, 2, PAD, PAD, PAD]])
    with torch.no_grad():
        expected = backbone.encode(backbone.load_backbone(str(hf_dir)), tokens)
    assert torch.equal(torch.tensor(out["hidden"]), expected)
    assert out["pinned"]
    assert out["same"]  # a checkpoint on hf:... rebuilds its backbone from the cache
    error = out["error"]
    assert "cannot get hf:peftsp-test/not-cached" in error
    assert str(tmp_path / "home" / "hub") in error and "HF_HUB_OFFLINE is set" in error
    assert "hf download peftsp-test/not-cached" in error and "--backbone /path/to/dir" in error


def test_resolve_spec_makes_local_paths_absolute(tmp_path, monkeypatch, hf_dir):
    monkeypatch.chdir(hf_dir.parent)
    assert backbone.resolve_spec(hf_dir.name) == str(hf_dir.resolve())
    for spec in ("hf:facebook/esm2_t6_8M_UR50D", "esm2_t6_8M_UR50D", "random:L2-E32-H4"):
        assert backbone.resolve_spec(spec) == spec


def test_train_export_predict_on_an_hf_backbone(tmp_path, hf_dir):
    data = write_dataset(tmp_path / "train.fasta", per_type=2)
    run, bundle, out = tmp_path / "run", tmp_path / "bundle", tmp_path / "out"
    argv = ["train", "--data", str(data), "--backbone", str(hf_dir), "--peft", "lora"]
    argv += ["--lora-rank", "2", "--epochs", "1", "--batch-size", "4", "--limit", "4"]
    assert main([*argv, "--outdir", str(run), "--quiet"]) == 0
    checkpoint = torch.load(run / "model.pt", weights_only=True)
    assert checkpoint["config"]["backbone"] == str(hf_dir)
    assert all("lora_" in k for k in checkpoint["state"] if k.startswith("backbone."))
    model, _ = load_checkpoint(run / "model.pt")  # the frozen backbone comes from the HF dir
    reference = backbone.load_backbone(str(hf_dir)).state_dict()
    state = {k.replace(".base.", "."): v for k, v in model.backbone.state_dict().items()}
    assert all(torch.equal(state[k], v) for k, v in reference.items())

    assert main(["export", "--checkpoint", str(run / "model.pt"), "--outdir", str(bundle)]) == 0
    meta = json.loads((bundle / "model.json").read_text())
    assert meta["backbone"] == str(hf_dir) and meta["export_check"]["max_abs_diff"] < 1e-4

    fasta = tmp_path / "proteins.faa"
    fasta.write_text(">p1\nMKKLLLLAVLAAALLASQAEDNKT\n>p2 short\nMQ\n>p3\nMSRRTFLAGLVAAHADEKNQ\n")
    argv = ["predict", "--fasta", str(fasta), "--outdir", str(out), "--model", str(bundle)]
    assert main([*argv, "--device", "cpu", "--quiet"]) == 0
    predictions = json.loads((out / "output.json").read_text())["predictions"]
    assert [p["id"] for p in predictions] == ["p1", "p2", "p3"]


def test_hf_config_of_a_real_esm2_shape_is_accepted(tmp_path):
    """The config.json fields of facebook/esm2_t6_8M_UR50D pass the checks (no weights read)."""
    esm2_config(layers=6, dim=320, heads=20).save_pretrained(tmp_path)
    write_vocab(tmp_path)
    assert hf_weights.read_config(tmp_path) == {
        "layers": 6,
        "embed_dim": 320,
        "heads": 20,
        "token_dropout": True,
    }


@pytest.mark.parametrize("spec", ["hf:", "hf:not a repo id", "hf:a/b/c"])
def test_malformed_hf_specs_are_model_errors(spec):
    with pytest.raises(ModelError, match=f"cannot get {spec}"):
        backbone.load_backbone(spec)
