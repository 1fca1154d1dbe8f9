"""Report statistics and rendering: checked against scipy and hand-made results."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from wrapgrad_pipeline.report import RESULTS_FORMAT, load_results, render_markdown, results_to_json
from wrapgrad_pipeline.stats import check_expectation, mean_ci, paired_wilcoxon

from wrapgrad.errors import WrapgradValueError
from wrapgrad.files import atomic_write


def test_mean_ci_is_the_student_t_interval() -> None:
    x = np.random.default_rng(0).normal(0.3, 0.1, size=40)
    mean, lo, hi, n = mean_ci([*x.tolist(), math.nan, None])  # NaN and None are left out
    ref_lo, ref_hi = stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
    assert n == 40
    assert mean == pytest.approx(x.mean())
    assert (lo, hi) == pytest.approx((ref_lo, ref_hi))
    assert mean_ci([])[3] == 0
    # n = 1: a mean but no interval (never a zero-width one)
    one = mean_ci([2.0, math.nan])
    assert one[0] == 2.0
    assert one[3] == 1
    assert math.isnan(one[1])
    assert math.isnan(one[2])


def test_paired_wilcoxon_matches_scipy_and_direction() -> None:
    rng = np.random.default_rng(1)
    worse = rng.normal(0.5, 0.1, 30)
    better = worse + rng.normal(0.05, 0.05, 30)
    p = paired_wilcoxon(worse, better, higher_is_better=True)
    assert p == pytest.approx(stats.wilcoxon(better - worse, alternative="greater").pvalue)
    assert p < 0.01
    # lower is better: the same numbers now say "better" is worse
    assert paired_wilcoxon(worse, better, higher_is_better=False) > 0.99
    assert paired_wilcoxon([1.0, 2.0], [1.0, 2.0], True) == 1.0
    assert math.isnan(paired_wilcoxon([math.nan], [1.0], True))
    with pytest.raises(WrapgradValueError, match="better"):
        paired_wilcoxon([1.0, 2.0], [1.0], True)


def test_check_expectation_order_and_best() -> None:
    rng = np.random.default_rng(2)
    base = rng.normal(0.5, 0.05, 25)
    scores = {"Baseline": base, "SG": base + 0.02, "NG": base + 0.04, "FG": base + 0.06}
    scores = {k: (v + rng.normal(0, 0.002, 25)).tolist() for k, v in scores.items()}
    held = check_expectation(scores, ["Baseline", "SG", "NG", "FG"], None, True)
    assert held["held"]
    assert held["significant"]
    assert [(s["worse"], s["better"]) for s in held["steps"]] == [
        ("Baseline", "SG"),
        ("SG", "NG"),
        ("NG", "FG"),
    ]
    reversed_ = check_expectation(scores, ["FG", "NG"], None, True)
    assert not reversed_["held"]
    assert not reversed_["significant"]
    # robustness: lower is better, so Baseline (lowest numbers) is best
    best = check_expectation(scores, [], "Baseline", False)
    assert best["held"]
    assert {s["worse"] for s in best["steps"]} == {"SG", "NG", "FG"}
    assert not check_expectation(scores, [], "FG", False)["held"]


def _results() -> dict:
    return {
        "format": RESULTS_FORMAT,
        "name": "hand-made",
        "description": "",
        "smoke": False,
        "pipeline": {"file": "x.toml", "text": "", "sha256": "0" * 64},
        "versions": {"wrapgrad": "0"},
        "seeds": {"pipeline": 0},
        "data": {"dataset": "d", "split": "test", "samples": 4, "seed": 0},
        "model": {"name": "m", "seed": 0, "source": "weights", "test_accuracy": 0.9},
        "calibration": {},
        "methods": ["saliency"],
        "enhancers": ["Baseline", "NG"],
        "metrics": [
            {"key": "loc[digit]", "label": "loc", "mask": "digit", "higher_is_better": True},
            {"key": "rob", "label": "rob", "mask": None, "higher_is_better": False},
        ],
        "scores": {
            "saliency": {
                "Baseline": {"loc[digit]": [0.1, 0.2, 0.3, 0.4], "rob": [1.0, 1.0, math.nan, 3.0]},
                "NG": {"loc[digit]": [0.2, 0.3, 0.4, 0.5], "rob": [0.5, 0.5, 0.5, 0.5]},
            }
        },
        "attacks": [],
        "expectations": [
            {"metric": "loc", "order": ["Baseline", "NG"], "best": None, "alpha": 0.05},
            # rob is lower-is-better: NG's 0.5 beats Baseline's 1, 1, 3 on every pair
            {"metric": "rob", "order": [], "best": "NG", "alpha": 0.05},
            {"metric": "rob", "order": [], "best": "Baseline", "alpha": 0.05},
        ],
        "figures": [],
    }


def test_render_markdown_tables_and_round_trip(tmp_path: Path) -> None:
    results = _results()
    text = results_to_json(results)
    assert "NaN" not in text  # strict JSON: non-finite numbers become null
    atomic_write(tmp_path / "results.json", text)
    back = load_results(tmp_path)
    assert back["scores"]["saliency"]["Baseline"]["rob"][2] is None
    md = render_markdown(back)
    assert md == render_markdown(results)  # the JSON holds everything the report shows
    # Baseline loc: mean 0.25, t-interval 0.25 -/+ t(0.975, 3) * sd / 2
    half = stats.t.ppf(0.975, 3) * np.std([0.1, 0.2, 0.3, 0.4], ddof=1) / 2
    assert f"0.2500 [{0.25 - half:.4f}, {0.25 + half:.4f}]" in md
    # rob: lower is better, NG's 0.5 is bold; Baseline's NaN sample is counted out
    assert "**0.5000 [0.5000, 0.5000]**" in md
    assert "(n=3)" in md
    # every step of loc improves by 0.1 on every sample; with 4 samples p = 1/16
    assert "Baseline 0.2500 < NG 0.3500: p = 0.062 (not significant)" in md
    assert "ground-truth mask `digit`" in md
    # lower is better: the one-sided test asks whether NG is *lower*; the NaN pair is dropped,
    # 3 pairs all favour NG, so the exact p-value is 1/8.
    rob = md.split("`saliency`, rob: best: NG: ")[1].splitlines()
    assert rob[0] == "**held** in the means (not every step significant)"
    assert rob[1].strip() == "- Baseline 1.6667 > NG 0.5000: p = 0.12 (not significant)"
    assert "`saliency`, rob: best: Baseline: **did not hold**" in md


def test_single_sample_has_no_interval() -> None:
    results = _results()
    results["scores"]["saliency"]["NG"]["rob"] = [math.nan, math.nan, math.nan, 0.5]
    md = render_markdown(results)
    assert "0.5000 [n/a, n/a] (n=1)" in md


def test_load_results_refuses_other_files(tmp_path: Path) -> None:
    (tmp_path / "results.json").write_text('{"format": "other"}')
    with pytest.raises(WrapgradValueError, match="wrapgrad pipeline results"):
        load_results(tmp_path)
    with pytest.raises(WrapgradValueError, match=r"expected a results\.json"):
        load_results(tmp_path / "missing")


def test_several_models_are_listed_by_label() -> None:
    results = _results()
    del results["model"]
    results["models"] = {
        "Nat": {"name": "small_cnn", "seed": 0, "source": "trained", "test_accuracy": 0.9},
        "AAT": {"name": "small_cnn", "seed": 0, "source": "trained", "test_accuracy": 0.85},
    }
    md = render_markdown(results)
    assert "- model: Nat: `small_cnn` (trained), seed 0, test accuracy 0.9000" in md
    assert "- model: AAT: `small_cnn` (trained), seed 0, test accuracy 0.8500" in md


# -- statistics that count the Monte-Carlo draws ----------------------------------------------
def _seeded_results(offsets: list[float]) -> dict:
    """Hand-made results: NG beats Baseline by ``offsets[r]`` on every sample at seed ``r``."""
    rng = np.random.default_rng(5)
    base = rng.uniform(0.4, 0.6, 40)
    by_seed = [(base + d + rng.normal(0, 0.002, 40)).tolist() for d in offsets]
    results = _results()
    results["data"]["samples"] = 40
    results["replicates"] = len(offsets)
    results["metrics"] = [
        {"key": "auc[square]", "label": "auc", "mask": "square", "higher_is_better": True}
    ]
    results["scores"] = {
        "saliency": {
            "Baseline": {"auc[square]": base.tolist()},
            "NG": {"auc[square]": np.mean(by_seed, axis=0).tolist()},
        }
    }
    results["scores_by_seed"] = {
        "saliency": {"Baseline": {"auc[square]": [base.tolist()]}, "NG": {"auc[square]": by_seed}}
    }
    results["expectations"] = [{"metric": "auc", "order": ["Baseline", "NG"], "alpha": 0.05}]
    return results


def test_a_difference_that_flips_sign_across_seeds_is_never_significant() -> None:
    from wrapgrad_pipeline.report import expectation_rows

    # Two seeds say +0.05, one says -0.01: the seed-averaged difference is +0.03 on every one of
    # 40 samples (Wilcoxon p ~ 1e-12), and a bootstrap over seeds still puts most of its mass
    # above zero, but the sign flips across seeds: not significant.
    flips = _seeded_results([0.05, 0.05, -0.01])
    (row,) = expectation_rows(flips)
    (step,) = row["steps"]
    assert row["held"]
    assert step["p"] < 1e-6
    assert step["seed_differences"] == pytest.approx([0.05, 0.05, -0.01], abs=2e-3)
    assert not step["consistent"]
    assert not step["significant"]
    assert not row["significant"]
    md = render_markdown(flips)
    assert "sign flips across seeds (not significant)" in md
    assert "**held** in the means (not every step significant)" in md
    # The same gain at every seed is significant.
    steady = _seeded_results([0.03, 0.03, 0.03])
    (row,) = expectation_rows(steady)
    assert row["significant"]
    assert row["steps"][0]["p_bootstrap"] < 0.01
    # One seed, as before: the Wilcoxon test alone (sign consistency is trivially met).
    single = check_expectation(
        {"Baseline": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], "NG": [0.2, 0.3, 0.4, 0.5, 0.6, 0.7]},
        ["Baseline", "NG"],
        None,
        True,
    )
    assert single["seeds"] == 1
    assert single["steps"][0]["p"] == pytest.approx(1 / 64)
    assert single["significant"]


def test_seed_and_sample_interval_counts_the_spread_across_seeds() -> None:
    from wrapgrad_pipeline.stats import bootstrap_means, seeded_mean_ci

    # No spread over samples at all, only across seeds: a Student-t interval per seed would be
    # zero-width, the bootstrap over seeds is not.
    by_seed = [[0.5] * 30, [0.6] * 30, [0.7] * 30]
    mean, lo, hi, n = seeded_mean_ci(by_seed)
    assert mean == pytest.approx(0.6)
    assert n == 30
    assert lo < 0.6 < hi
    assert lo >= 0.5 - 1e-12
    assert hi <= 0.7 + 1e-12
    # resampling seeds only: every replicate mean is an average of 3 of the seed means
    boot = bootstrap_means(np.asarray(by_seed))
    assert set(np.round(boot, 6)) <= {
        round(v, 6) for v in (0.5, 0.5333333, 0.5666667, 0.6, 0.6333333, 0.6666667, 0.7)
    }
    assert np.array_equal(boot, bootstrap_means(np.asarray(by_seed)))  # seeded
    # one seed: the Student-t interval over samples
    x = np.random.default_rng(3).normal(0.3, 0.1, 25).tolist()
    assert seeded_mean_ci([x]) == mean_ci(x)
    with pytest.raises(WrapgradValueError, match="by_seed"):
        seeded_mean_ci([[1.0, 2.0], [1.0]])


def test_deviation_texts_are_filled_in_from_the_results() -> None:
    from wrapgrad_pipeline.report import fill_in

    results = {"calibration": {"sg": {"noise_level": 0.0771}}, "sweep": {"points": [{"d": 0.8}]}}
    text = "alpha {calibration.sg.noise_level:.3f}, drop {sweep.points.0.d:.0%}, {missing.x}"
    assert fill_in(text, results) == "alpha 0.077, drop 80%, n/a"
    assert fill_in("{calibration.sg:.2f} {x", results) == "n/a {x"


def test_deviation_texts_find_rows_by_their_key() -> None:
    from wrapgrad_pipeline.report import fill_in

    results = {
        "metrics": [
            {"key": "localisation[square]", "samples": None},
            {"key": "robustness", "samples": 8, "params": {"nr_samples": 10}},
        ]
    }
    text = "{metrics.robustness.samples} x {metrics.robustness.params.nr_samples}, "
    text += "{metrics.1.samples}"
    assert fill_in(text, results) == "8 x 10, 8"
    assert fill_in("{metrics.localisation[square].samples}", results) == "n/a"  # None: no value
    assert fill_in("{metrics.accuracy.samples}", results) == "n/a"  # no row with that key
