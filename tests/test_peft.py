import pytest
import torch
from esm_fixtures import make_tokens, tiny_esm2
from torch import nn

from peftsp.errors import PeftSPError
from peftsp.train import backbone, peft

LAYERS, E = 3, 32
TOKENS = make_tokens([8, 3, 6], seed=5)


@pytest.fixture
def model():
    return tiny_esm2(layers=LAYERS, dim=E, heads=4, seed=1)


def encode(esm, prompt=None):
    with torch.no_grad():
        return backbone.encode(esm, TOKENS, prompt)


def lora_modules(esm):
    return [m for m in esm.modules() if isinstance(m, peft.LoRALinear)]


def randomise_lora_b(esm, seed=0):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in lora_modules(esm):
            module.lora_B.copy_(0.05 * torch.randn(module.lora_B.shape, generator=generator))


def test_lora_starts_as_the_frozen_backbone(model):
    before = encode(model)
    peft.freeze(model)
    peft.apply_lora(model, None, rank=4, alpha=8, dropout=0.1)
    model.eval()
    torch.testing.assert_close(encode(model), before, atol=0, rtol=0)


def test_lora_linear_computes_the_scaled_low_rank_update():
    torch.manual_seed(0)
    base = nn.Linear(6, 5)
    lora = peft.LoRALinear(base, rank=2, alpha=8, dropout=0.0)
    nn.init.normal_(lora.lora_B)
    x = torch.randn(4, 6)
    expected = base(x) + 4.0 * x @ lora.lora_A.T @ lora.lora_B.T
    torch.testing.assert_close(lora(x), expected)
    assert not base.weight.requires_grad and lora.lora_A.requires_grad
    assert torch.equal(lora.lora_B.new_zeros(5, 2), peft.LoRALinear(base, 2, 8).lora_B)


@pytest.mark.parametrize(("layers", "adapted"), [(None, LAYERS), (1, 1), (2, 2), (10, LAYERS)])
def test_only_lora_parameters_train(model, layers, adapted):
    rank = 4
    peft.freeze(model)
    peft.apply_lora(model, layers, rank=rank, alpha=8, dropout=0.1)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(name.endswith(("lora_A", "lora_B")) for name in trainable)
    assert peft.count_trainable(model) == 8 * rank * E * adapted
    has_lora = [isinstance(layer.self_attn.q_proj, peft.LoRALinear) for layer in model.layers]
    assert has_lora == [False] * (LAYERS - adapted) + [True] * adapted  # the last layers


def test_lora_gradients_reach_only_the_lora_matrices(model):
    peft.freeze(model)
    peft.apply_lora(model, 1, rank=2, alpha=2, dropout=0.0)
    backbone.encode(model, TOKENS).square().sum().backward()
    attention = model.layers[-1].self_attn
    assert attention.q_proj.lora_B.grad.abs().sum() > 0  # B = 0 at first, so A gets none yet
    assert attention.q_proj.base.weight.grad is None
    assert model.embed_tokens.weight.grad is None


def test_merged_lora_equals_unmerged(model):
    peft.freeze(model)
    peft.apply_lora(model, 2, rank=4, alpha=16, dropout=0.1)
    randomise_lora_b(model)
    model.eval()
    unmerged = encode(model)
    assert (unmerged - encode(tiny_esm2(layers=LAYERS, dim=E, heads=4, seed=1))).abs().max() > 0.1
    bias = model.layers[-1].self_attn.k_proj.base.bias.clone()
    assert peft.merge_lora(model) == 2 * 4
    assert lora_modules(model) == []
    assert type(model.layers[-1].self_attn.k_proj) is nn.Linear
    assert torch.equal(model.layers[-1].self_attn.k_proj.bias, bias)
    torch.testing.assert_close(encode(model), unmerged, atol=1e-5, rtol=0)
    assert peft.merge_lora(model) == 0


def test_adapters_are_placed_in_both_residual_branches_and_counted(model):
    before = encode(model)
    peft.freeze(model)
    peft.apply_adapters(model, 2, None)
    assert peft.count_trainable(model) == 2 * (2 * E**2 + 7 * E)
    first, last = model.layers[0], model.layers[-1]
    assert isinstance(last.self_attn.out_proj, peft.AdaptedLinear)
    assert isinstance(last.fc2, peft.AdaptedLinear)
    assert last.fc2.adapter.down.out_features == E // 2
    assert type(first.fc2) is nn.Linear
    assert (encode(model) - before).abs().max() > 1e-3  # default init: not an identity


def test_adapter_size_overrides_the_bottleneck(model):
    peft.freeze(model)
    peft.apply_adapters(model, None, 4)
    # per adapter: E*b + b (down) + b*E + E (up) + 2E (norm); two per layer
    assert peft.count_trainable(model) == LAYERS * 2 * (2 * E * 4 + 4 + 3 * E)


def test_adapter_block_is_residual_bottleneck():
    torch.manual_seed(0)
    adapter = peft.Adapter(6, 3)
    u = torch.randn(2, 6)
    expected = u + nn.functional.layer_norm(
        adapter.up(torch.relu(adapter.down(u))), (6,), adapter.norm.weight, adapter.norm.bias
    )
    torch.testing.assert_close(adapter(u), expected)


def test_soft_prompt_starts_from_distinct_residue_embeddings(model):
    peft.freeze(model)
    prompt = peft.SoftPrompt(model.embed_tokens, 8, seed=2)
    assert prompt.weight.shape == (8, E) and peft.count_trainable(prompt) == 8 * E
    residues = model.embed_tokens.weight[4:24]
    rows = [int((residues == vector).all(dim=1).nonzero()) for vector in prompt.weight]
    assert len(set(rows)) == 8
    same = peft.SoftPrompt(model.embed_tokens, 8, seed=2).weight
    assert torch.equal(same, prompt.weight)
    assert not torch.equal(peft.SoftPrompt(model.embed_tokens, 8, seed=3).weight, same)
    assert peft.count_trainable(model) == 0  # a copy, not a view of the frozen table
    assert (encode(model, prompt.weight.detach()) - encode(model)).abs().max() > 1e-3


def test_long_soft_prompt_reuses_residue_rows(model):
    prompt = peft.SoftPrompt(model.embed_tokens, 30)
    residues = model.embed_tokens.weight[4:24]
    assert all((residues == vector).all(dim=1).any() for vector in prompt.weight)


def test_bad_peft_settings_are_reported(model):
    with pytest.raises(PeftSPError, match="rank"):
        peft.apply_lora(model, None, rank=0, alpha=8, dropout=0.1)
    with pytest.raises(PeftSPError, match="layers"):
        peft.apply_adapters(model, 0, None)
    with pytest.raises(PeftSPError, match="prompt length"):
        peft.SoftPrompt(model.embed_tokens, 0)
