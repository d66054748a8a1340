"""`compare`'s decision on simulated step times, deterministic: what the test on process medians
gets right that a test on pooled steps cannot.

Each simulated process runs its steps as an AR(1) series (lag-1 correlation 0.5, 5% noise) around
its own level, and that level drifts from process to process by 5% (lognormal): the shape measured
on these machines. A side is 5 processes (the default `--timing-runs`), 50 steady steps each."""
import numpy as np
import pytest

from bench import compare as cmp

PROCESSES, STEPS, PHI, STEP_NOISE, DRIFT = 5, 50, 0.5, 0.05, 0.05
PAIRS = 200


def process_steps(rng, level):
    """One process' steady step times (ms)."""
    level = level * np.exp(rng.normal(0.0, DRIFT))
    e = rng.normal(0.0, STEP_NOISE * np.sqrt(1 - PHI ** 2), STEPS)
    x = np.empty(STEPS)
    x[0] = rng.normal(0.0, STEP_NOISE)
    for t in range(1, STEPS):
        x[t] = PHI * x[t - 1] + e[t]
    return level * (1.0 + x)


def side(rng, level):
    return [process_steps(rng, level) for _ in range(PROCESSES)]


def medians(processes):
    return np.array([np.median(steps) for steps in processes])


def marks(slowdown, seed):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(PAIRS):
        a, b = side(rng, 40.0), side(rng, 40.0 * slowdown)
        out.append(cmp.judge(medians(a), medians(b))[2])
    return out


def test_the_simulated_steps_have_the_measured_shape():
    steps = process_steps(np.random.default_rng(1), 40.0)
    lag1 = np.corrcoef(steps[:-1], steps[1:])[0, 1]
    assert 0.2 < lag1 < 0.75, lag1
    levels = [np.median(process_steps(np.random.default_rng(s), 40.0)) for s in range(200)]
    assert 0.035 < np.std(np.log(levels)) < 0.07


def test_unchanged_code_is_marked_a_regression_in_at_most_5_percent_of_pairs():
    found = marks(1.0, seed=0)
    false_plus = found.count("+") / float(PAIRS)
    print("A/A: %d of %d pairs '+', %d '-', %d '~'" % (found.count("+"), PAIRS, found.count("-"),
                                                        found.count("~")))
    assert false_plus <= 0.05


def test_a_20_percent_slowdown_is_flagged_in_at_least_95_percent_of_pairs():
    found = marks(1.2, seed=1)
    print("20%% slower: %d of %d pairs '+'" % (found.count("+"), PAIRS))
    assert found.count("+") / float(PAIRS) >= 0.95


def test_pooled_steps_would_call_unchanged_code_different():
    """Why compare does not test steps: on the same simulated A/A pairs, a Mann-Whitney U on the
    pooled steps finds a 'significant' difference in most pairs."""
    from scipy import stats

    rng = np.random.default_rng(2)
    significant = 0
    for _ in range(50):
        a, b = np.concatenate(side(rng, 40.0)), np.concatenate(side(rng, 40.0))
        significant += stats.mannwhitneyu(a, b, alternative="two-sided").pvalue < 0.05
    assert significant > 25, significant


@pytest.mark.parametrize("n", [1, 2, 3])
def test_too_few_processes_are_never_a_verdict(n):
    a, b = np.full(n, 40.0), np.full(n, 60.0)
    ratio, p, mark = cmp.judge(a, b)
    assert p is None and mark == "~" and ratio == pytest.approx(1.5)


def test_bootstrap_ci_is_scipys_percentile_bootstrap():
    """bench.metrics draws the interval in NumPy (no scipy.stats import for a report): the
    same resampling as scipy.stats.bootstrap(method="percentile"), so the same interval."""
    from scipy import stats

    from bench.metrics import bootstrap_median_ci

    rng = np.random.default_rng(1)
    for n in (3, 4, 5, 8, 13):
        samples = rng.lognormal(size=n)
        ref = stats.bootstrap((samples,), np.median, confidence_level=0.95, n_resamples=2000,
                              method="percentile", random_state=np.random.default_rng(0))
        low, high = bootstrap_median_ci(samples)
        assert low == pytest.approx(ref.confidence_interval.low, rel=1e-12)
        assert high == pytest.approx(ref.confidence_interval.high, rel=1e-12)
    assert bootstrap_median_ci([2.0, 2.0, 2.0]) == (2.0, 2.0)
