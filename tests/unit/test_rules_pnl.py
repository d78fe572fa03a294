"""Profit and loss (reference §12, PNL-1..PNL-6) and Jupiter fees (§13, FEE-1..FEE-3)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from valux.rules.pnl import (
    SOL_MINT,
    JupiterFees,
    buy_bookkeeping,
    extract_jupiter_fees,
    full_close_pnl,
    lamports_to_sol,
    net_proceeds,
    network_fee_sol,
    partial_sale_pnl,
    protocol_fee_sol,
    sale_credit,
    take_profit_close_pnl,
    tokens_from_base_units,
    unrealised_pnl,
)

D = Decimal
TOKEN = "TokenMint1111111111111111111111111111111111"


def test_net_proceeds_subtracts_both_fees_and_treats_unknown_as_zero() -> None:
    """PNL-1/PNL-2: net SOL of a sale = out − protocol fee − network fee."""
    assert net_proceeds(D("1.0"), D("0.01"), D("0.000005")) == D("0.989995")
    assert net_proceeds(D("1.0"), None, None) == D("1.0")


def test_pnl1_full_close_uses_cash_flow_against_the_original_cost_basis() -> None:
    """PNL-1: received = Σ TP net + final net; profit = received − invested; change % over
    purchasePrice × purchaseAmount; USD = profit × SOL/USD; record price = received / amount."""
    result = full_close_pnl(
        total_invested_sol=D("1.0"),
        purchase_price=D("0.001"),
        purchase_amount=D("950"),
        take_profit_net_proceeds=[D("0.3"), D("0.2")],
        final_net_proceeds=D("0.8"),
        sol_usd=D("150"),
    )
    assert result.received_sol == D("1.3")
    assert result.profit_sol == D("0.3")
    assert result.change_percent == D("0.3") / D("0.95") * 100
    assert result.profit_usd == D("45.0")
    assert result.amount == D("950")
    assert result.effective_sale_price == D("1.3") / D("950")


def test_pnl1_zero_cost_basis_gives_zero_change() -> None:
    """PNL-1: change % is 0 when purchasePrice × purchaseAmount ≤ 0."""
    result = full_close_pnl(
        total_invested_sol=D("1"),
        purchase_price=D(0),
        purchase_amount=D("10"),
        take_profit_net_proceeds=(),
        final_net_proceeds=D("0.5"),
        sol_usd=D("100"),
    )
    assert result.change_percent == 0 and result.profit_sol == D("-0.5")


def test_pnl2_partial_sale_cost_basis_is_proportional_to_total_invested() -> None:
    """PNL-2: costBasis = sold / purchaseAmount × totalInvested; profit = net − costBasis;
    change % is the sale price against the average purchase price."""
    result = partial_sale_pnl(
        total_invested_sol=D("1.0"),
        purchase_amount=D("1000"),
        sold_amount=D("250"),
        net_sale_sol=D("0.5"),
        purchase_price=D("0.001"),
        sale_price=D("0.002"),
        sol_usd=D("100"),
    )
    assert (result.cost_basis, result.profit_sol) == (D("0.25"), D("0.25"))
    assert result.change_percent == 100
    assert result.profit_usd == D("25.00")


def test_pnl2_zero_amount_or_price_guards() -> None:
    """PNL-2: costBasis is 0 if purchaseAmount ≤ 0; change % is 0 if purchasePrice ≤ 0."""
    result = partial_sale_pnl(
        total_invested_sol=D("1"),
        purchase_amount=D(0),
        sold_amount=D("5"),
        net_sale_sol=D("0.1"),
        purchase_price=D(0),
        sale_price=D("0.02"),
        sol_usd=D("1"),
    )
    assert (result.cost_basis, result.profit_sol, result.change_percent) == (D(0), D("0.1"), D(0))


def test_pnl3_close_by_take_profit_reports_the_accumulated_realised_profit() -> None:
    """PNL-3: realised = realizedProfitSol; change % = realised / (price × amount) × 100;
    effective sale price = (price × amount + realised) / amount."""
    result = take_profit_close_pnl(
        purchase_price=D("0.001"),
        purchase_amount=D("1000"),
        realized_profit_sol=D("0.4"),
        sol_usd=D("100"),
    )
    assert result.profit_sol == D("0.4")
    assert result.change_percent == 40
    assert result.effective_sale_price == D("0.0014")
    assert result.profit_usd == D("40.0")


def test_pnl4_buy_price_excludes_fees_but_the_debit_includes_them() -> None:
    """PNL-4: purchasePrice = SOL in (fees excluded) / tokens out; the debit and
    totalInvestedSol = totalInputAmount (protocol fee in) + network fee."""
    tokens = tokens_from_base_units(500_000_000, 6)
    result = buy_bookkeeping(
        input_sol=lamports_to_sol(1_000_000_000),
        tokens_out=tokens,
        total_input_sol=lamports_to_sol(1_002_000_000),
        network_fee_sol=D("0.000005"),
    )
    assert tokens == D(500)
    assert result.purchase_price == D("0.002")
    assert result.sol_debited == D("1.002005")


def test_pnl4_without_total_input_the_raw_input_is_debited() -> None:
    """PNL-4: with no totalInputAmount the raw input (plus network fee) is debited."""
    result = buy_bookkeeping(
        input_sol=D("1"), tokens_out=D("10"), total_input_sol=None, network_fee_sol=None
    )
    assert result.sol_debited == D("1") and result.purchase_price == D("0.1")
    with pytest.raises(ValueError):
        buy_bookkeeping(
            input_sol=D("1"), tokens_out=D(0), total_input_sol=None, network_fee_sol=None
        )


def test_pnl5_sale_credit_uses_total_output_minus_network_fee() -> None:
    """PNL-5: credit = totalOutputAmount (protocol fee already out) − network fee."""
    credit = sale_credit(
        out_sol=D("1.0"),
        total_output_sol=D("0.99"),
        protocol_fee_sol=D("0.01"),
        network_fee_sol=D("0.000005"),
    )
    assert credit == D("0.989995")


def test_pnl5_simulation_credit_without_total_deducts_both_fees() -> None:
    """PNL-5: without totalOutputAmount (simulation): out − protocol − network."""
    credit = sale_credit(
        out_sol=D("1.0"),
        total_output_sol=None,
        protocol_fee_sol=D("0.01"),
        network_fee_sol=D("0.000005"),
    )
    assert credit == D("0.989995")


def test_pnl6_unrealised_after_take_profit_sales() -> None:
    """PNL-6: with TP sales, cost = invested − Σ net TP proceeds + realised profit."""
    result = unrealised_pnl(
        current_price=D("0.003"),
        purchase_price=D("0.001"),
        purchase_amount=D("1000"),
        remaining_amount=D("750"),
        total_invested_sol=D("1.0"),
        take_profit_net_proceeds=[D("0.5")],
        realized_profit_sol=D("0.25"),
    )
    assert result.holding == D("750")
    assert result.value == D("2.250")
    assert result.cost == D("0.75")
    assert result.unrealised == D("1.500")


def test_pnl6_unrealised_without_take_profit_is_proportional() -> None:
    """PNL-6: without TP sales, cost = holding / purchaseAmount × invested; a null
    remainingAmount means the whole purchaseAmount is held."""
    result = unrealised_pnl(
        current_price=D("0.0005"),
        purchase_price=D("0.001"),
        purchase_amount=D("1000"),
        remaining_amount=None,
        total_invested_sol=D("1.01"),
    )
    assert (result.holding, result.cost) == (D("1000"), D("1.01"))
    assert result.unrealised == D("-0.5100")


def test_pnl6_legacy_row_without_total_invested_uses_purchase_price() -> None:
    """PNL-6: a legacy row without totalInvested costs purchasePrice × holding."""
    result = unrealised_pnl(
        current_price=D("0.002"),
        purchase_price=D("0.001"),
        purchase_amount=D("1000"),
        remaining_amount=D("400"),
        total_invested_sol=None,
    )
    assert (result.cost, result.unrealised) == (D("0.400"), D("0.400"))


# ---------------------------------------------------------------------------
# FEE-1..FEE-3
# ---------------------------------------------------------------------------


def buy_order(**fields: Any) -> dict[str, Any]:
    """A Jupiter order for SOL → token with a 50 bps SOL platform fee."""
    order = {
        "inputMint": SOL_MINT,
        "outputMint": TOKEN,
        "inAmount": "1000000000",
        "outAmount": "123456",
        "platformFee": {"feeBps": 50, "feeMint": SOL_MINT},
        "signatureFeeLamports": 5000,
        "prioritizationFeeLamports": "10000",
        "rentFeeLamports": None,
    }
    order.update(fields)
    return order


@pytest.mark.parametrize("payload", [None, "text", 42, [1, 2]])
def test_fee1_null_or_non_object_payload_has_no_fees(payload: object) -> None:
    """FEE-1: a null or non-object payload gives {protocol null, network null}."""
    assert extract_jupiter_fees(payload) == JupiterFees(None, None)


def test_fee1_full_shape_uses_order_and_execute_parts() -> None:
    """FEE-1/FEE-2: with orderResponse + executeResponse, the SOL-side amount is the
    execute part's inputAmountResult (SOL is the input)."""
    payload = {
        "orderResponse": buy_order(),
        "executeResponse": {"inputAmountResult": "2000000000", "outputAmountResult": "1"},
    }
    fees = extract_jupiter_fees(payload)
    assert fees.protocol_fee_sol == D("0.01")  # 2e9 lamports × 50 bps / 1e9
    assert fees.network_fee_sol == D("0.000015")


