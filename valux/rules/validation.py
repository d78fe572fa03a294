"""Trade validation before every signal buy (reference §10, TV-1).

The caller (the agent's host) has already found the agent, loaded its config
and its wallet (TV-1 checks 1–4). This module runs the rest in the reference's
order; the first failure decides, as a :class:`TradeRejected` with the
reference's code. Checks 5 and 6 (key loaded, trading mode) run only when the
caller passes the facts they need.

The balance is the SOL (quote) balance already read through
:func:`valux.rules.sizing.normalise_sol_balance` (PS-8).
"""

from __future__ import annotations

import random
from collections.abc import Collection
from decimal import Decimal

from valux.errors import ValuxError
from valux.rules.config import AgentConfig
from valux.rules.sizing import SizingError, calculate_position_size

__all__ = ["TradeRejected", "validate_trade"]


class TradeRejected(ValuxError):
    """A signal buy failed validation; ``code`` is the reference's failure code."""

    code = "TRADE_REJECTED"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code

    def __reduce__(self) -> tuple[type[TradeRejected], tuple[str, str]]:
        return (type(self), (self.code, self.message))


def validate_trade(
    *,
    config: AgentConfig,
    balance: Decimal,
    open_tokens: Collection[str],
    token: str,
    requested_size: Decimal | None,
    rng: random.Random,
    wallet_type: str | None = None,
    wallet_key_loaded: bool = True,
    trading_mode: str | None = None,
) -> Decimal:
    """TV-1 checks 5–11 in order; returns the position size in SOL.

    ``open_tokens`` holds the token of every open position of the agent (one
    per token, so its size is the open-position count). ``wallet_type`` is
    "live" or "simulation"; with it, a live wallet whose key is not loaded fails
    WALLET_NOT_LOADED (#5) and, given ``trading_mode`` too, a mode that differs
    from the wallet type fails TRADING_MODE_MISMATCH (#6).
    """
    _check_wallet(wallet_type, wallet_key_loaded, trading_mode)
    _check_balance(config, balance)
    _check_positions(config, open_tokens, token)
    if requested_size is not None:
        return _check_given_size(config, balance, requested_size)
    try:
        return calculate_position_size(balance, config, rng)
    except SizingError as exc:
        raise TradeRejected(
            "POSITION_CALCULATION_ERROR", f"Failed to calculate position size: {exc.message}"
        ) from exc


def _check_wallet(wallet_type: str | None, key_loaded: bool, trading_mode: str | None) -> None:
    if wallet_type == "live" and not key_loaded:  # 5
        raise TradeRejected("WALLET_NOT_LOADED", "Live wallet key is not loaded")
    if wallet_type is not None and trading_mode is not None and trading_mode != wallet_type:  # 6
        raise TradeRejected(
            "TRADING_MODE_MISMATCH",
            f"Trading mode mismatch: agent is in '{trading_mode}' mode "
            f"but wallet is '{wallet_type}'",
        )


def _check_balance(config: AgentConfig, balance: Decimal) -> None:
    if balance <= 0:  # 7
        raise TradeRejected("INSUFFICIENT_BALANCE", "Insufficient SOL balance")
    minimum = config.purchase_limits.minimum_agent_balance
    if balance < minimum:  # 8
        raise TradeRejected(
            "BELOW_MINIMUM_THRESHOLD", f"Balance below minimum threshold: {minimum} SOL"
        )


def _check_positions(config: AgentConfig, open_tokens: Collection[str], token: str) -> None:
    if token in open_tokens:  # 9: one open position per token
        raise TradeRejected("POSITION_EXISTS", f"Position already exists for token: {token}")
    limit = config.engine.max_open_positions
    if len(open_tokens) >= limit:  # 10
        raise TradeRejected(
            "MAX_POSITIONS_EXCEEDED", f"Agent has reached maximum limit of {limit} open positions"
        )


def _check_given_size(config: AgentConfig, balance: Decimal, size: Decimal) -> Decimal:
    """11, size given: positive, within the balance, keeps the reserve, within the cap."""
    limits = config.purchase_limits
    cap = limits.max_purchase_per_token
    if size <= 0:
        raise TradeRejected("INVALID_POSITION_SIZE", "Position size must be positive")
    if size > balance:
        raise TradeRejected(
            "POSITION_SIZE_EXCEEDS_BALANCE", "Position size exceeds available balance"
        )
    if balance - size < limits.minimum_agent_balance:
        raise TradeRejected(
            "VIOLATES_MINIMUM_BALANCE",
            "Position size would violate minimum balance requirement: "
            f"{limits.minimum_agent_balance} SOL",
        )
    if size > cap:
        raise TradeRejected(
            "EXCEEDS_MAX_PURCHASE", f"Position size exceeds maximum purchase per token: {cap} SOL"
        )
    return size
