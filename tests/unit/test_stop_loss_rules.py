"""The scalar stop-loss rules reproduce the reference (agent-rules §5, §15) bit for bit.

Every comparison of a rule's number is exact (``==``): the reference is
deterministic IEEE-754 (plus decimal.js for SL-2), and so is valux.
"""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from valux.rules.stop_loss import (
    StopDecision,
    StopLossParams,
    evaluate_stop,
    initial_stop,
    peak_change_percent,
    peak_change_percents,
    stop_price,
    target_percentage,
)

FIXED = StopLossParams(enabled=True, default_percentage=-32.0, mode="fixed")
EXPONENTIAL = StopLossParams(enabled=True, default_percentage=-32.0, mode="exponential")
ZONES = StopLossParams(enabled=True, default_percentage=-32.0, mode="zones")
DISABLED = StopLossParams(enabled=False, default_percentage=-32.0, mode="fixed")


def custom(*levels: tuple[float, float], default: float = -32.0) -> StopLossParams:
    return StopLossParams(True, default, "custom", tuple(levels))


# §15: peak change → (fixed, exponential, zones), default -32.
TABLE: list[tuple[float, float, float, float]] = [
    (-5, -32, -32, -32),
    (10, -32, -32, -32),
    (19.99, -32, -32, -32),
    (20, 10, -32, 10),
    (20.5, 10.5, 0.3253899386610194, 10.25),
    (25, 15, 3.6964052659635738, 12.5),
    (30, 20, 8.215528402916183, 18),
    (50, 40, 30.809901636578836, 30),
    (60, 50, 42.07632628077333, 42),
    (75, 65, 53.09663521327121, 52.5),
    (80, 70, 60.374698430544804, 56),
    (85, 75, 69.71103167305002, 59.49999999999999),
    (90, 80, 80.19242837185088, 62.99999999999999),
    (100, 90, 90, 70),
    (150, 140, 135, 120),
    (200, 190, 180, 160),
    (201, 191, 180.9, 170.85),
    (300, 290, 270, 255),
    (1000, 990, 900, 850),
]


@pytest.mark.parametrize(("change", "fixed", "exponential", "zones"), TABLE)
def test_section_15_table_is_reproduced_exactly(
    change: float, fixed: float, exponential: float, zones: float
) -> None:
    """Each row of the §15 table: the three modes' targets equal the reference doubles."""
    assert target_percentage(change, FIXED) == fixed
    assert target_percentage(change, EXPONENTIAL) == exponential
    assert target_percentage(change, ZONES) == zones


def test_zones_85_and_90_are_the_raw_products() -> None:
    """§15 note: zones at 85 and 90 are the exact doubles of 85 × 0.70 and 90 × 0.70."""
    assert target_percentage(85, ZONES) == 85 * 0.70 == 59.49999999999999
    assert target_percentage(90, ZONES) == 90 * 0.70 == 62.99999999999999


# -- SL-1 ------------------------------------------------------------------------


def test_sl1_initial_stop_is_default_and_purchase_price() -> None:
    """SL-1: enabled → stop = defaultPercentage, peak = purchase price."""
    assert initial_stop(0.0042, FIXED) == (-32.0, 0.0042)


def test_sl1_disabled_writes_nothing() -> None:
    """SL-1: disabled → both fields stay null."""
    assert initial_stop(0.0042, DISABLED) == (None, None)


# -- SL-2 ------------------------------------------------------------------------


def test_sl2_peak_change_uses_decimal_not_float() -> None:
    """SL-2: the ratio is decimal (seeded from shortest strings): 0.1 → 0.3 is exactly 200,
    where float arithmetic gives 199.99999999999997."""
    assert (0.3 - 0.1) / 0.1 * 100 == 199.99999999999997
    assert peak_change_percent(0.1, 0.3) == 200.0


def test_sl2_decimal_path_decides_the_zone_boundary() -> None:
    """SL-2 + SL-8: because the change is decimal, a 0.1 → 0.3 peak is exactly 200 and
    takes the inclusive ≤ 200 zone (keep 0.80), not the float 199.99… value."""
    d = evaluate_stop(
        purchase_price=0.1, stored_peak=0.1, stored_pct=-32.0, price=0.3, params=ZONES
    )
    assert d.stop_pct == 200.0 * 0.80


