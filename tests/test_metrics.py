"""SignalP 6.0 metrics on hand-computed cases; averaging, the 16-cell table and its files."""

import csv
import math

import numpy as np
import pytest

from peftsp import metrics
from peftsp.metrics import CELL_METRICS, CELLS

CS = {"SP": 20, "LIPO": 18, "PILIN": 6, "TAT": 30, "TATLIPO": 25, "NO_SP": None}


def compute(rows):
    """compute_metrics over rows of (kingdom, true type, predicted type, true CS, pred CS)."""
    return metrics.compute_metrics(*(list(column) for column in zip(*rows, strict=True)))


def cell(kingdom, sp_type, **values):
    """A metrics dict of one cell: cell("NEGATIVE", "SP", mcc2=0.5)."""
    return {f"{kingdom}_{sp_type}_{name}": v for name, v in values.items()}


def test_perfect_predictions_give_one_everywhere():
    rows = [(k, t, t, CS[t], CS[t]) for k, t in CELLS]
    rows += [(k, "NO_SP", "NO_SP", None, None) for k in metrics.KINGDOMS]
    result = compute(rows)
    assert list(result) == list(metrics.METRIC_KEYS)  # all 16 cells x 10 metrics, table order
    assert all(v == 1.0 for v in result.values())


def test_all_wrong():
    # True SP, SP, NO_SP, NO_SP predicted NO_SP, NO_SP, SP, SP (CS 20 on the predicted SPs).
    # tp=0 tn=0 fp=2 fn=2: MCC = (0*0 - 2*2) / sqrt(2*2*2*2) = -1 (MCC1 has the same rows).
    # CS: 2 true CSs, 2 predicted CSs (rows 3, 4, whose true CS is masked), 0 hits.
    rows = [("NEGATIVE", "SP", "NO_SP", 20, None)] * 2 + [("NEGATIVE", "NO_SP", "SP", None, 20)] * 2
    result = compute(rows)
    assert set(result) == {f"NEGATIVE_SP_{m}" for m in CELL_METRICS}
    assert result["NEGATIVE_SP_mcc1"] == pytest.approx(-1.0)
    assert result["NEGATIVE_SP_mcc2"] == pytest.approx(-1.0)
    for w in metrics.WINDOWS:
        assert result[f"NEGATIVE_SP_recall_window_{w}"] == 0.0
        assert result[f"NEGATIVE_SP_precision_window_{w}"] == 0.0


@pytest.mark.parametrize("offset", [1, 2, 3, 4, -2])
def test_cs_off_by_offset(offset):
    # One Sec/SPI with true CS 22 predicted at 22 + offset: a hit (recall = precision = 1/1)
    # exactly at tolerances w >= |offset|, else 0/1. The type is right, so MCC2 = 1.
    rows = [
        ("POSITIVE", "SP", "SP", 22, 22 + offset),
        ("POSITIVE", "NO_SP", "NO_SP", None, None),
    ]
    result = compute(rows)
    assert result["POSITIVE_SP_mcc2"] == 1.0
    for w in metrics.WINDOWS:
        expected = 1.0 if abs(offset) <= w else 0.0
        assert result[f"POSITIVE_SP_recall_window_{w}"] == expected
        assert result[f"POSITIVE_SP_precision_window_{w}"] == expected


def test_eukarya_reports_only_sec_spi():
    # A (non-biological) true LIPO in Eukarya gets no cell of its own; for Sec/SPI it is a
    # correct negative: truth [1, 0, 0], prediction [1, 0, 0] -> MCC2 1.
    rows = [
        ("EUKARYA", "SP", "SP", 20, 20),
        ("EUKARYA", "NO_SP", "NO_SP", None, None),
        ("EUKARYA", "LIPO", "LIPO", 18, 18),
    ]
    result = compute(rows)
    assert set(result) == {f"EUKARYA_SP_{m}" for m in CELL_METRICS}
    assert result["EUKARYA_SP_mcc2"] == 1.0