def test_fee1_flat_payload_is_the_order_and_uses_the_quote_amounts() -> None:
    """FEE-1: without those keys the payload is the order (legacy/simulation); FEE-2 then
    uses the quote's inAmount for a SOL input."""
    assert protocol_fee_sol(buy_order()) == D("0.005")


def test_fee1_an_orderless_full_shape_has_no_fees() -> None:
    """FEE-1/FEE-2/FEE-3: an executeResponse without an order gives null for both fees."""
    payload = {"orderResponse": None, "executeResponse": {"inputAmountResult": 1}}
    assert extract_jupiter_fees(payload) == JupiterFees(None, None)


def test_fee2_sell_side_uses_the_output_amount() -> None:
    """FEE-2: when SOL is the output, the SOL side is outputAmountResult (execute) or
    outAmount (quote)."""
    sell = buy_order(inputMint=TOKEN, outputMint=SOL_MINT, outAmount=400_000_000)
    assert protocol_fee_sol(sell) == D("0.002")
    full = {"orderResponse": sell, "executeResponse": {"outputAmountResult": 600_000_000}}
    assert protocol_fee_sol(full) == D("0.003")


def test_fee2_bps_falls_back_to_top_level_fee_bps() -> None:
    """FEE-2: bps = platformFee.feeBps, falling back to feeBps (and mint to feeMint)."""
    order = buy_order(platformFee=None, feeBps="100", feeMint=SOL_MINT)
    assert protocol_fee_sol(order) == D("0.01")


