"""How often each (kingdom, type) class of labelled records is trained on per epoch.

One definition for training (which records an epoch draws) and calibration (the type prior the
model saw, which the decode-time prior shift undoes). No torch.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from peftsp.errors import PeftSPError

Class = tuple[str, str]  # (kingdom, SP type)


def check_options(majority_fraction: float, balance: float) -> None:
    """Refuse a --majority-fraction or --class-balance outside (0, 1]."""
    if not 0 < majority_fraction <= 1:
        raise PeftSPError(f"--majority-fraction must be in (0, 1], got {majority_fraction}")
    if not 0 < balance <= 1:
        raise PeftSPError(f"--class-balance must be in (0, 1], got {balance}")


def class_weights(
    classes: Counter[Class], majority_fraction: float = 1.0, balance: float = 1.0
) -> dict[Class, float]:
    """Expected times a record of each class is trained on per epoch.

    With `balance` B a class of n records is drawn n * (n / n_max)^(B - 1) times, so class
    sizes go as n^B (1: as in the data; 0.5: square-root balancing) and the largest class
    keeps its size; that class is then subsampled to `majority_fraction` of it (in SignalP
    6.0's data eukaryotic NO_SP is 70% of the records).
    """
    check_options(majority_fraction, balance)
    largest, most = classes.most_common(1)[0]
    weights = {c: (n / most) ** (balance - 1.0) for c, n in classes.items()}
    weights[largest] = majority_fraction
    return weights


def epoch_copies(
    classes: list[Class], majority_fraction: float, balance: float, rng: np.random.Generator
) -> np.ndarray:
    """(N,) how many times each record is trained on in one epoch: the integer part of its
    class weight, plus one more with the probability of the fractional part (fresh each epoch)."""
    weights = class_weights(Counter(classes), majority_fraction, balance)
    per_record = np.array([weights[c] for c in classes])
    whole = np.floor(per_record)
    return (whole + (rng.random(len(classes)) < per_record - whole)).astype(np.int64)
