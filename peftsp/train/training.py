"""Training: batches from labelled records, the training loop, best-epoch selection, and
running a PyTorch model over labelled records (for validation and evaluation).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from peftsp import evaluation, grammar, labels, metrics, tokens
from peftsp.bundle import ORGANISM_IDS
from peftsp.calibration import training_shifts
from peftsp.cli import DEFAULT_LR
from peftsp.errors import InputError, PeftSPError
from peftsp.fasta import LabelledRecord, read_labelled_list
from peftsp.files import atomic_write
from peftsp.sampling import check_options, epoch_copies
from peftsp.train import backbone
from peftsp.train.model import (
    CheckpointSession,
    ModelConfig,
    SignalPeptideModel,
    load_checkpoint,
    model_from_config,
    read_torch_file,
    save_checkpoint,
)

log = logging.getLogger("peftsp")

# Share of training batches whose kingdom is hidden ("other") when conditioning on it, so
# the model also predicts without a kingdom.
KINGDOM_HIDE_RATE = 0.1


@dataclass
class TrainOptions:
    epochs: int = 3
    batch_size: int = 20
    lr: float = 0.0067
    weight_decay: float = 1.2e-6
    clip: float = 0.25
    region_weight: float = 0.5
    seed: int = 0
    quiet: bool = False
    majority_fraction: float = 1.0  # share of the largest (kingdom, type) class used per epoch
    class_balance: float = 1.0  # class sizes per epoch go as n^class_balance (sampling module)
    lr_schedule: str = "constant"
    residue_mask: float = 0.0  # share of residues the model reads as <mask> in training
    layer_dropout: float = 0.0  # dropout inside the backbone's layers in training


def mask_residues(ids: torch.Tensor, rate: float) -> torch.Tensor:
    """Token rows with each residue replaced by <mask> with probability `rate` (from torch's
    seeded generator), <cls>, <eos> and padding kept: an augmentation that ESM-2 reads as its
    pretraining did (token dropout rescales the other embeddings to the masked share)."""
    if rate <= 0:
        return ids
    residue = tokens.residue_positions(ids)
    drawn = torch.rand(ids.shape, device=ids.device) < rate
    return ids.masked_fill(residue & drawn, tokens.MASK)


@dataclass
class Batch:
    tokens: torch.Tensor  # (B, T)
    lengths: torch.Tensor  # (B,) residues used
    allowed: torch.Tensor  # (B, L, 37) bool
    types: torch.Tensor  # (B,) SP type ids
    kingdom: torch.Tensor  # (B,) organism ids
    rules: torch.Tensor  # (B, L, 37) bool: grammar.sequence_mask, all True where not applied

    def to(self, device: torch.device) -> Batch:
        return Batch(
            *(
                t.to(device)
                for t in (
                    self.tokens,
                    self.lengths,
                    self.allowed,
                    self.types,
                    self.kingdom,
                    self.rules,
                )
            )
        )


def organism_of(record: LabelledRecord) -> str:
    return grammar.KINGDOM_TO_ORGANISM[record.kingdom]


def make_batch(records: list[LabelledRecord], window: int, rules: bool = False) -> Batch:
    """Tokens, lengths, allowed-state bitmaps (padded with True), types, kingdoms and, with
    `rules`, the sequence-rule masks.

    A record whose labels break a sequence rule (1 of the 20,290 SignalP 6.0 records: a Tat SP
    without an [RK]R motif) is trained without the rules rather than with an impossible label.
    """
    seqs = [r.sequence[:window] for r in records]
    ids, lengths = tokens.encode(seqs, window)
    allowed = np.ones((len(records), int(lengths.max()), grammar.NUM_STATES), dtype=bool)
    masks = grammar.sequence_mask(ids[:, 1:-1]) if rules else np.ones_like(allowed)
    for row, record in enumerate(records):
        try:
            bitmap = labels.region_bitmap(seqs[row], record.labels[:window], record.sp_type)
        except labels.LabelError as err:
            raise InputError(str(err), record=record.accession, line=record.line) from err
        allowed[row, : len(bitmap)] = bitmap
        if rules and not grammar.has_allowed_path(bitmap & masks[row, : len(bitmap)]):
            masks[row] = True
    return Batch(
        tokens=torch.as_tensor(ids),
        lengths=torch.as_tensor(lengths),
        allowed=torch.as_tensor(allowed),
        types=torch.tensor([grammar.SP_TYPES.index(r.sp_type) for r in records]),
        kingdom=torch.tensor([ORGANISM_IDS[organism_of(r)] for r in records]),
        rules=torch.as_tensor(masks),
    )


def predict_records(
    model: SignalPeptideModel,
    records: list[LabelledRecord],
    batch_size: int = 64,
    organism_rule: bool = True,
    shifts: dict[str, list[float]] | None = None,
) -> tuple[list[str], list[int | None]]:
    """Predicted types and cleavage sites of a PyTorch model, through the prediction loop;
    `shifts`: the run's training prior shift (calibration.training_shifts)."""
    predictions = evaluation.predict_labelled(
        CheckpointSession(model, training_shifts=shifts), records, organism_rule, batch_size
    )
    return [p.sp_type for p in predictions], [p.cs for p in predictions]