def test_sl2_peak_is_max_of_stored_peak_and_price() -> None:
    """SL-2: the stop level follows the peak, not the current price: stored peak 150
    (purchase 100) with price 120 gives the 50 % fixed target 40, peak stays 150."""
    d = evaluate_stop(
        purchase_price=100.0, stored_peak=150.0, stored_pct=-32.0, price=120.0, params=FIXED
    )
    assert d.peak == 150.0
    assert d.stop_pct == 40.0
    assert d.stop_price == stop_price(100.0, 40.0)


def test_sl2_missing_peak_falls_back_to_purchase_price() -> None:
    """SL-2: a null stored peak counts as the purchase price; a lower price leaves it."""
    d = evaluate_stop(
        purchase_price=100.0, stored_peak=None, stored_pct=-32.0, price=90.0, params=FIXED
    )
    assert d.peak == 100.0
    assert d.stop_pct == -32.0


def test_sl2_new_high_raises_the_peak() -> None:
    """SL-2: a price above the stored peak becomes the peak."""
    d = evaluate_stop(
        purchase_price=100.0, stored_peak=110.0, stored_pct=-32.0, price=130.0, params=FIXED
    )
    assert d.peak == 130.0
    assert d.stop_pct == peak_change_percent(100.0, 130.0) - 10


# -- SL-3 ------------------------------------------------------------------------


@pytest.mark.parametrize("purchase", [0.0, -0.0, -1.0, math.nextafter(1e-15, 0.0), 1e-16])
def test_sl3_tiny_purchase_price_is_not_evaluated(purchase: float) -> None:
    """SL-3: purchase 0 or below 1e-15 → no trigger (even at price 0), the stored
    percentage, no stop price, nothing written."""
    d = evaluate_stop(
        purchase_price=purchase, stored_peak=5.0, stored_pct=-20.0, price=0.0, params=FIXED
    )
    assert d == StopDecision(
        triggered=False, stop_pct=-20.0, stop_price=None, peak=5.0, updated=False
    )


def test_sl3_purchase_exactly_1e15_is_evaluated() -> None:
    """SL-3: the guard is strict: a purchase of exactly 1e-15 is evaluated (and a
    price below its stop triggers)."""
    d = evaluate_stop(
        purchase_price=1e-15, stored_peak=1e-15, stored_pct=-32.0, price=1e-16, params=FIXED
    )
    assert d.triggered
    assert d.stop_price == 1e-15 * (1 + -32.0 / 100)


def test_sl3_non_finite_peak_change_is_not_evaluated() -> None:
    """SL-3: a peak change that overflows to infinity (1e300 over 1e-15) → no trigger,
    stored (null) percentage, no stop price, nothing written."""
    d = evaluate_stop(
        purchase_price=1e-15, stored_peak=None, stored_pct=None, price=1e300, params=FIXED
    )
    assert d == StopDecision(False, None, None, None, False)


# -- SL-4 / SL-5 -----------------------------------------------------------------


def test_sl4_negative_peak_change_gives_default() -> None:
    """SL-4: a peak below the purchase price (restored state) targets the default."""
    d = evaluate_stop(
        purchase_price=100.0, stored_peak=80.0, stored_pct=None, price=70.0, params=FIXED
    )
    assert d.stop_pct == -32.0
    assert d.triggered is False  # 70 > 68


@pytest.mark.parametrize("params", [FIXED, EXPONENTIAL, ZONES, custom((1.0, 5.0))])
def test_sl5_negative_change_returns_default_in_every_mode(params: StopLossParams) -> None:
    """SL-5.1: change < 0 → default, whatever the mode."""
    assert target_percentage(-0.5, params) == -32.0


def test_sl5_missing_mode_means_fixed() -> None:
    """SL-5.2: an empty mode is fixed."""
    assert target_percentage(35, StopLossParams(True, -32.0, "")) == 25


def test_sl5_unknown_mode_returns_default() -> None:
    """SL-5.2: an unknown mode returns the default at any change."""
    assert target_percentage(500, StopLossParams(True, -32.0, "moonshot")) == -32.0


def test_sl5_custom_without_levels_returns_default() -> None:
    """SL-5.3: custom mode with no levels returns the default."""
    assert target_percentage(500, custom()) == -32.0


def test_sl5_value_at_or_below_zero_returns_default() -> None:
    """SL-5.4: a computed value ≤ 0 becomes the default: a custom level with stop 0,
    and exponential just above 20 where keep clamps to 0."""
    assert target_percentage(60, custom((50.0, 0.0))) == -32.0
    assert target_percentage(60, custom((50.0, -3.0))) == -32.0
    assert target_percentage(20.0000000001, EXPONENTIAL) == -32.0


