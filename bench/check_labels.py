"""How the region grammar explains a labelled set: records per type, how many needed the
relaxed (letters-only) labelling, and any record no grammatical path fits.

    python bench/check_labels.py ../shared/data/signalp6/train_set.fasta
"""

from __future__ import annotations

import argparse
import collections

import numpy as np

from peftsp import grammar, labels
from peftsp.fasta import read_labelled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    args = parser.parse_args()
    total, relaxed, ambiguous = collections.Counter(), collections.Counter(), []
    for record in read_labelled(args.data):
        bitmap = labels.region_bitmap(record.sequence, record.labels, record.sp_type)
        total[record.sp_type] += 1
        n = labels.sp_length(record.labels, record.sp_type)
        sp_states = [
            s
            for s in grammar.SP_REGION_STATES
            if grammar.STATE_TYPE[s] == grammar.SP_TYPES.index(record.sp_type)
        ]
        if n and bitmap[:n][:, sp_states].all():
            relaxed[record.sp_type] += 1
        ambiguous.append(int((bitmap.sum(1) > 1).sum()))
    print(f"{'type':10s} {'records':>8s} {'relaxed':>8s}")
    for sp_type in grammar.SP_TYPES:
        print(f"{sp_type:10s} {total[sp_type]:8d} {relaxed[sp_type]:8d}")
    print(
        f"all {sum(total.values())} records have a grammatical path; "
        f"mean ambiguous positions per record {np.mean(ambiguous):.1f}"
    )


if __name__ == "__main__":
    main()
