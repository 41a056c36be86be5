import numpy as np
import pytest

from stationflow.refine.sampling import choose, detect

S = 10**9


def grid(step_ns: int, n: int, start: int = 0) -> np.ndarray:
    return start + np.arange(n, dtype=np.int64) * step_ns


@pytest.mark.parametrize("step", [S // 20, S // 10, S, 30 * S, 60 * S, 1800 * S])
def test_detects_20hz_to_30min_through_gaps_and_duplicates(step):
    ts = grid(step, 500)
    ts = np.concatenate([ts[:100], ts[180:400], ts[390:]])  # a gap and an overlap
    rng = np.random.default_rng(0)
    assert detect([rng.permutation(ts)]) == (step, pytest.approx(detect([ts])[1]))
    interval = choose([ts], None, None)
    assert interval.ns == step and interval.warnings == ()


def test_declared_mismatch_is_reported_and_detection_wins():
    i = choose([grid(30 * S, 100)], 1800 * S, None)
    assert i.ns == 30 * S and i.declared_ns == 1800 * S
    assert i.warnings == ("detected interval 30 s differs from the declared 1800 s",)


def test_forced_interval_wins_with_a_warning():
    i = choose([grid(S // 20, 100)], None, S // 10)
    assert i.ns == S // 10
    assert (
        "detected interval 50 ms (20 Hz) differs from the configured 100 ms (10 Hz)"
        in (i.warnings[0])
    )


def test_several_fragments_and_weak_support():
    a, b = grid(60 * S, 10), grid(60 * S, 10, start=10**15)
    assert choose([a, b], None, None).ns == 60 * S  # the jump between fragments is not a step
    jitter = np.cumsum(np.random.default_rng(1).integers(1, 4, 300)) * S
    assert any("weak interval detection" in w for w in choose([jitter], None, None).warnings)


def test_too_little_data_or_out_of_range():
    with pytest.raises(ValueError, match="fewer than two rows"):
        choose([grid(S, 1)], None, None)
    assert choose([grid(S, 1)], None, 30 * S).ns == 30 * S  # a single row with a known interval
    with pytest.raises(ValueError, match=r"outside 100 Hz \.\. 30 min"):
        choose([grid(3600 * S, 10)], None, None)
