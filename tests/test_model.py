"""The model: PEFT wiring, trainable parameters, loss, checkpoint round trip."""

import pytest
import torch
from esm_fixtures import tiny_esm2

from peftsp import grammar, tokens
from peftsp.errors import ModelError
from peftsp.train.backbone import backbone_config, encode
from peftsp.train.model import ModelConfig, SignalPeptideModel, load_checkpoint, save_checkpoint

E, LAYERS = 32, 2
HEAD_AND_CRF = (
    E * grammar.NUM_STATES + grammar.NUM_STATES + grammar.NUM_STATES**2 + 2 * (grammar.NUM_STATES)
)


def _model(peft: str, **kwargs) -> SignalPeptideModel:
    esm = tiny_esm2(layers=LAYERS, dim=E, heads=4, seed=0)
    config = ModelConfig(
        backbone="random:L2-E32-H4", backbone_shape=backbone_config(esm), peft=peft, **kwargs
    )
    return SignalPeptideModel(esm, config, seed=0).eval()


def _tokens():
    ids, lengths = tokens.encode(["MKKLLLLLLLLAQAEDK", "MSRRFLTAGLAVLLAG", "MK"], 70)
    return torch.as_tensor(ids), torch.as_tensor(lengths)


def test_lora_with_zero_b_equals_the_frozen_backbone():
    model = _model("lora", lora_rank=4)
    plain = tiny_esm2(layers=LAYERS, dim=E, heads=4, seed=0).eval()
    ids, _ = _tokens()
    with torch.no_grad():
        expected = model.head(encode(plain, ids)[:, 1:-1])
        assert torch.allclose(model(ids), expected, atol=1e-6)


@pytest.mark.parametrize(
    ("peft", "kwargs", "adapted"),
    [
        ("lora", {"lora_rank": 4}, 8 * 4 * E * LAYERS),
        ("lora", {"lora_rank": 2, "lora_layers": 1}, 8 * 2 * E * 1),
        ("adapter", {}, (2 * E * E + 7 * E) * LAYERS),
        ("adapter", {"adapter_layers": 1}, 2 * E * E + 7 * E),
        ("prompt", {"prompt_length": 5}, 5 * E),
    ],
)
def test_only_peft_head_and_crf_train_and_counts_match(peft, kwargs, adapted):
    model = _model(peft, **kwargs)
    assert model.trainable_parameter_count() == adapted + HEAD_AND_CRF
    frozen = [n for n, p in model.backbone.named_parameters() if not p.requires_grad]
    trained = [n for n, p in model.backbone.named_parameters() if p.requires_grad]
    assert frozen and all(("lora_" in n) or ("adapter" in n) for n in trained)


def test_full_fine_tuning_trains_everything():
    model = _model("full")
    assert all(p.requires_grad for p in model.parameters())


def test_loss_is_finite_and_gradients_reach_only_trainable_parameters():
    model = _model("lora", lora_rank=4).train()
    ids, lengths = _tokens()
    allowed = torch.ones(3, int(lengths.max()), grammar.NUM_STATES, dtype=torch.bool)
    allowed[2, :, 3:] = False  # the short protein: NO_SP
    loss = model.loss(ids, lengths, allowed, torch.tensor([1, 3, 0]), region_weight=0.5)
    assert torch.isfinite(loss)
    loss.backward()
    for name, p in model.named_parameters():
        assert (p.grad is not None) == p.requires_grad, name


def test_checkpoint_stores_only_trained_weights_and_round_trips(tmp_path):
    model = _model("lora", lora_rank=4)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_()
    path = tmp_path / "model.pt"
    save_checkpoint(model, path, extra={"best_epoch": 2})
    saved = torch.load(path, weights_only=True)["state"]
    # The backbone is random (not rebuildable from a name), so it is stored as well here;
    # a named backbone would not be (see test_training for that case).
    assert any("lora_B" in k for k in saved)
    restored, extra = load_checkpoint(path)
    assert extra == {"best_epoch": 2}
    ids, _ = _tokens()
    with torch.no_grad():
        assert torch.equal(restored(ids), model(ids))


def test_loading_rejects_foreign_and_corrupt_files(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match=r"bad\.pt"):
        load_checkpoint(bad)
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(ModelError, match="not a PEFT-SP checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(ModelError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def _kingdom_difference(model: SignalPeptideModel) -> torch.Tensor:
    """Emissions for kingdom 3 minus kingdom 4, (B, L, 37)."""
    ids, _ = _tokens()
    with torch.no_grad():
        return model(ids, torch.full((3,), 3)) - model(ids, torch.full((3,), 4))


def _randomise(*embeddings: torch.nn.Embedding) -> None:
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for embedding in embeddings:
            embedding.weight.normal_(0, 1.0, generator=generator)


def test_kingdom_input_lets_every_layer_see_the_kingdom():
    """Output conditioning can only shift each state's emission by a constant per kingdom; the
    input embedding changes what the layers compute, so the shift varies along the protein."""
    output_only = _model("full", kingdom_conditioning=True)
    _randomise(output_only.kingdom)
    shift = _kingdom_difference(output_only)[0, :17]
    assert torch.allclose(shift, shift[:1].expand_as(shift), atol=1e-5)

    both = _model("full", kingdom_conditioning=True, kingdom_input=True)
    _randomise(both.kingdom, both.kingdom_input)
    varying = _kingdom_difference(both)[0, :17]
    assert (varying - varying[:1]).abs().max() > 1e-2


def test_a_zero_kingdom_input_added_to_a_model_keeps_its_emissions():
    from peftsp.train.training import with_kingdom_input

    model = _model("full", kingdom_conditioning=True)
    _randomise(model.kingdom)
    grown = with_kingdom_input(model).eval()
    assert grown.config.kingdom_input and grown.kingdom_input.weight.requires_grad
    ids, _ = _tokens()
    kingdom = torch.tensor([1, 3, 4])
    with torch.no_grad():
        assert torch.equal(grown(ids, kingdom), model(ids, kingdom))


def test_kingdom_input_needs_kingdom_conditioning():
    with pytest.raises(ModelError, match="needs kingdom conditioning"):
        _model("full", kingdom_input=True)