def test_cell_without_predicted_positives():
    # Archaea: one true Tat/SPI predicted NO_SP without a CS, two NO_SP right.
    # tp=0 fp=0 fn=1 tn=2: (tp+fp) = 0 so the MCC is undefined -> 0.0.
    # Recall 0/1 = 0; no predicted CS at all -> precision 0/0 = NaN.
    rows = [("ARCHAEA", "TAT", "NO_SP", 30, None)] + [("ARCHAEA", "NO_SP", "NO_SP", None, None)] * 2
    result = compute(rows)
    assert result["ARCHAEA_TAT_mcc1"] == 0.0
    assert result["ARCHAEA_TAT_mcc2"] == 0.0
    assert result["ARCHAEA_TAT_recall_window_0"] == 0.0
    assert math.isnan(result["ARCHAEA_TAT_precision_window_0"])


def test_absent_cell_is_absent_and_averaging_skips_it():
    rows = [("NEGATIVE", "SP", "SP", 20, 20), ("NEGATIVE", "NO_SP", "LIPO", None, 18)]
    result = compute(rows)
    # No true LIPO: no LIPO cell even though LIPO was predicted; no other kingdom either.
    assert set(result) == {f"NEGATIVE_SP_{m}" for m in CELL_METRICS}
    # Means over the models that have a value: A (0.5 + 0.5) / 2; B (1.0 + 0.0 + 0.5) / 3.
    per_model = [{"A": 0.5, "B": 1.0}, {"B": 0.0}, {"A": math.nan, "A2": math.nan, "B": 0.5}]
    averaged = metrics.average_metrics(per_model)
    assert averaged["A"] == pytest.approx(0.5)
    assert averaged["B"] == pytest.approx(0.5)
    assert math.isnan(averaged["A2"])


def test_mcc1_and_mcc2_differ_when_another_sp_type_is_mispredicted():
    # Gram-negative true SP, SP, LIPO, NO_SP, NO_SP; predicted SP, SP, SP, NO_SP, NO_SP.
    # Sec/SPI MCC2 over all 5: tp=2 fp=1 fn=0 tn=2 -> (2*2 - 1*0) / sqrt(3*2*3*2) = 4/6.
    # Sec/SPI MCC1 leaves the LIPO row out: perfect -> 1.
    # Sec/SPII: never predicted -> MCC2 0 (undefined); MCC1 over LIPO + 2 NO_SP also 0.
    rows = [
        ("NEGATIVE", "SP", "SP", 20, 20),
        ("NEGATIVE", "SP", "SP", 21, 21),
        ("NEGATIVE", "LIPO", "SP", 18, 18),
        ("NEGATIVE", "NO_SP", "NO_SP", None, None),
        ("NEGATIVE", "NO_SP", "NO_SP", None, None),
    ]
    result = compute(rows)
    assert result["NEGATIVE_SP_mcc2"] == pytest.approx(4 / 6)
    assert result["NEGATIVE_SP_mcc1"] == pytest.approx(1.0)
    assert result["NEGATIVE_LIPO_mcc2"] == 0.0
    assert result["NEGATIVE_LIPO_mcc1"] == 0.0


def test_cs_masking_by_type():
    # A true LIPO predicted as SP with the right CS (18):
    # - LIPO cell: the predicted CS is dropped (predicted type not LIPO/NO_SP) -> recall 0/1,
    #   precision 0/0 = NaN;
    # - SP cell: its true CS is dropped (true type not SP) but its predicted CS stays ->
    #   hits 1 (row 1), recall 1/1, precision 1/2.
    rows = [
        ("NEGATIVE", "SP", "SP", 20, 20),
        ("NEGATIVE", "LIPO", "SP", 18, 18),
        ("NEGATIVE", "NO_SP", "NO_SP", None, None),
    ]
    result = compute(rows)
    assert result["NEGATIVE_LIPO_recall_window_3"] == 0.0
    assert math.isnan(result["NEGATIVE_LIPO_precision_window_3"])
    assert result["NEGATIVE_SP_recall_window_0"] == 1.0
    assert result["NEGATIVE_SP_precision_window_0"] == 0.5


def test_no_sp_prediction_with_a_cs_counts_in_precision():
    # SignalP 6.0's rule keeps the CS of a NO_SP prediction: 1 hit over 2 predicted CSs.
    rows = [("POSITIVE", "SP", "SP", 20, 20), ("POSITIVE", "NO_SP", "NO_SP", None, 15)]
    result = compute(rows)
    assert result["POSITIVE_SP_recall_window_0"] == 1.0
    assert result["POSITIVE_SP_precision_window_0"] == 0.5


