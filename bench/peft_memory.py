#!/usr/bin/env python
"""Training memory and time per step of each PEFT method at one backbone shape (CPU).

    python bench/peft_memory.py --backbone random:esm2_t12_35M_UR50D --threads 2

Each method runs in its own process (so peak RSS is its own): the model is built, one warm-up
step taken, then --steps timed steps of the full loss (CRF + region regulariser) on a batch of
--batch-size random 70-residue proteins. Prints the trainable parameters, the median time per
step, the peak RSS and the training memory above the built model (peak RSS minus the RSS before
the first step), each also as a ratio to LoRA.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

# "lora-nodropout": LoRA without dropout on the adapted projections' inputs, whose saved
# masks and copies are most of LoRA's extra activation memory.
METHODS = ("lora", "lora-nodropout", "adapter", "prompt", "full")


def rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def measure(method: str, spec: str, batch_size: int, steps: int, threads: int) -> dict:
    """Run in a child process: one method's figures."""
    import torch

    from peftsp import grammar
    from peftsp.train import backbone
    from peftsp.train.model import ModelConfig, SignalPeptideModel

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    esm = backbone.load_backbone(spec)
    peft, _, variant = method.partition("-")
    dropout = 0.0 if variant == "nodropout" else 0.1
    config = ModelConfig(spec, backbone.backbone_config(esm), peft=peft, lora_dropout=dropout)
    model = SignalPeptideModel(esm, config)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adamax(params, lr=1e-3)
    tokens = torch.randint(4, 24, (batch_size, 72))
    tokens[:, 0], tokens[:, -1] = 0, 2
    lengths = torch.full((batch_size,), 70)
    allowed = torch.ones(batch_size, 70, grammar.NUM_STATES, dtype=torch.bool)
    types = torch.arange(batch_size) % len(grammar.SP_TYPES)
    before = rss_mib()
    times = []
    for step in range(steps + 1):
        start = time.perf_counter()
        loss = model.loss(tokens, lengths, allowed, types, region_weight=0.5)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step:  # the first step is a warm-up (allocations, optimizer state)
            times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "method": method,
        "trainable": sum(p.numel() for p in params),
        "step_s": statistics.median(times),
        "peak_mib": peak,
        "training_mib": peak - before,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="random:esm2_t12_35M_UR50D")
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        figures = measure(args.child, args.backbone, args.batch_size, args.steps, args.threads)
        print(json.dumps(figures))
        return
    rows = []
    for method in METHODS:
        argv = [sys.executable, __file__, "--child", method, "--backbone", args.backbone]
        argv += ["--batch-size", str(args.batch_size), "--steps", str(args.steps)]
        argv += ["--threads", str(args.threads)]
        done = subprocess.run(argv, check=True, capture_output=True, text=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    lora = rows[0]
    print(
        f"{args.backbone}, batch {args.batch_size} x 70 residues, {args.threads} threads, "
        f"median of {args.steps} steps"
    )
    print(
        f"{'method':>14} {'trainable':>11} {'s/step':>7} {'x LoRA':>6} {'peak MiB':>9} "
        f"{'x LoRA':>6} {'train MiB':>9} {'x LoRA':>6}"
    )
    for r in rows:
        print(
            f"{r['method']:>14} {r['trainable']:>11,} {r['step_s']:7.2f} "
            f"{r['step_s'] / lora['step_s']:6.2f} {r['peak_mib']:9.0f} "
            f"{r['peak_mib'] / lora['peak_mib']:6.2f} {r['training_mib']:9.0f} "
            f"{r['training_mib'] / lora['training_mib']:6.2f}"
        )


if __name__ == "__main__":
    main()