def selection_score(
    model: SignalPeptideModel,
    records: list[LabelledRecord],
    shifts: dict[str, list[float]] | None = None,
) -> float:
    """Validation score for best-epoch selection: detection MCC + CS MCC, kingdom-averaged,
    decoded with the run's training prior shift (`shifts`), as its calibrated bundle will be."""
    pred_types, pred_cs = predict_records(model, records, shifts=shifts)
    kingdoms, true_types, true_cs = evaluation.truth(records)
    return metrics.detection_and_cs_mcc(kingdoms, true_types, pred_types, true_cs, pred_cs)


def epoch_records(
    records: list[LabelledRecord],
    majority_fraction: float,
    rng: np.random.Generator,
    balance: float = 1.0,
) -> np.ndarray:
    """Indices of the records trained on in one epoch, a record repeated as often as
    sampling.epoch_copies draws it (the decode-time prior shift undoes the class shares)."""
    classes = [(r.kingdom, r.sp_type) for r in records]
    copies = epoch_copies(classes, majority_fraction, balance, rng)
    return np.repeat(np.arange(len(records)), copies)


def _write_json(path: Path, data: dict) -> None:
    with atomic_write(path) as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")


def save_progress(path: Path, model, optimizer, rng: np.random.Generator, state: dict) -> None:
    """Everything needed to continue training after the epoch just finished (atomic)."""
    payload = {
        "format": "peftsp-progress",
        "config": model.config.to_dict(),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "numpy_rng": json.dumps(rng.bit_generator.state),
        "torch_rng": torch.get_rng_state(),
        "state": json.dumps(state),
    }
    with atomic_write(path, "wb") as handle:
        torch.save(payload, handle)


def load_progress(path: Path, model, optimizer, rng: np.random.Generator) -> dict:
    """Restore what save_progress wrote into model, optimizer and rng; returns its state."""
    if not path.is_file():
        raise InputError(f"{path}: nothing to resume (no finished epoch was saved there)")
    payload = read_torch_file(path, ("peftsp-progress",), InputError)
    if payload["config"] != model.config.to_dict():
        raise InputError(f"{path}: saved by a run with another model; resume with its options")
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    rng.bit_generator.state = json.loads(payload["numpy_rng"])
    torch.set_rng_state(payload["torch_rng"])
    return json.loads(payload["state"])


# What a resumed run may change: how long it runs and how it reports.
RESUMABLE_CHANGES = ("epochs", "quiet")


def check_same_run(saved: dict, about: dict, path: Path) -> None:
    """Refuse to resume a run (last.pt at `path`, which recorded `saved`) with other data,
    split or training options than it started with (`about`); only --epochs may change."""
    if not saved:  # written before runs recorded what they were
        return

    def comparable(info: dict) -> dict:
        options = info.get("options", {})
        flat = {k: v for k, v in info.items() if k != "options"}
        flat.update({k: v for k, v in options.items() if k not in RESUMABLE_CHANGES})
        return flat

    old, new = comparable(saved), comparable(about)
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    if changed:
        raise InputError(
            f"{path}: the run was started with other {', '.join(changed)} "
            f"({', '.join(f'{k}: {old.get(k)!r} then, {new.get(k)!r} now' for k in changed)}); "
            "resume it with the same data, split and options (only --epochs may change)"
        )


