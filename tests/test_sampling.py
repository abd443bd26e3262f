"""Class sampling per epoch: the weights, the drawn copies, and the training prior that
calibration derives from the same weights."""

from collections import Counter

import numpy as np
import pytest

from peftsp import grammar
from peftsp.calibration import training_prior
from peftsp.errors import PeftSPError
from peftsp.fasta import LabelledRecord
from peftsp.sampling import class_weights, epoch_copies
from peftsp.train.training import epoch_records

SIZES = {("EUKARYA", "NO_SP"): 400, ("EUKARYA", "SP"): 100, ("NEGATIVE", "TAT"): 25}


def _records():
    records = []
    for (kingdom, sp_type), n in SIZES.items():
        records += [
            LabelledRecord(f"{kingdom}{sp_type}{i}", kingdom, sp_type, 0, "MK", "II", i)
            for i in range(n)
        ]
    return records


def test_balance_one_keeps_the_data_and_subsamples_only_the_largest_class():
    weights = class_weights(Counter(SIZES), majority_fraction=0.25)
    assert weights == {
        ("EUKARYA", "NO_SP"): 0.25,
        ("EUKARYA", "SP"): 1.0,
        ("NEGATIVE", "TAT"): 1.0,
    }


def test_square_root_balance_makes_class_sizes_go_as_the_root_of_their_counts():
    weights = class_weights(Counter(SIZES), balance=0.5)
    drawn = {c: n * weights[c] for c, n in SIZES.items()}
    assert drawn == pytest.approx({c: np.sqrt(n) * np.sqrt(400) for c, n in SIZES.items()})
    assert weights[("NEGATIVE", "TAT")] == pytest.approx(4.0)  # (25 / 400) ** -0.5


def test_epoch_copies_average_to_the_class_weights():
    classes = [c for c, n in SIZES.items() for _ in range(n)]
    rng = np.random.default_rng(0)
    copies = np.mean([epoch_copies(classes, 0.5, 0.75, rng) for _ in range(400)], axis=0)
    weights = class_weights(Counter(SIZES), 0.5, 0.75)
    for c in SIZES:
        chosen = np.array([k == c for k in classes])
        assert copies[chosen].mean() == pytest.approx(weights[c], rel=0.02)


def test_calibration_prior_is_what_training_epochs_draw():
    """The prior the decode-time shift undoes must be the class shares training really saw."""
    records = _records()
    rng = np.random.default_rng(1)
    drawn = np.concatenate([epoch_records(records, 0.5, rng, 0.6) for _ in range(300)])
    seen = Counter(records[i].sp_type for i in drawn)
    empirical = np.array([seen[t] for t in grammar.SP_TYPES], float)
    prior = training_prior(records, "other", 0.5, 0.6)
    assert prior == pytest.approx(empirical / empirical.sum(), abs=0.005)
    # and balancing really moved it toward the small classes
    assert prior[grammar.SP_TYPES.index("TAT")] > 2 * training_prior(records, "other")[3]


@pytest.mark.parametrize(("fraction", "balance"), [(0.0, 1.0), (1.5, 1.0), (1.0, 0.0), (1.0, 2)])
def test_out_of_range_options_are_refused_by_name(fraction, balance):
    with pytest.raises(PeftSPError, match=r"--majority-fraction|--class-balance"):
        class_weights(Counter(SIZES), fraction, balance)
