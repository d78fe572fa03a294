"""Profit and loss (reference §12, PNL-1..PNL-6) and Jupiter fee extraction (§13, FEE-1..FEE-3).

Pure functions over ``Decimal``: amounts of SOL (the quote currency), token
amounts already divided by 10^decimals, and prices in SOL per token. Callers
holding a float price convert it with :func:`valux.rules.config.as_decimal`.

Where the reference would divide by zero (a zero cost basis or amount), these
functions return 0 instead, as the reference itself does in PNL-1 and PNL-2.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Final

__all__ = [
    "LAMPORTS_PER_SOL",
    "SOL_MINT",
    "BuyBookkeeping",
    "FullClosePnl",
    "JupiterFees",
    "PartialSalePnl",
    "TakeProfitClosePnl",
    "UnrealisedPnl",
    "buy_bookkeeping",
    "extract_jupiter_fees",
    "full_close_pnl",
    "lamports_to_sol",
    "net_proceeds",
    "network_fee_sol",
    "partial_sale_pnl",
    "protocol_fee_sol",
    "sale_credit",
    "take_profit_close_pnl",
    "tokens_from_base_units",
    "unrealised_pnl",
]

SOL_MINT: Final = "So11111111111111111111111111111111111111112"
LAMPORTS_PER_SOL: Final = Decimal(1_000_000_000)
_ZERO: Final = Decimal(0)
_HUNDRED: Final = Decimal(100)


def lamports_to_sol(lamports: int | Decimal) -> Decimal:
    """Lamports / 1e9, exactly."""
    return Decimal(lamports) / LAMPORTS_PER_SOL


def tokens_from_base_units(units: int, decimals: int) -> Decimal:
    """A token amount from its smallest units: units / 10^decimals, exactly."""
    return Decimal(units).scaleb(-decimals)


def net_proceeds(
    out_sol: Decimal,
    protocol_fee_sol: Decimal | None = None,
    network_fee_sol: Decimal | None = None,
) -> Decimal:
    """What one sale really brought in: SOL out − protocol fee − network fee (unknown fee = 0)."""
    return out_sol - (protocol_fee_sol or _ZERO) - (network_fee_sol or _ZERO)


def _percent_of(amount: Decimal, basis: Decimal) -> Decimal:
    return amount / basis * _HUNDRED if basis > 0 else _ZERO


# --------------------------------------------------------------------------
# PNL-1 full close, PNL-2 partial sale, PNL-3 close by take-profit
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class FullClosePnl:
    """PNL-1 result; ``amount`` and ``effective_sale_price`` go to the historical record."""

    received_sol: Decimal
    profit_sol: Decimal
    change_percent: Decimal
    profit_usd: Decimal
    amount: Decimal
    effective_sale_price: Decimal


def full_close_pnl(
    *,
    total_invested_sol: Decimal,
    purchase_price: Decimal,
    purchase_amount: Decimal,
    take_profit_net_proceeds: Iterable[Decimal],
    final_net_proceeds: Decimal,
    sol_usd: Decimal,
) -> FullClosePnl:
    """PNL-1, cash-flow method.

    received = Σ net take-profit proceeds + the final sale's net proceeds (each
    already net of protocol and network fees, see :func:`net_proceeds`);
    profit = received − total invested; change % is against the original cost
    basis purchase_price × purchase_amount (0 if that is ≤ 0).
    """
    received = sum(take_profit_net_proceeds, _ZERO) + final_net_proceeds
    profit = received - total_invested_sol
    return FullClosePnl(
        received_sol=received,
        profit_sol=profit,
        change_percent=_percent_of(profit, purchase_price * purchase_amount),
        profit_usd=profit * sol_usd,
        amount=purchase_amount,
        effective_sale_price=received / purchase_amount if purchase_amount > 0 else _ZERO,
    )


@dataclass(frozen=True)
class PartialSalePnl:
    """PNL-2 result for one take-profit sale."""

    cost_basis: Decimal
    profit_sol: Decimal
    change_percent: Decimal
    profit_usd: Decimal


def partial_sale_pnl(
    *,
    total_invested_sol: Decimal,
    purchase_amount: Decimal,
    sold_amount: Decimal,
    net_sale_sol: Decimal,
    purchase_price: Decimal,
    sale_price: Decimal,
    sol_usd: Decimal,
) -> PartialSalePnl:
    """PNL-2: cost basis = sold / purchase_amount × total invested (0 if no amount);
    profit = net sale SOL − cost basis; change % = price change against the average."""
    cost_basis = (
        sold_amount / purchase_amount * total_invested_sol if purchase_amount > 0 else _ZERO
    )
    profit = net_sale_sol - cost_basis
    return PartialSalePnl(
        cost_basis=cost_basis,
        profit_sol=profit,
        change_percent=_percent_of(sale_price - purchase_price, purchase_price),
        profit_usd=profit * sol_usd,
    )


@dataclass(frozen=True)
class TakeProfitClosePnl:
    """PNL-3 result for a position whose last tokens a take-profit sale sold."""

    profit_sol: Decimal
    change_percent: Decimal
    effective_sale_price: Decimal
    profit_usd: Decimal


def take_profit_close_pnl(
    *,
    purchase_price: Decimal,
    purchase_amount: Decimal,
    realized_profit_sol: Decimal,
    sol_usd: Decimal,
) -> TakeProfitClosePnl:
    """PNL-3: the realised profit is the accumulated realizedProfitSol; change % is
    against purchase_price × purchase_amount; the effective sale price is
    (cost basis + realised) / purchase_amount. ``profit_usd`` = realised × SOL/USD."""
    cost_basis = purchase_price * purchase_amount
    return TakeProfitClosePnl(
        profit_sol=realized_profit_sol,
        change_percent=_percent_of(realized_profit_sol, cost_basis),
        effective_sale_price=(
            (cost_basis + realized_profit_sol) / purchase_amount if purchase_amount > 0 else _ZERO
        ),
        profit_usd=realized_profit_sol * sol_usd,
    )


# --------------------------------------------------------------------------
# PNL-4 buy side, PNL-5 sale side, PNL-6 unrealised
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class BuyBookkeeping:
    """PNL-4 result: the position's price and size, and what the balance loses."""

    purchase_price: Decimal
    tokens: Decimal
    sol_debited: Decimal