def checkpoint_weights(path: Path) -> tuple[dict, dict[str, torch.Tensor], dict]:
    """(model config, weights, extra) of a model.pt (`save_checkpoint`) or a last.pt
    (`save_progress`) file."""
    payload = read_torch_file(path, ("peftsp-checkpoint", "peftsp-progress"), InputError)
    # with today's defaults filled in: a file written before a config field existed is the
    # same model as one that records the field's default
    config = ModelConfig.from_dict(payload["config"]).to_dict()
    if payload["format"] == "peftsp-checkpoint":
        return config, payload["state"], payload.get("extra", {})
    return config, payload["model"], json.loads(payload["state"]).get("about", {})


def _model_with(config: dict, weights: dict[str, torch.Tensor], source: Path):
    """The model of `config` with `weights` (trained ones; frozen ones come from the config)."""
    model = model_from_config(config)
    unknown = set(weights) - set(model.state_dict())
    if unknown:
        raise InputError(f"{source}: weights its model does not have: {sorted(unknown)[:5]}")
    model.load_state_dict(weights, strict=False)
    return model


def average_command(args) -> None:
    """`peftsp average`: the mean of the weights of checkpoints of one model (a model soup,
    Wortsman et al. 2022): trained weights and head are averaged, frozen ones are shared."""
    paths = [Path(p) for p in args.checkpoints]
    seen: dict[Path, Path] = {}
    for path in paths:
        if path.resolve() in seen:
            raise InputError(
                f"{path}: given twice (also as {seen[path.resolve()]}); the mean would count it "
                "twice"
            )
        seen[path.resolve()] = path
    loaded = [checkpoint_weights(p) for p in paths]
    config, first, _ = loaded[0]
    for path, (other, weights, _) in zip(paths[1:], loaded[1:], strict=True):
        if other != config:
            fields = sorted(
                k for k in config.keys() | other.keys() if config.get(k) != other.get(k)
            )
            raise InputError(
                f"{path}: another model than {paths[0]} (configs differ in {', '.join(fields)})"
            )
        if not set(first) <= set(weights):
            raise InputError(f"{path}: lacks weights of {paths[0]}")
    averaged = {
        name: torch.stack([w[name].double() for _, w, _ in loaded]).mean(0).to(value.dtype)
        for name, value in first.items()
    }
    model = _model_with(config, averaged, paths[0])
    # The training record (split, options) that calibrate and export need: the first model.pt's.
    about = next((extra for _, _, extra in loaded if "test_partition" in extra), {})
    for path, (_, _, extra) in zip(paths, loaded, strict=True):
        check_same_split(str(path), extra, about)
    extra = {**about, "averaged": [str(p) for p in paths]}
    if args.data:
        train, val, _ = evaluation.recorded_run_split(read_labelled_list(args.data), about)
        shifts = training_shifts(train, about.get("options") or {})
        for path, (_, weights, _) in zip(paths, loaded, strict=True):
            single = _model_with(config, weights, path)
            print(f"{path}: validation score {selection_score(single, val, shifts):.4f}")
        extra["val_score"] = selection_score(model, val, shifts)
        print(f"average: validation score {extra['val_score']:.4f} ({len(val)} records)")
    save_checkpoint(model, args.out, extra=extra)
    print(f"wrote {args.out}: the mean of {len(paths)} checkpoints")


def learning_rate(options: TrainOptions, progress: float) -> float:
    """The learning rate `progress` (0 at the first batch, 1 at the end) through the run:
    constant, or cosine annealing to 0 (Loshchilov & Hutter, ICLR 2017). A pure function of
    the position, so a resumed run follows the same schedule without saved scheduler state."""
    if options.lr_schedule == "constant":
        return options.lr
    if options.lr_schedule == "cosine":
        return options.lr * 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))
    raise PeftSPError(f"unknown learning-rate schedule {options.lr_schedule!r}")


