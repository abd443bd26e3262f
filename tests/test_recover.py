"""Rebuilding a training checkpoint from a bundle: the round trip export -> recover gives the
same weights and CRF, the recovered checkpoint predicts like the bundle, and bundles that do not
hold every weight, or whose graph the rebuilt model does not reproduce, are refused."""

import numpy as np
import pytest
import torch

from peftsp.cli import main
from peftsp.errors import ModelError
from peftsp.train import backbone, export, recover
from peftsp.train.export import example_batch, export_bundle
from peftsp.train.model import ModelConfig, SignalPeptideModel, load_checkpoint

SPEC = "random:L2-E32-H4"


@pytest.fixture(scope="module", params=[False, True], ids=["kingdom-output", "kingdom-input"])
def conditioned(request, tmp_path_factory):
    """A random-backbone model with kingdom embeddings (at the output; also at the input),
    sequence rules and random CRF scores (nothing at its zero initialisation, so a misplaced
    weight shows), and its bundle."""
    esm = backbone.load_backbone(SPEC, seed=5)
    config = ModelConfig(
        backbone=SPEC,
        backbone_shape=backbone.backbone_config(esm),
        peft="full",
        kingdom_conditioning=True,
        kingdom_input=request.param,
        sequence_rules=True,
    )
    model = SignalPeptideModel(esm, config, seed=5).eval()
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        model.kingdom.weight.normal_(0, 0.5, generator=generator)
        if model.kingdom_input is not None:
            model.kingdom_input.weight.normal_(0, 0.5, generator=generator)
        for name in ("transitions", "start_transitions", "end_transitions"):
            original = model.crf.parametrizations[name].original
            original.normal_(0, 1, generator=generator)
    out = tmp_path_factory.mktemp("recover") / "bundle"
    export_bundle(model, out, training={"test_partition": 0, "val_fraction": 0.1})
    return model, out


def _trained_state(model):
    # The LM and contact heads are not in the graph and never predict; the CRF's disallowed
    # entries are masked, so its scores are compared as the decoder sees them.
    skip = ("lm_head", "contact_head", "crf.parametrizations")
    return {k: v for k, v in model.state_dict().items() if not any(s in k for s in skip)}


def test_recovered_model_has_the_exported_weights_and_crf(conditioned):
    model, bundle = conditioned
    rebuilt, training = recover.model_from_bundle(bundle)
    assert rebuilt.config == model.config
    ours, theirs = _trained_state(model), _trained_state(rebuilt)
    assert set(ours) == set(theirs)
    for name, value in ours.items():
        assert torch.allclose(value, theirs[name], atol=1e-6), name
    for key, value in model.crf.numpy_parameters().items():
        assert np.array_equal(value, rebuilt.crf.numpy_parameters()[key])
    assert training == {"test_partition": 0, "val_fraction": 0.1}


def test_recover_command_writes_a_checkpoint_that_predicts_like_the_model(conditioned, tmp_path):
    model, bundle = conditioned
    out = tmp_path / "model.pt"
    assert main(["recover", "--model", str(bundle), "--out", str(out), "--quiet"]) == 0
    loaded, extra = load_checkpoint(out)
    assert extra["recovered_from"] == str(bundle) and extra["test_partition"] == 0
    ids, _, kingdom = example_batch(model.config.window)
    with torch.no_grad():
        a = model(torch.as_tensor(ids), torch.as_tensor(kingdom)).numpy()
        b = loaded(torch.as_tensor(ids), torch.as_tensor(kingdom)).numpy()
    assert np.abs(a - b).max() < 1e-5


def test_a_lora_bundle_is_refused_by_name(bundle, tmp_path, capsys):
    out = tmp_path / "model.pt"
    assert main(["recover", "--model", str(bundle("lora")), "--out", str(out), "--quiet"]) == 1
    assert "full fine-tuning or a random backbone" in capsys.readouterr().err
    assert not out.exists()


def test_a_graph_the_rebuilt_model_does_not_reproduce_is_refused(conditioned, monkeypatch):
    _, bundle = conditioned
    real = export.run_onnx
    monkeypatch.setattr(export, "run_onnx", lambda path, feeds: real(path, feeds) + 1e-3)
    with pytest.raises(ModelError, match="differ from the graph's"):
        recover.model_from_bundle(bundle)
