"""EIP-1559 fees from ``eth_feeHistory``, replacement bumps, and the gas margin.

The choice, and why:

- **Priority fee** = the ``priority_percentile``-th percentile (default the median, 50)
  of the tips paid in each of the last ``history_blocks`` (20) blocks, then the median of
  those per-block values; floored at ``min_priority_fee_wei`` (0.001 gwei: a replacement
  must raise the tip by ≥ 10 %, which a zero tip cannot) and capped at
  ``max_priority_fee_wei`` when set. The median follows what the network actually pays
  without trying to outbid it: on Arbitrum the sequencer orders first come, first served
  and tips buy nothing (they are charged at most up to the base fee's surplus), so a
  higher percentile would only cost money; on an L1-style chain the median still gets
  included within a few blocks, and a transaction that is not is replaced.
- **Max fee** = ``base_fee_multiplier`` (2) × the *next* block's base fee (the last entry
  of ``baseFeePerGas``, which ``eth_feeHistory`` returns one past the newest block) + the
  priority fee. A base fee rises at most 12.5 % per full block, so 2× survives six full
  blocks in a row (1.125⁶ ≈ 2.03) before the transaction stops being includable; only the
  base fee actually charged is paid (``effectiveGasPrice``).
- **Replacement** (same nonce): each of ``maxFeePerGas`` and ``maxPriorityFeePerGas`` is at
  least ``replacement_bump`` (10 %, rounded up, and at least 1 wei) above the previous
  attempt's — the rule nodes apply before they swap a pending transaction — and never
  below what fresh fees would be now.
- **Gas limit** = the node's ``eth_estimateGas`` × (1 + ``gas_margin``) (25 %), rounded up:
  the swap's path through the pool's ticks may cost more when the price has moved between
  the estimate and the block.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["FeeSettings", "Fees", "bumped", "fees_from_history", "gas_with_margin"]


class FeeSettings(BaseModel):
    """How fees and gas limits are chosen (see the module docstring). Frozen, no unknown
    fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    history_blocks: int = Field(default=20, ge=1, le=1024)
    priority_percentile: float = Field(default=50.0, ge=0, le=100)
    min_priority_fee_wei: int = Field(default=1_000_000, ge=1)
    max_priority_fee_wei: int | None = Field(default=None, ge=1)
    base_fee_multiplier: Decimal = Field(default=Decimal(2), ge=1, allow_inf_nan=False)
    max_fee_cap_wei: int | None = Field(default=None, ge=1)
    """Never sign a ``maxFeePerGas`` above this (a replacement that would is not sent)."""
    gas_margin: Decimal = Field(default=Decimal("0.25"), ge=0, le=10, allow_inf_nan=False)
    replacement_bump: Decimal = Field(default=Decimal("0.10"), ge=Decimal("0.10"), le=10)


@dataclass(frozen=True, slots=True)
class Fees:
    """An EIP-1559 fee pair, in wei per gas."""

    max_fee_per_gas: int
    max_priority_fee_per_gas: int

    def __post_init__(self) -> None:
        if self.max_priority_fee_per_gas < 0 or self.max_fee_per_gas < 0:
            raise ValueError("fees must be ≥ 0")
        if self.max_priority_fee_per_gas > self.max_fee_per_gas:
            raise ValueError("maxPriorityFeePerGas must not exceed maxFeePerGas")


def _rewards(history: Mapping[str, Any]) -> list[int]:
    rewards = history.get("reward") or []
    out: list[int] = []
    for block in rewards:
        if isinstance(block, Sequence) and block:
            value = block[0]
            out.append(int(value, 16) if isinstance(value, str) else int(value))
    return out


def fees_from_history(history: Mapping[str, Any], settings: FeeSettings) -> Fees:
    """The fees for a new transaction from an ``eth_feeHistory`` answer asked with
    ``[settings.priority_percentile]`` as its reward percentiles."""
    base_fees = history.get("baseFeePerGas") or []
    if not base_fees:
        raise ValueError("eth_feeHistory returned no baseFeePerGas")
    last = base_fees[-1]
    next_base = int(last, 16) if isinstance(last, str) else int(last)
    rewards = _rewards(history)
    tip = int(statistics.median(rewards)) if rewards else 0
    tip = max(tip, settings.min_priority_fee_wei)
    if settings.max_priority_fee_wei is not None:
        tip = min(tip, settings.max_priority_fee_wei)
    scaled = (Decimal(next_base) * settings.base_fee_multiplier).to_integral_value(ROUND_CEILING)
    return Fees(int(scaled) + tip, tip)


def _raise(old: int, bump: Decimal) -> int:
    return max(old + 1, int((Decimal(old) * (1 + bump)).to_integral_value(ROUND_CEILING)))


def bumped(previous: Fees, fresh: Fees, bump: Decimal = Decimal("0.10")) -> Fees:
    """Fees for a replacement of ``previous``: each ≥ ``bump`` above it and ≥ ``fresh``."""
    tip = max(_raise(previous.max_priority_fee_per_gas, bump), fresh.max_priority_fee_per_gas)
    cap = max(_raise(previous.max_fee_per_gas, bump), fresh.max_fee_per_gas, tip)
    return Fees(cap, tip)


def gas_with_margin(estimate: int, margin: Decimal) -> int:
    """``estimate`` × (1 + ``margin``), rounded up."""
    if estimate <= 0:
        raise ValueError(f"a gas estimate must be > 0, got {estimate}")
    return math.ceil(Decimal(estimate) * (1 + margin))