def fit(
    model: SignalPeptideModel,
    train: list[LabelledRecord],
    val: list[LabelledRecord],
    options: TrainOptions,
    outdir: Path,
    about: dict | None = None,
    resume: bool = False,
) -> dict:
    """Train, validate after each epoch, keep the best epoch in outdir/model.pt and the state
    after each epoch in outdir/last.pt (`resume` continues from there)."""
    if not train:
        raise InputError("no training records")
    torch.manual_seed(options.seed)
    rng = np.random.default_rng(options.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adamax(params, lr=options.lr, weight_decay=options.weight_decay)
    progress = {"epoch": 0, "history": [], "best": {"score": -np.inf}}
    if resume:
        progress = load_progress(outdir / "last.pt", model, optimizer, rng)
        check_same_run(progress.get("about", {}), about or {}, outdir / "last.pt")
        log.info("resuming after epoch %d", progress["epoch"])
    history: list[dict] = progress["history"]
    best = progress["best"]
    shifts = training_shifts(train, vars(options))
    window = model.config.window
    device = next(model.parameters()).device
    model.layer_dropout = options.layer_dropout
    for epoch in range(progress["epoch"] + 1, options.epochs + 1):
        model.train()
        drawn = epoch_records(train, options.majority_fraction, rng, options.class_balance)
        order = rng.permutation(drawn)
        starts = range(0, len(order), options.batch_size)
        bar = tqdm(
            starts, disable=options.quiet, desc=f"epoch {epoch}/{options.epochs}", unit="batch"
        )
        total = 0.0
        for step, start in enumerate(bar):
            position = (epoch - 1 + step / len(starts)) / options.epochs
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(options, position)
            batch = make_batch(
                [train[i] for i in order[start : start + options.batch_size]],
                window,
                model.config.sequence_rules,
            ).to(device)
            kingdom = None
            if model.config.kingdom_conditioning:
                hide = torch.as_tensor(rng.random(len(batch.kingdom)) < KINGDOM_HIDE_RATE)
                hide = hide.to(device)
                kingdom = batch.kingdom.masked_fill(hide, ORGANISM_IDS["other"])
            loss = model.loss(
                batch.tokens,
                batch.lengths,
                batch.allowed,
                batch.types,
                kingdom,
                options.region_weight,
                batch.rules if model.config.sequence_rules else None,
                mask_residues(batch.tokens, options.residue_mask),
            )
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, options.clip)
            optimizer.step()
            total += loss.item()
            bar.set_postfix(loss=f"{loss.item():.3f}")
        score = selection_score(model, val, shifts) if val else -total
        entry = {"epoch": epoch, "train_loss": total / max(1, len(starts)), "val_score": score}
        history.append(entry)
        log.info(
            "epoch %d: train loss %.4f, validation score %.4f", epoch, entry["train_loss"], score
        )
        if score > best["score"]:
            best = {"score": score, "epoch": epoch}
            save_checkpoint(
                model,
                outdir / "model.pt",
                extra={**(about or {}), "best_epoch": epoch, "val_score": score},
            )
        _write_json(outdir / "train_log.json", {"history": history, "best": best})
        save_progress(
            outdir / "last.pt",
            model,
            optimizer,
            rng,
            {"epoch": epoch, "history": history, "best": best, "about": about or {}},
        )
    return best


