"""Masked-language-model pretraining of an ESM-2-shaped backbone on unlabelled proteins.

The PEFT-SP recipe in miniature, for machines that cannot download a pretrained ESM-2: train a
small ESM-2 with ESM-2's own objective (BERT masking of 15% of the residues: 80% <mask>, 10% a
random amino acid, 10% unchanged; cross-entropy of fair-esm's LM head on those positions) on
proteome sequences, save it as a fair-esm checkpoint, then tune it with
`peftsp train --backbone DIR/esm2_pretrained.pt --peft lora|adapter|prompt|full`.

Each protein gives one window per epoch: its N-terminal window (what the signal-peptide model
reads) or, half of the time, a window at a random offset (more of the protein's sequence).
A seeded share of the proteins is held out; the checkpoint with the lowest held-out loss is
kept. Everything random in an epoch is drawn from (seed, epoch), so `--resume` continues a run
exactly as if it had not stopped.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import torch
from esm.model.esm2 import ESM2
from torch.nn import functional as F
from tqdm import tqdm

from peftsp import tokens
from peftsp.errors import PeftSPError
from peftsp.fasta import read_labelled_list, read_proteins
from peftsp.files import atomic_write
from peftsp.train import backbone

log = logging.getLogger("peftsp")

# fair-esm picks its ESM-2 loader by a file name starting with "esm2".
BACKBONE_FILE, PROGRESS_FILE, HISTORY_FILE = "esm2_pretrained.pt", "progress.pt", "pretrain.json"
WARMUP = 0.02  # share of the steps over which the learning rate rises linearly from 0


def read_sequences(
    fastas: list[str], data: str | None = None, test_partition: int | None = None
) -> list[str]:
    """Distinct protein sequences of the FASTA files, plus those of the labelled `data`
    outside `test_partition` (the held-out partition must not be pretrained on)."""
    sequences = [p.sequence for path in fastas for p in read_proteins(path)]
    if data is not None:
        records = read_labelled_list(Path(data))
        sequences += [r.sequence for r in records if r.partition != test_partition]
    return list(dict.fromkeys(s for s in sequences if s))


def split_held_out(sequences: list[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(training, held-out) sequences: a seeded share held out to select the checkpoint."""
    if not 0 < fraction < 1:
        raise PeftSPError(f"--val-fraction must be between 0 and 1, got {fraction}")
    order = np.random.default_rng(seed).permutation(len(sequences))
    cut = max(1, round(len(sequences) * fraction))
    if cut >= len(sequences):
        raise PeftSPError(f"{len(sequences)} distinct sequences: too few to hold some out")
    return [sequences[i] for i in order[cut:]], [sequences[i] for i in order[:cut]]


def windows(sequences: list[str], window: int, rng: np.random.Generator) -> list[str]:
    """One window per sequence: the N-terminal one, or half of the time a random one."""
    starts = rng.integers(0, np.maximum(1, [len(s) - window + 1 for s in sequences]))
    keep_start = rng.random(len(sequences)) < 0.5
    return [
        s[:window] if first else s[start : start + window]
        for s, start, first in zip(sequences, starts, keep_start, strict=True)
    ]


def mask_batch(
    ids: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets) for token rows `ids`: `fraction` of the residue positions chosen
    (at least one per row); of those 80% become <mask>, 10% a random amino acid, 10% stay.
    targets hold the original token at chosen positions and -100 (ignored) elsewhere."""
    residue = tokens.residue_positions(ids)
    chosen = residue & (rng.random(ids.shape) < fraction)
    # a row with no chosen position gets one, so every row is trained on
    empty = ~chosen.any(axis=1) & residue.any(axis=1)
    for row in np.flatnonzero(empty):
        chosen[row, rng.choice(np.flatnonzero(residue[row]))] = True
    targets = np.where(chosen, ids, -100)
    action = rng.random(ids.shape)
    inputs = ids.copy()
    inputs[chosen & (action < 0.8)] = tokens.MASK
    swap = chosen & (action >= 0.8) & (action < 0.9)
    inputs[swap] = rng.choice(tokens.AMINO_ACID_IDS, size=int(swap.sum()))
    return inputs, targets


def masked_loss(
    esm: ESM2, inputs: np.ndarray, targets: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean cross-entropy over the chosen positions, the LM head's logits)."""
    logits = esm(torch.from_numpy(inputs))["logits"]
    loss = F.cross_entropy(
        logits.flatten(0, 1), torch.from_numpy(targets).flatten(), ignore_index=-100
    )
    return loss, logits


def learning_rate(peak: float, progress: float) -> float:
    """Linear warm-up over the first WARMUP of the steps, then cosine annealing to 0; a pure
    function of the position (0..1), so a resumed run follows the same schedule."""
    if progress < WARMUP:
        return peak * progress / WARMUP
    return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, (progress - WARMUP) / (1 - WARMUP))))


