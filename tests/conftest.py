"""Shared fixtures: a tiny ESM-2 checkpoint file, synthetic labelled data, tiny models trained
on it with each PEFT method, and their exported bundles (each built once per test session)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from esm_fixtures import save_fair_esm_checkpoint, tiny_esm2
from synthetic import write_dataset

FIT_EPOCHS = 100
FIT_LR = 0.02


@pytest.fixture(scope="session")
def tiny_backbone_file(tmp_path_factory) -> Path:
    """A 2-layer, 32-dim ESM-2 saved in fair-esm's official checkpoint layout."""
    directory = tmp_path_factory.mktemp("esm")
    return save_fair_esm_checkpoint(tiny_esm2(layers=2, dim=32, heads=4), directory / "tiny.pt")


@pytest.fixture(scope="session")
def synthetic_file(tmp_path_factory) -> Path:
    """30 synthetic three-line records, 5 per SP type, over 3 partitions."""
    return write_dataset(tmp_path_factory.mktemp("data") / "synthetic.fasta", per_type=5)


def train_tiny(peft: str, backbone_file: Path, data: Path, outdir: Path) -> Path:
    """Fit a tiny model on every synthetic record; returns its checkpoint."""
    import torch

    from peftsp.fasta import read_labelled_list
    from peftsp.train import backbone
    from peftsp.train.model import ModelConfig, SignalPeptideModel
    from peftsp.train.training import TrainOptions, fit

    torch.manual_seed(0)
    esm = backbone.load_backbone(str(backbone_file))
    config = ModelConfig(
        backbone=str(backbone_file),
        backbone_shape=backbone.backbone_config(esm),
        peft=peft,
        lora_rank=8,
        lora_alpha=16,
        prompt_length=4,
    )
    model = SignalPeptideModel(esm, config, seed=0)
    records = read_labelled_list(data)
    options = TrainOptions(epochs=FIT_EPOCHS, batch_size=10, lr=FIT_LR, quiet=True)
    outdir.mkdir(parents=True, exist_ok=True)
    fit(model, records, [], options, outdir)
    return outdir / "model.pt"


@pytest.fixture(scope="session")
def trained(tmp_path_factory, tiny_backbone_file, synthetic_file):
    """peft method -> checkpoint of a tiny model fitted to the synthetic records (lazy)."""
    cache: dict[str, Path] = {}

    def get(peft: str) -> Path:
        if peft not in cache:
            outdir = tmp_path_factory.mktemp(f"trained_{peft}")
            cache[peft] = train_tiny(peft, tiny_backbone_file, synthetic_file, outdir)
        return cache[peft]

    return get


@pytest.fixture(scope="session")
def bundle(tmp_path_factory, trained):
    """peft method -> exported model bundle directory of the trained tiny model (lazy)."""
    cache: dict[str, Path] = {}

    def get(peft: str = "lora") -> Path:
        if peft not in cache:
            from peftsp.train.export import export_bundle
            from peftsp.train.model import load_checkpoint

            outdir = tmp_path_factory.mktemp(f"bundle_{peft}") / "model"
            export_bundle(load_checkpoint(trained(peft))[0], outdir)
            cache[peft] = outdir
        return cache[peft]

    return get


@pytest.fixture(scope="session")
def model_bundle(bundle) -> Path:
    """The exported bundle of the LoRA-tuned tiny model."""
    return bundle("lora")