def training_device(name: str) -> torch.device:
    """The torch device for `--device cpu|cuda|auto` (auto: cuda when available)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise PeftSPError("--device cuda: no CUDA device is usable by this PyTorch build")
    return torch.device(name)


def config_from_args(args, esm) -> ModelConfig:
    """The model config from `peftsp train` options and the loaded backbone."""
    return ModelConfig(
        backbone=backbone.resolve_spec(args.backbone),  # a path resolves when loaded elsewhere
        backbone_shape=backbone.backbone_config(esm),
        peft=args.peft,
        lora_layers=args.lora_layers,
        lora_rank=args.lora_rank,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        adapter_layers=args.adapter_layers,
        adapter_size=args.adapter_size,
        prompt_length=args.prompt_length,
        kingdom_conditioning=args.kingdom_conditioning,
        kingdom_input=args.kingdom_input,
        dropout=args.dropout,
        window=args.window,
        sequence_rules=args.sequence_rules,
    )


def options_from_args(args, peft: str) -> TrainOptions:
    """Training options of `peftsp train`/`crossval`; peft picks the default learning rate.
    The sampling, masking and dropout rates are checked here, before a run creates its output
    folder."""
    check_options(args.majority_fraction, args.class_balance)
    for name in ("residue_mask", "layer_dropout"):
        if not 0 <= getattr(args, name) < 1:
            option = "--" + name.replace("_", "-")
            raise PeftSPError(f"{option} must be in [0, 1), got {getattr(args, name)}")
    return TrainOptions(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr if args.lr is not None else DEFAULT_LR[peft],
        weight_decay=args.weight_decay,
        clip=args.clip,
        region_weight=args.region_weight,
        seed=args.seed,
        quiet=args.quiet,
        majority_fraction=args.majority_fraction,
        class_balance=args.class_balance,
        lr_schedule=args.lr_schedule,
        residue_mask=args.residue_mask,
        layer_dropout=args.layer_dropout,
    )


def initial_model(args) -> tuple[SignalPeptideModel, dict]:
    """A new model on --backbone, or the trained model of --init and its training record."""
    init = getattr(args, "init", None)
    if init and args.backbone:
        raise InputError(
            "--init takes the backbone from its checkpoint: give one of --init, --backbone"
        )
    if init:
        model, extra = load_checkpoint(init)
        log.info("starting from %s (its backbone, PEFT method and head)", init)
        if getattr(args, "kingdom_input", False) and not model.config.kingdom_input:
            model = with_kingdom_input(model)
            log.info("added a kingdom input embedding (zero: predictions unchanged)")
        return model, extra
    if not args.backbone:
        raise InputError("one of --backbone, --init is required")
    esm = backbone.load_backbone(args.backbone, seed=args.seed)
    return SignalPeptideModel(esm, config_from_args(args, esm), seed=args.seed), {}


def with_kingdom_input(model: SignalPeptideModel) -> SignalPeptideModel:
    """The model with a (zero) kingdom input embedding added: the same predictions, one more
    trainable table."""
    if not model.config.kingdom_conditioning:
        raise PeftSPError("--kingdom-input needs kingdom conditioning, which this model lacks")
    grown = model_from_config({**model.config.to_dict(), "kingdom_input": True})
    missing, unexpected = grown.load_state_dict(model.state_dict(), strict=False)
    if unexpected or missing != ["kingdom_input.weight"]:
        raise PeftSPError(f"cannot add a kingdom input to this model ({missing}, {unexpected})")
    return grown


def check_same_split(what: str, earlier: dict, now: dict) -> None:
    """Refuse to build on a model trained with other validation records: they would be in its
    training data, and validation scores would no longer be held-out figures."""
    if "test_partition" not in earlier:
        return
    was, will = evaluation.recorded_split(earlier), evaluation.recorded_split(now)
    if was != will:
        raise InputError(
            f"{what} was trained with validation split {was}, this run uses {will}: its "
            "validation records would be trained on; use the same --test-partition/"
            "--val-partition/--val-fraction/--val-seed"
        )


def train_one(args, records: list[LabelledRecord], test: int, val: int, outdir: Path) -> dict:
    """Train one (test, validation) split into outdir; returns test metrics of the best epoch."""
    fraction = getattr(args, "val_fraction", None)
    seed = getattr(args, "val_seed", None)
    train, val_records, test_records = evaluation.run_split(records, test, val, fraction, seed)
    if args.limit:
        train = train[: args.limit]
    model, started_from = initial_model(args)
    options = options_from_args(args, model.config.peft)
    model.to(training_device(args.device))
    log.info(
        "training %s on %d records (validation %d, test %d); %d trainable parameters",
        model.config.peft,
        len(train),
        len(val_records),
        len(test_records),
        model.trainable_parameter_count(),
    )
    about = {
        "data": str(args.data),
        "test_partition": test,
        "val_partition": None if fraction else val,
        "val_fraction": fraction,
        "val_seed": seed if fraction else None,
        "train_records": len(train),
        "options": vars(options),
    }
    if getattr(args, "init", None):
        check_same_split(args.init, started_from, about)
        about["init"] = str(args.init)
    resume = getattr(args, "resume", False)
    if not resume:  # a resumed run's folder holds last.pt, or the run is refused untouched
        if (outdir / "last.pt").exists():
            raise InputError(
                f"{outdir}: holds a training run (last.pt); continue it with --resume, or choose "
                "another --outdir"
            )
        outdir.mkdir(parents=True, exist_ok=True)  # after the checks: a refused run leaves nothing
    best = fit(model, train, val_records, options, outdir, about, resume)
    model, _ = load_checkpoint(outdir / "model.pt")
    model.to(training_device(args.device))
    session = CheckpointSession(model, training_shifts=training_shifts(train, vars(options)))
    test_metrics = evaluation.labelled_metrics(session, test_records)
    _write_json(outdir / "test_metrics.json", {"best": best, "metrics": test_metrics})
    return test_metrics


def train_command(args) -> None:
    """`peftsp train`: one model, best epoch on the validation partition."""
    if args.threads:
        torch.set_num_threads(args.threads)
    records = read_labelled_list(args.data)
    train_one(args, records, args.test_partition, args.val_partition, Path(args.outdir))
