import pickle
import urllib.error

import esm.pretrained
import pytest
import torch
from esm_fixtures import make_tokens, populate_hub_cache, save_fair_esm_checkpoint, tiny_esm2

from peftsp.errors import ModelError
from peftsp.train import backbone


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module, skip: str = "\0") -> None:
    state_a, state_b = a.state_dict(), b.state_dict()
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        if not key.startswith(skip):
            assert torch.equal(state_a[key], state_b[key]), key


def reference(model, tokens: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(tokens, repr_layers=[model.num_layers])["representations"][model.num_layers]


@pytest.fixture
def model():
    return tiny_esm2()


@pytest.mark.parametrize("with_regression", [True, False])
def test_local_checkpoint_in_official_layout_loads_under_any_name(tmp_path, model, with_regression):
    path = save_fair_esm_checkpoint(model, tmp_path / "my backbone.v2.ckpt", with_regression)
    assert (tmp_path / "my backbone.v2-contact-regression.pt").exists() == with_regression
    loaded = backbone.load_backbone(str(path))
    assert not loaded.training
    assert backbone.backbone_config(loaded) == backbone.backbone_config(model)
    assert_same_weights(loaded, model, skip="" if with_regression else "contact_head.")
    tokens = make_tokens([5, 9, 3])
    with torch.no_grad():
        assert torch.equal(backbone.encode(loaded, tokens), backbone.encode(model, tokens))


def test_default_torch_load_fails_on_official_layout_but_ours_loads(tmp_path, model):
    path = save_fair_esm_checkpoint(model, tmp_path / "esm2_t6_8M_UR50D.pt")
    # torch >= 2.6 defaults to weights_only=True, which refuses the argparse.Namespace config;
    # fair-esm 2.0.0 calls torch.load that way, so its own local loader fails too.
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        torch.load(path)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        esm.pretrained.load_model_and_alphabet_local(str(path))
    assert_same_weights(backbone.load_backbone(str(path)), model)


def _no_network(*args, **kwargs):
    raise urllib.error.URLError("network is unreachable")


def test_known_name_uses_the_torch_hub_cache_offline(tmp_path, monkeypatch, model):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_network)
    populate_hub_cache(model, tmp_path, "esm2_t12_35M_UR50D")
    assert_same_weights(backbone.load_backbone("esm2_t12_35M_UR50D"), model)


def test_known_name_downloads_into_the_cache_when_missing(tmp_path, monkeypatch, model):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    source = save_fair_esm_checkpoint(model, tmp_path / "server.pt", with_regression=False)
    urls = []

    def fake_download(url, dst, progress=True):
        urls.append(url)
        dst_path = tmp_path / "home" / "hub" / "checkpoints" / "esm2_t6_8M_UR50D.pt"
        assert dst == str(dst_path)
        dst_path.write_bytes(source.read_bytes())

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    assert_same_weights(backbone.load_backbone("esm2_t6_8M_UR50D"), model, skip="contact_head.")
    assert urls == ["https://dl.fbaipublicfiles.com/fair-esm/models/esm2_t6_8M_UR50D.pt"]
    backbone.load_backbone("esm2_t6_8M_UR50D")
    assert len(urls) == 1  # cached now


@pytest.mark.parametrize("error", [urllib.error.URLError("offline"), OSError("no route")])
def test_known_name_offline_without_cache_explains_what_to_do(tmp_path, monkeypatch, error):
    def fail(*args, **kwargs):
        raise error

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", fail)
    with pytest.raises(ModelError) as info:
        backbone.load_backbone("esm2_t33_650M_UR50D")
    message = str(info.value)
    assert "cannot download ESM-2 model esm2_t33_650M_UR50D" in message
    assert "--backbone /path/to/esm2_t33_650M_UR50D.pt" in message
    assert "contact-regression.pt" in message and "optional" in message
    assert str(tmp_path / "hub" / "checkpoints" / "esm2_t33_650M_UR50D.pt") in message
    assert "TORCH_HOME" in message