def buy_bookkeeping(
    *,
    input_sol: Decimal,
    tokens_out: Decimal,
    total_input_sol: Decimal | None,
    network_fee_sol: Decimal | None,
) -> BuyBookkeeping:
    """PNL-4: purchase price = swap SOL in (fees excluded) / tokens out; the SOL debited
    (and totalInvestedSol) = total input (Jupiter ``totalInputAmount``, protocol fee
    included; the raw input if absent) + network fee. Raises ``ValueError`` if no
    tokens came out."""
    if tokens_out <= 0:
        raise ValueError(f"a buy must yield tokens, got {tokens_out}")
    debited = (input_sol if total_input_sol is None else total_input_sol) + (
        network_fee_sol or _ZERO
    )
    return BuyBookkeeping(
        purchase_price=input_sol / tokens_out, tokens=tokens_out, sol_debited=debited
    )


def sale_credit(
    *,
    out_sol: Decimal,
    total_output_sol: Decimal | None,
    protocol_fee_sol: Decimal | None,
    network_fee_sol: Decimal | None,
) -> Decimal:
    """PNL-5: the SOL credited for a sale: ``totalOutputAmount`` (protocol fee already
    deducted) − network fee; without that total (simulation), out − protocol − network."""
    if total_output_sol is not None:
        return total_output_sol - (network_fee_sol or _ZERO)
    return net_proceeds(out_sol, protocol_fee_sol, network_fee_sol)


@dataclass(frozen=True)
class UnrealisedPnl:
    """PNL-6 result for the portfolio view."""

    holding: Decimal
    value: Decimal
    cost: Decimal
    unrealised: Decimal


def unrealised_pnl(
    *,
    current_price: Decimal,
    purchase_price: Decimal,
    purchase_amount: Decimal,
    remaining_amount: Decimal | None,
    total_invested_sol: Decimal | None,
    take_profit_net_proceeds: Sequence[Decimal] = (),
    realized_profit_sol: Decimal = _ZERO,
) -> UnrealisedPnl:
    """PNL-6: value = price × holding (remaining, or purchase amount if null) − cost, where
    cost is: purchase_price × holding for a legacy row without total invested; else,
    after take-profit sales, total invested − Σ net TP proceeds + realised profit;
    else holding / purchase_amount × total invested."""
    holding = purchase_amount if remaining_amount is None else remaining_amount
    if total_invested_sol is None:
        cost = purchase_price * holding
    elif take_profit_net_proceeds:
        cost = total_invested_sol - sum(take_profit_net_proceeds, _ZERO) + realized_profit_sol
    elif purchase_amount > 0:
        cost = holding / purchase_amount * total_invested_sol
    else:
        cost = _ZERO
    value = current_price * holding
    return UnrealisedPnl(holding=holding, value=value, cost=cost, unrealised=value - cost)


