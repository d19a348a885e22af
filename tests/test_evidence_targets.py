"""benchmarks/evidence/targets.py: the best paper method is chosen on validation Dice, gaps and spreads are computed
on the draws both methods ran, runs that did not start to learn or shared the CPU are left out."""
import importlib.util
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def targets():
    spec = importlib.util.spec_from_file_location("evidence_targets", REPO / "benchmarks" / "evidence" / "targets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(method, token, k, draw, it, test, val, seconds=100.0, step=None, load=2.0, started=True, arch="unetr"):
    return {"arch": None if method.startswith("nnunet") else arch, "method": method, "method_token": token, "k": k,
            "draw": draw, "iterations": it, "mean_dice": test,
            "val_mean_dice": val, "compute_seconds": seconds, "seconds_per_step": step or seconds / it,
            "load_average_median": load, "started_to_learn": started}


def test_choice_on_validation_gap_and_spread(targets, tmp_path):
    rows = []
    for d, (lp, pd_, full, nn) in enumerate([(0.80, 0.85, 0.70, 0.75), (0.82, 0.86, 0.71, 0.74),
                                             (0.81, 0.84, 0.69, 0.76)]):
        rows += [run("lorapt", "lorapt@3e-4,3e-3", 2, d, 500, lp, 0.80),  # best on validation
                 run("pdora", "pdora@6e-3", 2, d, 500, pd_, 0.70),        # best on test: must not be picked
                 run("full", "full@3e-3", 2, d, 500, full, 0.70),
                 run("nnunet", "nnunet", 2, d, 500, nn, 0.70)]
    rows.append(run("nnunet-ft", "nnunet-ft", 2, 0, 500, 0.95, 0.9, started=False))  # never compared
    rows.append(run("hyps", "hyps@1e-3", 2, 0, 500, 0.99, 0.99))  # not a grid token
    rows.append(run("pdora", "pdora@6e-3", 2, 0, 500, 0.99, 0.99, arch="swinunetr"))  # another backbone
    csv = tmp_path / "runs.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    result = targets.compare(targets.load(csv, targets.GRID_TOKENS), 2, 500, ("full", "nnunet", "nnunet-ft"),
                             stretch=False)
    by = {r["target"].split(" vs ")[1]: r for r in result}
    full = by["full fine-tuning"]
    assert full["best"] == "LoRA-PT" and full["draws"] == 3
    assert full["gap"] == pytest.approx(0.81 - 0.70)
    assert full["spread"] == pytest.approx(0.01) and full["status"] == "met"
    assert full["paired_min"] == pytest.approx(0.10) and full["paired_max"] == pytest.approx(0.12)
    nn = by["nnU-Net from scratch"]
    assert nn["gap"] == pytest.approx(0.81 - 0.75) and nn["status"] == "met"
    assert by["nnU-Net fine-tuned"]["status"] == "not yet run"


def test_gap_within_spread_is_not_met(targets, tmp_path):
    rows = [run("lorapt", "lorapt@3e-4,3e-3", 2, d, 500, t, 0.8) for d, t in enumerate((0.70, 0.80, 0.90))]
    rows += [run("full", "full@3e-3", 2, d, 500, t, 0.8) for d, t in enumerate((0.68, 0.78, 0.88))]
    csv = tmp_path / "runs.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    [row] = targets.compare(targets.load(csv, targets.GRID_TOKENS), 2, 500, ("full",), stretch=False)
    assert row["gap"] == pytest.approx(0.02) and row["spread"] == pytest.approx(0.1) and row["status"] == "not met"


def test_compute_axis_uses_only_clean_cheaper_points(targets, tmp_path):
    rows = [run("nnunet", "nnunet", 10, 0, 250, 0.77, 0.76, seconds=670),
            run("nnunet", "nnunet", 10, 0, 500, 0.84, 0.82, seconds=1340),
            run("lorapt", "lorapt@3e-4,3e-3", 10, 0, 500, 0.81, 0.80, seconds=130),
            run("lorapt", "lorapt@3e-4,3e-3", 10, 0, 1000, 0.80, 0.79, seconds=260),
            # shared the CPU (step sum 5x N x median step): its compute is not used
            run("lorapt", "lorapt@3e-4,3e-3", 10, 0, 2000, 0.95, 0.95, seconds=1000, step=0.1),
            # cheaper than nnU-Net at 500 only
            run("pdora", "pdora@6e-3", 10, 0, 2000, 0.83, 0.81, seconds=700)]
    csv = tmp_path / "runs.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    first, second = targets.compute_axis(targets.load(csv, targets.GRID_TOKENS))
    assert first["best"] == "LoRA-PT 500 it" and first["gap"] == pytest.approx(0.04) and first["status"] == "met"
    assert second["best"] == "PDoRA 2000 it" and second["gap"] == pytest.approx(-0.01)
    assert second["status"] == "not met"
    assert "| met |" in targets.markdown([first])


def test_grid_table_orders_by_validation_and_shows_missing_draws(targets, tmp_path):
    import sys
    sys.path.insert(0, str(REPO / "benchmarks" / "evidence"))
    try:
        spec = importlib.util.spec_from_file_location("evidence_grid_table",
                                                      REPO / "benchmarks" / "evidence" / "grid_table.py")
        table = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(table)
    finally:
        sys.path.remove(str(REPO / "benchmarks" / "evidence"))
    rows = [run("lorapt", "lorapt@3e-4,3e-3", 10, d, 500, t, v) for d, t, v in ((0, 0.90, 0.70), (1, 0.80, 0.72))]
    rows += [run("pdora", "pdora@6e-3", 10, 0, 500, 0.70, 0.90),
             run("full", "full@3e-3", 10, 0, 500, 0.10, 0.10, started=False)]  # shown, with its empty predictions
    frame = pd.DataFrame(rows)
    frame["empty_predictions"] = [0, 0, 0, 35]
    frame["dice_Anterior"], frame["dice_Posterior"] = [0.9, 0.8, 0.7, 0.2], [0.9, 0.8, 0.7, 0.0]
    frame["dice_Anterior+Posterior"] = 0.9  # the merged region is not a single label
    csv = tmp_path / "runs.csv"
    frame.to_csv(csv, index=False)
    out = table.rows(targets.load(csv, targets.GRID_TOKENS, learned_only=False), 10, 500, 3)
    assert [r.split(" | ")[0] for r in out] == ["| PDoRA (6e-3)", "| LoRA-PT (3e-4 / 3e-3)",
                                                "| full fine-tuning (3e-3)"]
    assert "| 0.900 | 0.800 | - | 0.850 ± 0.071 | 0.710 ± 0.014 | 0 |" in out[1]
    assert "0.700 | - | - | 0.700 (1 draw)" in out[0] and "| 35 | 0.00 (Posterior, draw 0) |" in out[2]
    assert "| 0.80 (Anterior, draw 1) |" in out[1]