# -- SL-6 / SL-7 / SL-8 / Q-6 ----------------------------------------------------


def test_q6_exactly_20_in_each_mode() -> None:
    """Q-6: at exactly 20 %, fixed gives 10, zones 10 and exponential the default."""
    assert target_percentage(20, FIXED) == 10
    assert target_percentage(20, ZONES) == 10
    assert target_percentage(20, EXPONENTIAL) == -32.0
    below = math.nextafter(20.0, 0.0)
    assert target_percentage(below, FIXED) == -32.0
    assert target_percentage(below, ZONES) == -32.0


def test_sl6_fixed_is_change_minus_ten() -> None:
    """SL-6: 20 gives 10 and 35 gives 25."""
    assert target_percentage(20, FIXED) == 10
    assert target_percentage(35, FIXED) == 25


def test_sl7_exponential_keep_caps_at_0_90() -> None:
    """SL-7: keep reaches its 0.90 cap at change ≈ 90.8; beyond it the target is 0.9 × change."""
    assert target_percentage(90.7, EXPONENTIAL) < 90.7 * 0.9
    assert target_percentage(92, EXPONENTIAL) == 92 * 0.9
    assert target_percentage(5000, EXPONENTIAL) == 5000 * 0.9


def test_sl7_exponential_is_monotone_over_a_grid() -> None:
    """SL-7: the exponential target is non-decreasing in the change (grid 20..400, step 0.05)."""
    values = [target_percentage(20 + i * 0.05, EXPONENTIAL) for i in range(1, 7600)]
    assert all(a <= b for a, b in itertools.pairwise(values))


@pytest.mark.parametrize(
    ("bound", "keep_at", "keep_above"),
    [(25.0, 0.50, 0.60), (50.0, 0.60, 0.70), (100.0, 0.70, 0.80), (200.0, 0.80, 0.85)],
)
def test_sl8_zone_upper_bounds_are_inclusive(
    bound: float, keep_at: float, keep_above: float
) -> None:
    """SL-8: the zone bounds 25/50/100/200 belong to the lower zone."""
    above = math.nextafter(bound, math.inf)
    assert target_percentage(bound, ZONES) == bound * keep_at
    assert target_percentage(above, ZONES) == above * keep_above


# -- SL-9 ------------------------------------------------------------------------

LEVELS = ((30.0, 10.0), (60.0, 35.0), (100.0, 70.0), (250.0, 200.0))


def test_sl9_custom_takes_the_largest_matching_level() -> None:
    """SL-9: among levels with change ≥ level.change, the largest change wins; below the
    first level the default applies; equality matches."""
    params = custom(*LEVELS)
    assert target_percentage(29.99, params) == -32.0
    assert target_percentage(30, params) == 10.0
    assert target_percentage(99.9, params) == 35.0
    assert target_percentage(100, params) == 70.0
    assert target_percentage(10_000, params) == 200.0


def test_sl9_custom_level_order_is_irrelevant() -> None:
    """SL-9: every permutation of the levels gives the same targets."""
    changes = [0, 15, 30, 45, 60, 99, 100, 249, 250, 400]
    expected = [target_percentage(c, custom(*LEVELS)) for c in changes]
    for perm in itertools.permutations(LEVELS):
        assert [target_percentage(c, custom(*perm)) for c in changes] == expected


def test_sl9_tied_level_changes_take_the_earliest() -> None:
    """SL-9 (invalid config, VAL-3): tied changes resolve like the reference's stable
    descending sort, the first level in input order wins."""
    assert target_percentage(60, custom((50.0, 5.0), (50.0, 9.0))) == 5.0
    assert target_percentage(60, custom((50.0, 9.0), (50.0, 5.0))) == 9.0


# -- SL-10 / SL-11 ---------------------------------------------------------------


def test_sl10_ratchet_never_loosens() -> None:
    """SL-10: a stored stop above the target stays (peak change 25 → fixed 15 < 40)."""
    d = evaluate_stop(
        purchase_price=100.0, stored_peak=125.0, stored_pct=40.0, price=130.0, params=FIXED
    )
    assert d.stop_pct == 40.0
    assert d.triggered  # 130 ≤ 140


def test_sl10_ratchet_never_loosens_when_the_basis_changes() -> None:
    """SL-10: a lower purchase basis whose target is below the stored stop keeps the
    stored stop (the stop never loosens, even if the peak basis changes)."""
    d = evaluate_stop(
        purchase_price=50.0, stored_peak=60.0, stored_pct=30.0, price=70.0, params=ZONES
    )
    assert d.stop_pct == 30.0