def test_cs_of_minus_one_means_none():
    with_none = compute([("ARCHAEA", "SP", "SP", 20, None), ("ARCHAEA", "NO_SP", "SP", None, 9)])
    with_minus = compute([("ARCHAEA", "SP", "SP", 20, -1), ("ARCHAEA", "NO_SP", "SP", -1, 9)])
    assert with_none.keys() == with_minus.keys()
    assert all(with_none[k] == with_minus[k] for k in with_none)
    assert with_none["ARCHAEA_SP_precision_window_0"] == 0.0  # 0 hits / 1 predicted CS


def test_sixteen_cell_mean():
    rows = metrics.cell_table({})
    assert len(rows) == 16
    assert rows[0] == ("Archaea", "Sec/SPI", rows[0][2]) and math.isnan(rows[0][2])
    assert rows[5][:2] == ("Eukarya", "Sec/SPI")
    assert rows[-1][:2] == ("Gram-positive", "Tat/SPII")
    values = {f"{k}_{t}_mcc2": 0.5 for k, t in CELLS} | {"EUKARYA_SP_mcc2": 0.9}
    # (15 * 0.5 + 0.9) / 16 = 8.4 / 16
    assert metrics.mean_of_cells(values) == pytest.approx(0.525)
    without_archaea = {k: v for k, v in values.items() if not k.startswith("ARCHAEA")}
    # (10 * 0.5 + 0.9) / 11: absent cells are skipped, not counted as 0
    assert metrics.mean_of_cells(without_archaea) == pytest.approx(5.9 / 11)
    assert math.isnan(metrics.mean_of_cells({}))


def test_published_means():
    means = {name: round(metrics.mean_of_cells(v), 4) for name, v in metrics.PUBLISHED_MCC2.items()}
    assert means == {
        "SignalP 6.0": 0.7816,
        "Fine-tuning": 0.7957,
        "Prompt tuning": 0.6625,
        "Adapter tuning": 0.7624,
        "LoRA": 0.8296,
    }


def test_multiclass_mcc_equals_binary_for_two_classes():
    rng = np.random.default_rng(0)
    for _ in range(5):
        truth, pred = rng.random(40) < 0.4, rng.random(40) < 0.5
        assert metrics.multiclass_mcc(truth, pred) == pytest.approx(metrics.binary_mcc(truth, pred))


def test_multiclass_mcc_hand_computed():
    # Confusion (rows true 0,1,2; columns predicted): [[1,1,0],[0,2,0],[1,0,1]].
    # trace 4, n 6, true counts (2,2,2), predicted counts (2,3,1):
    # (4*6 - 12) / sqrt((36 - 14) * (36 - 12)) = 12 / sqrt(528).
    truth, pred = [0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 2, 0]
    assert metrics.multiclass_mcc(truth, pred) == pytest.approx(12 / math.sqrt(528))
    assert metrics.multiclass_mcc([3, 3], [3, 3]) == 0.0  # one class only: undefined


def test_detection_and_cs_mcc():
    # Eukarya: types and CSs (20, 22) right -> detection 1, CS 1.
    # Gram-negative: types right -> 1; CSs true (20, 25) predicted (20, 26): confusion over
    # {20, 25, 26} has trace 1, true counts (1,1,0), predicted (1,0,1), n 2:
    # (1*2 - 1) / sqrt((4 - 2) * (4 - 2)) = 0.5. Score: mean(1, 1) + mean(1, 0.5) = 1.75.
    eukarya = [
        ("EUKARYA", "SP", "SP", 20, 20),
        ("EUKARYA", "SP", "SP", 22, 22),
        ("EUKARYA", "NO_SP", "NO_SP", None, None),
    ]
    negative = [
        ("NEGATIVE", "SP", "SP", 20, 20),
        ("NEGATIVE", "LIPO", "LIPO", 25, 26),
        ("NEGATIVE", "NO_SP", "NO_SP", None, None),
    ]

    def score(rows):
        return metrics.detection_and_cs_mcc(*(list(c) for c in zip(*rows, strict=True)))

    assert score(eukarya + negative) == pytest.approx(1.75)
    # Archaea with NO_SP only, one predicted SP: detection (1*2 - 2*1) / ... = 0; it has no
    # true CS, so it is left out of the CS mean: mean(1, 0) + mean(1) = 1.5.
    archaea = [("ARCHAEA", "NO_SP", "NO_SP", None, None), ("ARCHAEA", "NO_SP", "SP", None, 20)]
    assert score(eukarya + archaea) == pytest.approx(1.5)