# --------------------------------------------------------------------------
# FEE-1..FEE-3 Jupiter fee extraction
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class JupiterFees:
    """Fees of one swap in SOL; None where the payload cannot tell."""

    protocol_fee_sol: Decimal | None
    network_fee_sol: Decimal | None


def extract_jupiter_fees(payload: object) -> JupiterFees:
    """FEE-1..FEE-3: protocol and network fee of a stored Jupiter swap payload."""
    order, execute = _payload_parts(payload)
    return JupiterFees(_protocol_fee(order, execute), _network_fee(order))


def protocol_fee_sol(payload: object) -> Decimal | None:
    """FEE-2: the platform fee in SOL (0 when none is configured, None when unknowable)."""
    return extract_jupiter_fees(payload).protocol_fee_sol


def network_fee_sol(payload: object) -> Decimal | None:
    """FEE-3: signature + prioritization + rent fees in SOL (None only without an order)."""
    return extract_jupiter_fees(payload).network_fee_sol


def _payload_parts(payload: object) -> tuple[Mapping[str, Any] | None, Mapping[str, Any] | None]:
    """FEE-1: (order, execute). With ``orderResponse``/``executeResponse`` keys present,
    those are the parts; otherwise the payload itself is the order (legacy, simulation)."""
    if not isinstance(payload, Mapping):
        return None, None
    if "orderResponse" in payload or "executeResponse" in payload:
        return _as_object(payload.get("orderResponse")), _as_object(payload.get("executeResponse"))
    return payload, None


def _as_object(value: object) -> Mapping[str, Any] | None:
    return value if isinstance(value, Mapping) else None


_JS_DECIMAL: Final = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_JS_RADIX: Final = {"0x": 16, "0o": 8, "0b": 2}


def _to_number(value: object) -> Decimal:
    """The reference's ``toNum``: numbers pass, numeric strings parse (JS ``Number``),
    anything else — or unparsable — is 0."""
    if isinstance(value, bool) or value is None:
        return _ZERO
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value)) if math.isfinite(value) else _ZERO
    if isinstance(value, str):
        return _parse_js_number(value.strip())
    return _ZERO


def _parse_js_number(text: str) -> Decimal:
    if not text:
        return _ZERO  # Number("") is 0
    radix = _JS_RADIX.get(text[:2].lower())
    if radix is not None:
        try:
            return Decimal(int(text[2:], radix))
        except ValueError:
            return _ZERO
    if not _JS_DECIMAL.fullmatch(text):
        return _ZERO
    try:
        return Decimal(text)
    except InvalidOperation:  # pragma: no cover - the pattern admits only valid decimals
        return _ZERO


def _js_truthy(value: object) -> bool:
    if value is None or value is False or value == "":
        return False
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value == value and value != 0
    return True


def _protocol_fee(
    order: Mapping[str, Any] | None, execute: Mapping[str, Any] | None
) -> Decimal | None:
    """FEE-2."""
    if order is None:
        return None
    platform_fee = _as_object(order.get("platformFee")) or {}
    raw_bps = platform_fee.get("feeBps")
    bps = _to_number(order.get("feeBps") if raw_bps is None else raw_bps)
    if bps <= 0:
        return _ZERO  # no platform fee configured
    mint = platform_fee.get("feeMint")
    mint = order.get("feeMint") if mint is None else mint
    if _js_truthy(mint) and mint != SOL_MINT:
        return None  # the fee is not taken in SOL
    input_is_sol = order.get("inputMint") == SOL_MINT
    if not input_is_sol and order.get("outputMint") != SOL_MINT:
        return None  # neither side is SOL
    if execute is not None:
        lamports = _to_number(
            execute.get("inputAmountResult" if input_is_sol else "outputAmountResult")
        )
    else:
        lamports = _to_number(order.get("inAmount" if input_is_sol else "outAmount"))
    if lamports == 0:
        return None
    return lamports * bps / Decimal(10_000) / LAMPORTS_PER_SOL


def _network_fee(order: Mapping[str, Any] | None) -> Decimal | None:
    """FEE-3."""
    if order is None:
        return None
    parts = ("signatureFeeLamports", "prioritizationFeeLamports", "rentFeeLamports")
    return sum((_to_number(order.get(part)) for part in parts), _ZERO) / LAMPORTS_PER_SOL