def _write_bad_files(tmp_path, model) -> dict:
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint\n")
    no_cfg = tmp_path / "state_only.pt"
    torch.save({"model": model.state_dict()}, no_cfg)
    wrong_keys = save_fair_esm_checkpoint(model, tmp_path / "wrong_keys.pt")
    data = torch.load(wrong_keys, weights_only=False)
    del data["model"]["encoder.sentence_encoder.layers.1.fc1.weight"]
    torch.save(data, wrong_keys)
    wrong_shape = save_fair_esm_checkpoint(model, tmp_path / "wrong_shape.pt")
    data = torch.load(wrong_shape, weights_only=False)
    data["cfg"]["model"].encoder_embed_dim = 64
    torch.save(data, wrong_shape)
    pickled = tmp_path / "pickled.pt"
    torch.save(model, pickled)  # a whole pickled module, as some scripts save models
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(
        save_fair_esm_checkpoint(model, tmp_path / "whole.pt").read_bytes()[:5000]
    )
    return {
        "missing": (tmp_path / "nowhere.pt", "no such file"),
        "pickled": (pickled, "pickled Python objects.*could run code"),
        "empty": (empty, "truncated, corrupt or not a torch file"),
        "truncated": (truncated, "truncated, corrupt or not a torch file"),
        "directory": (tmp_path, "no config.json.*pass the .pt file itself"),
        "text": (text, "not a readable fair-esm checkpoint"),
        "no cfg": (no_cfg, "not a fair-esm ESM-2 checkpoint"),
        "wrong keys": (wrong_keys, "missing .'layers.1.fc1.weight'."),
        "wrong shape": (wrong_shape, "do not match its configured shape"),
    }


def test_bad_checkpoint_paths_name_the_file(tmp_path, model):
    for case, (path, reason) in _write_bad_files(tmp_path, model).items():
        with pytest.raises(ModelError, match=reason) as info:
            backbone.load_backbone(str(path))
        assert str(path) in str(info.value), case
        assert "weights_only=False" not in str(info.value)  # never advise unsafe loading


def test_random_specs_are_seeded_and_shaped():
    small = backbone.load_backbone("random:L2-E32-H4", seed=3)
    assert backbone.backbone_config(small) == {
        "layers": 2,
        "embed_dim": 32,
        "heads": 4,
        "token_dropout": True,
    }
    assert_same_weights(small, backbone.load_backbone("random:L2-E32-H4", seed=3))
    other = backbone.load_backbone("random:L2-E32-H4", seed=4)
    assert not torch.equal(small.layers[0].fc1.weight, other.layers[0].fc1.weight)
    named = backbone.load_backbone("random:esm2_t6_8M_UR50D")
    assert (named.num_layers, named.embed_dim, named.attention_heads) == (6, 320, 20)


def test_random_seed_leaves_the_global_rng_alone():
    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    backbone.load_backbone("random:L1-E16-H2", seed=0)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize(
    "spec", ["random:L2-E30-H4", "random:L2-E12-H4", "random:L0-E32-H4", "random:big", "esm2"]
)
def test_bad_specs_are_model_errors(spec):
    with pytest.raises(ModelError, match=r"--backbone takes|even size|positive sizes"):
        backbone.load_backbone(spec)


def test_build_backbone_from_config_round_trips(model):
    config = backbone.backbone_config(model)
    rebuilt = backbone.build_backbone(config)
    assert backbone.backbone_config(rebuilt) == config
    assert rebuilt.state_dict().keys() == model.state_dict().keys()
    assert backbone.is_known_name("esm2_t36_3B_UR50D")
    assert not backbone.is_known_name("random:L2-E32-H4")


@pytest.mark.parametrize(
    ("lengths", "masks"), [([7, 7, 7], 0), ([7, 3, 5], 0), ([7, 3, 5], 2), ([1], 0)]
)
def test_encode_equals_fair_esm_forward(model, lengths, masks):
    tokens = make_tokens(lengths, seed=1, masks=masks)
    with torch.no_grad():
        ours = backbone.encode(model, tokens)
    assert ours.shape == (len(lengths), max(lengths) + 2, model.embed_dim)
    torch.testing.assert_close(ours, reference(model, tokens), atol=1e-5, rtol=0)


def test_encode_with_prompt_keeps_token_positions_and_ignores_padding(model):
    tokens = make_tokens([6, 2, 4], seed=2)
    prompt = torch.randn(3, model.embed_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        plain = backbone.encode(model, tokens)
        prompted = backbone.encode(model, tokens, prompt)
        alone = backbone.encode(model, tokens[1:2, :4], prompt)
    assert prompted.shape == plain.shape
    assert (prompted - plain).abs().max() > 1e-2
    # a padded row computes the same as that row on its own
    torch.testing.assert_close(prompted[1, :4], alone[0], atol=1e-5, rtol=0)


class Encoder(torch.nn.Module):
    def __init__(self, esm) -> None:
        super().__init__()
        self.esm = esm

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return backbone.encode(self.esm, tokens)


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")
def test_encode_keeps_the_padding_mask_in_a_trace_of_an_unpadded_batch(model):
    """The ONNX exporter traces: a mask dropped for the unpadded example would be lost, and
    the rotary tables must follow the length of each batch, not the traced one."""
    with torch.no_grad():
        traced = torch.jit.trace(Encoder(model), make_tokens([5, 5], seed=3), check_trace=False)
        for lengths in ([5, 2], [9, 3, 1]):
            padded = make_tokens(lengths, seed=4)
            torch.testing.assert_close(traced(padded), reference(model, padded), atol=1e-5, rtol=0)
