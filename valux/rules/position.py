"""The rule state of one open position (agent-rules §1, "Open position").

:class:`PositionState` is what the exit rules (stop loss, take profit, DCA,
stale trade) read and write for one position. It is immutable: every rule
that changes it returns a new state (``dataclasses.replace``), which the agent
journals before applying (DESIGN.md, "journal first").

Numbers (agent-rules §0):

- Money and token amounts are ``Decimal`` (``purchase_price``,
  ``purchase_amount``, ``total_invested``, ``remaining_amount``, moon bag,
  realised profit, take-profit net proceeds).
- *Decisions* compare percentages and prices as IEEE doubles, exactly as the
  reference's JS numbers do: the reference's ``purchasePrice`` is
  :attr:`PositionState.reference_price`, i.e. ``float(purchase_price)`` (the
  double nearest to the stored decimal, which is what a double column read
  back gives). The float notes of DCA-6 and ST-1 therefore hold bit for bit.
- Times are unix seconds (``float``); the reference's millisecond arithmetic
  is restated in seconds by each rule that uses time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from decimal import Decimal
from typing import Any, Final

from valux.rules.config import as_decimal

__all__ = ["DUST_AMOUNT", "MOON_BAG_TOLERANCE", "PositionState", "open_position"]

DUST_AMOUNT: Final = Decimal("1e-9")
"""TP-11: a take-profit sale leaving less than this closes the position."""

MOON_BAG_TOLERANCE: Final = Decimal("1e-6")
"""TP-12 / DCA-3: |remaining − moon bag| below this means only the moon bag is left."""

_ZERO: Final = Decimal(0)


@dataclass(frozen=True, slots=True)
class PositionState:
    """One open position's rule state (§1). Field names are the reference's, in snake case.

    - ``purchase_price``: the weighted average cost after any DCA (``purchasePrice``).
    - ``purchase_amount``: tokens ever bought, initial buy plus DCA buys; take-profit
      sales do not reduce it.
    - ``total_invested``: quote currency debited, fees included (``totalInvestedSol``).
    - ``remaining_amount``: ``None`` means "equal to ``purchase_amount``".
    - ``created_at``: the original open time (unix seconds).
    - DCA: ``dca_count``, ``last_dca_time``, ``lowest_price`` (DCA-12, analytics),
      ``dca_transaction_ids``.
    - Stop loss: ``stop_pct`` (``currentStopLossPercentage``) and ``peak``
      (``peakPrice``), both ``None`` until SL-1 writes them.
    - Take profit: ``tp_levels_hit``, ``tp_transaction_ids``, ``last_tp_time``,
      ``moon_bag_activated``, ``moon_bag_amount``, ``realized_profit``
      (``realizedProfitSol``, PNL-2), ``tp_batch_start_level`` and
      ``total_tp_levels`` (TP-17; ``None`` = the configured level count).
    - ``tp_net_proceeds``: the net proceeds of every take-profit sale, in order
      (PNL-1's Σ and PNL-6's cost of the holding).
    """

    purchase_price: Decimal
    purchase_amount: Decimal
    total_invested: Decimal
    created_at: float
    remaining_amount: Decimal | None = None
    dca_count: int = 0
    last_dca_time: float | None = None
    lowest_price: float | None = None
    dca_transaction_ids: tuple[str, ...] = ()
    stop_pct: float | None = None
    peak: float | None = None
    tp_levels_hit: int = 0
    tp_transaction_ids: tuple[str, ...] = ()
    last_tp_time: float | None = None
    moon_bag_activated: bool = False
    moon_bag_amount: Decimal | None = None
    realized_profit: Decimal = _ZERO
    tp_batch_start_level: int = 0
    total_tp_levels: int | None = None
    tp_net_proceeds: tuple[Decimal, ...] = ()

    @property
    def reference_price(self) -> float:
        """The reference's ``purchasePrice`` as a double: what every decision compares."""
        return float(self.purchase_price)

    @property
    def holding(self) -> Decimal:
        """Tokens still held: ``remaining_amount``, or ``purchase_amount`` if that is null."""
        return self.purchase_amount if self.remaining_amount is None else self.remaining_amount

    @property
    def tp_cost_basis(self) -> Decimal:
        """Σ PNL-2 cost bases of the tokens take-profit sold: Σ net proceeds − realised.

        Each sale adds ``net − cost`` to ``realized_profit`` and ``net`` to
        ``tp_net_proceeds``, so the difference of the sums is the sum of the costs.
        """
        return sum(self.tp_net_proceeds, _ZERO) - self.realized_profit

    @property
    def holding_cost(self) -> Decimal:
        """PNL-6's cost of the holding: total invested − Σ net TP proceeds + realised
        (= total invested − :attr:`tp_cost_basis`); without TP sales, holding /
        purchase amount × total invested."""
        if self.tp_net_proceeds:
            return self.total_invested - self.tp_cost_basis
        if self.purchase_amount > 0:
            return self.holding / self.purchase_amount * self.total_invested
        return _ZERO

    def to_dict(self) -> dict[str, Any]:
        """A msgpack-friendly dict: Decimals stay ``Decimal``, tuples become lists."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PositionState:
        """Inverse of :meth:`to_dict`; lists or tuples, and numbers or numeric strings for
        money (parsed exactly, see :func:`~valux.rules.config.as_decimal`), are accepted.
        Unknown keys are ignored; missing optional keys take their defaults."""
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in data:
                continue
            value = data[f.name]
            if f.name in _DECIMALS:
                value = _dec(value)
            elif f.name in _OPTIONAL_DECIMALS:
                value = None if value is None else _dec(value)
            elif f.name in _DECIMAL_TUPLES:
                value = tuple(_dec(v) for v in value)
            elif f.name in _STR_TUPLES:
                value = tuple(str(v) for v in value)
            elif f.name in _FLOATS:
                value = float(value)
            elif f.name in _OPTIONAL_FLOATS:
                value = None if value is None else float(value)
            elif f.name in _INTS:
                value = int(value)
            elif f.name == "total_tp_levels":
                value = None if value is None else int(value)
            elif f.name == "moon_bag_activated":
                value = bool(value)
            kwargs[f.name] = value
        return cls(**kwargs)


_DECIMALS: Final = frozenset(
    {"purchase_price", "purchase_amount", "total_invested", "realized_profit"}
)
_OPTIONAL_DECIMALS: Final = frozenset({"remaining_amount", "moon_bag_amount"})
_DECIMAL_TUPLES: Final = frozenset({"tp_net_proceeds"})
_STR_TUPLES: Final = frozenset({"dca_transaction_ids", "tp_transaction_ids"})
_FLOATS: Final = frozenset({"created_at"})
_OPTIONAL_FLOATS: Final = frozenset(
    {"last_dca_time", "lowest_price", "stop_pct", "peak", "last_tp_time"}
)
_INTS: Final = frozenset({"dca_count", "tp_levels_hit", "tp_batch_start_level"})


def _dec(value: object) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, (int, float, str)):
        return as_decimal(value)
    raise ValueError(f"not a decimal amount: {value!r}")


def open_position(
    *,
    purchase_price: Decimal,
    amount: Decimal,
    total_invested: Decimal,
    created_at: float,
    stop: tuple[float | None, float | None] = (None, None),
) -> PositionState:
    """A freshly opened position (§1): DCA-12 starts ``lowest_price`` at the purchase
    price; ``stop`` is SL-1's ``(stop_pct, peak)`` (see
    :func:`valux.rules.stop_loss.initial_stop`)."""
    stop_pct, peak = stop
    return PositionState(
        purchase_price=purchase_price,
        purchase_amount=amount,
        total_invested=total_invested,
        created_at=created_at,
        lowest_price=float(purchase_price),
        stop_pct=stop_pct,
        peak=peak,
    )