@pytest.mark.parametrize(
    "columns",
    [
        (["EUKARYA"], ["SP"], ["SP"], [20], []),  # lengths differ
        (["BACTERIA"], ["SP"], ["SP"], [20], [20]),  # unknown kingdom
        (["EUKARYA"], ["SP"], ["SIGNAL"], [20], [20]),  # unknown type
    ],
)
def test_bad_input_raises(columns):
    with pytest.raises(ValueError):
        metrics.compute_metrics(*columns)
    with pytest.raises(ValueError):
        metrics.detection_and_cs_mcc(*columns)


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


def test_write_metrics_csv(tmp_path):
    per_model = {
        "test_0_valid_1": {
            "NEGATIVE_SP_mcc2": 0.5,
            "extra_score": 1.0,
            "EUKARYA_SP_precision_window_0": math.nan,
            "ARCHAEA_SP_mcc2": 0.25,
        },
        "test_0_valid_2": {"NEGATIVE_SP_mcc2": 0.75},
    }
    path = tmp_path / "crossval_metrics.csv"
    path.write_text("old content\n")
    metrics.write_metrics_csv(path, per_model)
    assert read_csv(path) == [
        ["metric", "test_0_valid_1", "test_0_valid_2"],
        ["ARCHAEA_SP_mcc2", "0.25", ""],  # table order first, absent -> empty
        ["EUKARYA_SP_precision_window_0", "", ""],  # NaN -> empty
        ["NEGATIVE_SP_mcc2", "0.5", "0.75"],
        ["extra_score", "1", ""],  # unknown keys last
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["crossval_metrics.csv"]  # no temp file left


def test_write_cell_table(tmp_path):
    averaged = {f"{k}_{t}_mcc2": 0.5 for k, t in CELLS if k != "ARCHAEA"}
    averaged |= cell("EUKARYA", "SP", mcc2=0.9, recall_window_0=0.25)
    metrics.write_cell_table(tmp_path / "t.csv", tmp_path / "t.md", averaged)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv", "t.md"]

    table = read_csv(tmp_path / "t.csv")
    header = table[0]
    assert header[:4] == ["kingdom", "sp_type", "mcc1", "mcc2"]
    assert header[-5] == "SignalP 6.0 mcc2 (published)"
    assert len(table) == 1 + 16 + 1
    rows = {(r[0], r[1]): dict(zip(header, r, strict=True)) for r in table[1:]}
    eukarya = rows["Eukarya", "Sec/SPI"]
    assert (eukarya["mcc1"], eukarya["mcc2"], eukarya["recall_window_0"]) == ("", "0.9", "0.25")
    assert eukarya["SignalP 6.0 mcc2 (published)"] == "0.958"
    assert rows["Archaea", "Sec/SPI"]["mcc2"] == ""
    mean = rows["Mean", ""]
    # (10 * 0.5 + 0.9) / 11 cells present; SignalP 6.0 mean 0.78156 (12.505 / 16).
    assert float(mean["mcc2"]) == pytest.approx(5.9 / 11, abs=1e-6)
    assert float(mean["SignalP 6.0 mcc2 (published)"]) == pytest.approx(0.7816, abs=1e-4)
    assert mean["mcc1"] == ""

    markdown = (tmp_path / "t.md").read_text()
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    assert len(lines) == 2 * (2 + 16 + 1)  # two tables: header, rule, 16 cells, mean
    assert all(line.count("|") == lines[0].count("|") for line in lines[:19])
    assert "(11 of our 16 cells)" in markdown
    mean_row = [c.strip() for c in lines[18].strip("|").split("|")]
    assert mean_row[:5] == ["**Mean**", "", "n/a", "0.5364", "0.7816"]