def batches(sequences: list[str], window: int, batch_size: int, rng: np.random.Generator):
    """Token batches of one epoch: windows in a shuffled order."""
    order = rng.permutation(len(sequences))
    picked = windows([sequences[i] for i in order], window, rng)
    for start in range(0, len(picked), batch_size):
        yield tokens.encode(picked[start : start + batch_size], window)[0]


@torch.no_grad()
def held_out_loss(
    esm: ESM2, sequences: list[str], window: int, fraction: float, seed: int, batch_size: int
) -> tuple[float, float]:
    """(mean masked cross-entropy, masked-token accuracy) on the held-out sequences, with the
    same windows and masks every epoch (drawn from `seed`)."""
    esm.eval()
    rng = np.random.default_rng([seed, 1])
    total, correct, count = 0.0, 0, 0
    for ids in batches(sequences, window, batch_size, rng):
        inputs, targets = mask_batch(ids, fraction, rng)
        loss, logits = masked_loss(esm, inputs, targets)
        chosen = targets != -100
        right = int((logits.argmax(-1).numpy()[chosen] == targets[chosen]).sum())
        n = int(chosen.sum())
        total, correct, count = total + float(loss) * n, correct + right, count + n
    return total / count, correct / count


def pretrain_command(args) -> None:
    """`peftsp pretrain`: MLM-pretrain an ESM-2-shaped backbone into OUTDIR/BACKBONE_FILE."""
    if args.threads:
        torch.set_num_threads(args.threads)
    outdir = Path(args.outdir)
    progress_file = outdir / PROGRESS_FILE
    if args.resume and not progress_file.is_file():
        raise PeftSPError(f"--resume: {progress_file} does not exist")
    if not args.resume and outdir.exists() and any(outdir.iterdir()):
        raise PeftSPError(f"{outdir}: not empty (use --resume to continue a run there)")
    sequences = read_sequences(args.fasta, args.data, args.test_partition)
    train, held = split_held_out(sequences, args.val_fraction, args.seed)
    esm = backbone.load_backbone(args.backbone, seed=args.seed)
    optimizer = torch.optim.AdamW(esm.parameters(), lr=args.lr, weight_decay=0.01)
    history: dict = {
        "backbone": backbone.resolve_spec(args.backbone),
        "shape": backbone.backbone_config(esm),
        "sequences": {"train": len(train), "held_out": len(held)},
        "fasta": [str(Path(f).resolve()) for f in args.fasta],
        "data": str(Path(args.data).resolve()) if args.data else None,
        "test_partition": args.test_partition if args.data else None,
        "options": {k: getattr(args, k) for k in ("window", "mask_fraction", "lr", "seed")},
        "epochs": [],
    }
    if args.resume:
        saved = torch.load(progress_file, map_location="cpu", weights_only=True)
        esm.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        history = json.loads(saved["history"])
    else:
        outdir.mkdir(parents=True, exist_ok=True)
        loss, accuracy = held_out_loss(
            esm, held, args.window, args.mask_fraction, args.seed, args.batch_size
        )
        history["start"] = {"held_out_loss": loss, "held_out_accuracy": accuracy}
    steps_per_epoch = math.ceil(len(train) / args.batch_size)
    for epoch in range(len(history["epochs"]) + 1, args.epochs + 1):
        rng = np.random.default_rng([args.seed, epoch])
        esm.train()
        total = 0.0
        bar = tqdm(total=steps_per_epoch, disable=args.quiet, desc=f"pretrain epoch {epoch}")
        for step, ids in enumerate(batches(train, args.window, args.batch_size, rng)):
            done = ((epoch - 1) * steps_per_epoch + step) / (args.epochs * steps_per_epoch)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(args.lr, done)
            loss, _ = masked_loss(esm, *mask_batch(ids, args.mask_fraction, rng))
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(esm.parameters(), 1.0)
            optimizer.step()
            total += loss.item()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        bar.close()
        loss, accuracy = held_out_loss(
            esm, held, args.window, args.mask_fraction, args.seed, args.batch_size
        )
        best = min([e["held_out_loss"] for e in history["epochs"]] + [math.inf])
        history["epochs"].append(
            {
                "epoch": epoch,
                "train_loss": total / steps_per_epoch,
                "held_out_loss": loss,
                "held_out_accuracy": accuracy,
            }
        )
        log.info("epoch %d: held-out loss %.4f, accuracy %.4f", epoch, loss, accuracy)
        if loss < best:
            backbone.save_fair_esm(esm, outdir / BACKBONE_FILE)
            history["best_epoch"] = epoch
        with atomic_write(progress_file, "wb") as handle:
            torch.save(
                {
                    "model": esm.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "history": json.dumps(history),
                },
                handle,
            )
        with atomic_write(outdir / HISTORY_FILE) as handle:
            handle.write(json.dumps(history, indent=1) + "\n")
    print(
        f"wrote {outdir / BACKBONE_FILE} (epoch {history.get('best_epoch')}); "
        f"use it with: peftsp train --backbone {outdir / BACKBONE_FILE}"
    )