@pytest.mark.parametrize("bps", [None, 0, -5, "abc"])
def test_fee2_missing_or_non_positive_bps_means_zero_fee(bps: object) -> None:
    """FEE-2: bps missing, ≤ 0 or unparsable → the fee is 0 (not null)."""
    assert protocol_fee_sol(buy_order(platformFee={"feeBps": bps})) == 0


def test_fee2_fee_in_another_mint_is_unknown() -> None:
    """FEE-2: a fee mint other than SOL gives null."""
    order = buy_order(platformFee={"feeBps": 50, "feeMint": TOKEN})
    assert protocol_fee_sol(order) is None


def test_fee2_swap_without_sol_on_either_side_is_unknown() -> None:
    """FEE-2: if neither input nor output is SOL, the fee is null."""
    order = buy_order(inputMint=TOKEN, outputMint="AnotherMint111111111111111111111111111111111")
    assert protocol_fee_sol(order) is None


@pytest.mark.parametrize("amount", [None, 0, "0", "not a number"])
def test_fee2_missing_or_zero_sol_amount_is_unknown(amount: object) -> None:
    """FEE-2: a missing or 0 SOL-side amount (unparsable counts as 0) gives null."""
    assert protocol_fee_sol(buy_order(inAmount=amount)) is None


def test_fee2_numeric_strings_are_parsed_like_js_number() -> None:
    """FEE-2: numeric strings parse (including exponent and surrounding spaces)."""
    assert protocol_fee_sol(buy_order(inAmount=" 1e9 ", platformFee={"feeBps": "25"})) == D(
        "0.0025"
    )


def test_fee3_network_fee_sums_the_three_parts() -> None:
    """FEE-3: (signature + prioritization + rent) / 1e9, missing parts 0, strings parsed."""
    assert network_fee_sol(buy_order(rentFeeLamports="2039280")) == D("0.00205428")
    bare = {"inputMint": SOL_MINT, "outputMint": TOKEN}
    assert network_fee_sol(bare) == 0


def test_fee3_network_fee_is_null_only_without_an_order() -> None:
    """FEE-3: the network fee is null only when there is no order part."""
    assert network_fee_sol({"executeResponse": {}}) is None
    assert network_fee_sol({"orderResponse": {}}) == 0