def test_sl10_null_stored_pct_ratchets_from_default() -> None:
    """SL-10: a null stored percentage counts as the default; the target replaces it
    only if strictly higher."""
    d = evaluate_stop(
        purchase_price=100.0, stored_peak=100.0, stored_pct=None, price=101.0, params=FIXED
    )
    assert d.stop_pct == -32.0
    d = evaluate_stop(
        purchase_price=100.0,
        stored_peak=100.0,
        stored_pct=None,
        price=101.0,
        params=StopLossParams(True, -10.0, "fixed"),
    )
    assert d.stop_pct == -10.0


def test_sl11_trigger_is_inclusive_at_68() -> None:
    """SL-11: purchase 100 with stop -32 gives stop price 68; 68 triggers, the next
    double above does not."""
    assert stop_price(100.0, -32.0) == 68.0
    at = evaluate_stop(
        purchase_price=100.0, stored_peak=100.0, stored_pct=-32.0, price=68.0, params=FIXED
    )
    assert at.triggered and at.stop_price == 68.0 and not at.updated
    above = math.nextafter(68.0, math.inf)
    d = evaluate_stop(
        purchase_price=100.0, stored_peak=100.0, stored_pct=-32.0, price=above, params=FIXED
    )
    assert not d.triggered


def test_sl11_positive_stop_locks_a_gain() -> None:
    """SL-11: a positive percentage is a locked gain above the purchase price."""
    d = evaluate_stop(
        purchase_price=100.0, stored_peak=150.0, stored_pct=40.0, price=140.0, params=FIXED
    )
    assert d.stop_price == 100.0 * (1 + 40.0 / 100) == 140.0
    assert d.triggered


# -- SL-12 -----------------------------------------------------------------------


def test_sl12_null_stored_peak_is_written() -> None:
    """SL-12: a null stored peak is always written."""
    d = evaluate_stop(
        purchase_price=1.0, stored_peak=None, stored_pct=-32.0, price=0.9, params=FIXED
    )
    assert d.updated and d.peak == 1.0


def test_sl12_peak_threshold_is_strictly_above_0_0001() -> None:
    """SL-12: a peak alone is written only if it moved by more than 0.0001 (absolute,
    float arithmetic: 1.0001 − 1 = 0.0000999… is not enough, 1.0002 is)."""
    small = evaluate_stop(
        purchase_price=1.0, stored_peak=1.0, stored_pct=-32.0, price=1.0001, params=FIXED
    )
    assert not small.updated and small.peak == 1.0001
    big = evaluate_stop(
        purchase_price=1.0, stored_peak=1.0, stored_pct=-32.0, price=1.0002, params=FIXED
    )
    assert big.updated and big.peak == 1.0002 and big.stop_pct == -32.0


def test_sl12_low_priced_token_peak_is_saved_only_with_a_pct_change() -> None:
    """SL-12 consequence: for a 1e-6 token a 10 % new peak is not saved (pct unchanged),
    a 30 % one is (the pct changes)."""
    d = evaluate_stop(
        purchase_price=1e-6, stored_peak=1e-6, stored_pct=-32.0, price=1.1e-6, params=FIXED
    )
    assert not d.updated
    d = evaluate_stop(
        purchase_price=1e-6, stored_peak=1e-6, stored_pct=-32.0, price=1.3e-6, params=FIXED
    )
    assert d.updated and d.peak == 1.3e-6 and d.stop_pct == peak_change_percent(1e-6, 1.3e-6) - 10


def test_sl12_pct_change_is_written() -> None:
    """SL-12: a changed percentage is written even when the peak barely moved."""
    d = evaluate_stop(
        purchase_price=100.0, stored_peak=130.0, stored_pct=-32.0, price=129.0, params=FIXED
    )
    assert d.updated and d.stop_pct == 20.0 and d.peak == 130.0


# -- SL-13 / SL-14 / SL-16 -------------------------------------------------------


def test_sl13_is_the_callers_fresh_read() -> None:
    """SL-13: the rule reads only the state it is given (a closed position is simply not
    evaluated: the armed book's disarm covers it); the same input gives the same output."""
    a = evaluate_stop(purchase_price=2.0, stored_peak=3.0, stored_pct=5.0, price=2.5, params=FIXED)
    b = evaluate_stop(purchase_price=2.0, stored_peak=3.0, stored_pct=5.0, price=2.5, params=FIXED)
    assert a == b
    assert a.updated  # peak change 50 % → fixed 40 > 5, so the caller must write it


def test_sl14_disabled_returns_nothing() -> None:
    """SL-14: disabled → no trigger, percentage and price null, not updated, at any price."""
    for price in (0.0, 1e-9, 1.0, 1e9):
        d = evaluate_stop(
            purchase_price=1.0, stored_peak=1.0, stored_pct=-32.0, price=price, params=DISABLED
        )
        assert d == StopDecision(False, None, None, None, False)


def test_sl16_phantom_gain_after_dca_triggers() -> None:
    """SL-16 example: purchase averaged down to 0.0000805 with old peak 0.0001 → phantom
    gain 24.2 %, fixed stop 14.2 %, stop price 0.00009195, and 0.000073 triggers."""
    d = evaluate_stop(
        purchase_price=0.0000805, stored_peak=0.0001, stored_pct=-32.0, price=0.000073, params=FIXED
    )
    assert peak_change_percent(0.0000805, 0.0001) == 24.22360248447205
    assert d.stop_pct == 14.22360248447205
    assert d.stop_price == 9.195000000000001e-05
    assert round(d.stop_price, 11) == 0.00009195
    assert d.triggered and d.updated and d.peak == 0.0001


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.floats(1e-15, 1e6) | st.sampled_from([0.1, 1e-7, 0.0000805, 3.0]), max_size=8),
    st.floats(1e-15, 1e9) | st.sampled_from([0.3, 1.2e-7, 0.0001]),
)
def test_sl2_batched_peak_change_equals_the_scalar(purchases: list[float], peak: float) -> None:
    """SL-2: the evaluator's batched form (one peak, many purchase prices) gives exactly
    the scalar decimal result for every element."""
    assert peak_change_percents(purchases, peak) == [
        peak_change_percent(q, peak) for q in purchases
    ]


# -- valux's trailing mode (an extension of the reference's four) --------------------------


def trailing(distance: float, activation: float = 0.0, default: float = -5.0) -> StopLossParams:
    return StopLossParams(True, default, "trailing", (), distance, activation)


def walk(params: StopLossParams, purchase: float, prices: list[float]) -> list[StopDecision]:
    """evaluate_stop along ``prices``, storing what it says to store (as an agent does)."""
    pct, peak = initial_stop(purchase, params)
    out = []
    for price in prices:
        decision = evaluate_stop(
            purchase_price=purchase, stored_peak=peak, stored_pct=pct, price=price, params=params
        )
        if decision.updated:
            pct, peak = decision.stop_pct, decision.peak
        out.append(decision)
    return out


def test_trailing_stop_sits_its_distance_below_the_highest_price() -> None:
    """A 5 % trail from entry: bought at 100, the stop is 95; after a peak of 120 it is
    114 (= 0.95 × 120, up to float rounding) and stays there when the price falls back;
    114 itself triggers (inclusive), 114.5 does not."""
    params = trailing(5.0)
    up, back, above, at = walk(params, 100.0, [120.0, 116.0, 114.5, 114.0])
    assert up.stop_price == pytest.approx(114.0, rel=1e-12) and not up.triggered
    assert back.stop_price == up.stop_price and not back.triggered
    assert not above.triggered and at.triggered
    assert walk(params, 100.0, [95.0])[0].triggered


def test_trailing_stop_waits_for_its_activation_gain_and_is_never_looser_than_default() -> None:
    """With activation at +10 %, a peak of +8 % leaves the default stop (-5 %: 95); from
    +10 % the trail applies; a trail wider than the default never loosens the stop below
    the default (a 20 % trail from 100 at a peak of 110 would be 88; the default 95
    holds)."""
    params = trailing(5.0, activation=10.0)
    assert walk(params, 100.0, [108.0])[0].stop_pct == -5.0
    assert walk(params, 100.0, [110.0])[0].stop_price == pytest.approx(104.5, rel=1e-12)
    assert walk(trailing(20.0), 100.0, [110.0])[0].stop_pct == -5.0
    assert target_percentage(50.0, trailing(10.0)) == 150.0 * 0.9 - 100.0


def test_trailing_values_below_the_purchase_price_are_kept() -> None:
    """SL-5.4 (a value ≤ 0 gives the default) does not apply to trailing: a 5 % trail at a
    peak of +2 % is -3.1 %, tighter than the default -10 %, and it is what applies."""
    assert target_percentage(2.0, trailing(5.0, default=-10.0)) == 102.0 * 0.95 - 100.0
