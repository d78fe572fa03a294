"""The slices of the EVM contract interfaces valux calls (Uniswap V3, WETH9, ERC-20), and
their constants: shared by the Uniswap venue, the pool-price feed and EVM custody.

Hand-written ABI fragments (interfaces are facts, not code: no artifact is copied here).
Function and event names, argument order and types follow the deployed contracts:
SwapRouter02 and QuoterV2 (``@uniswap/swap-router-contracts`` 1.3.1), the V3 factory
(``@uniswap/v3-core`` 1.0.1), WETH9 and ERC-20.
"""

from __future__ import annotations

from typing import Any, Final

from eth_utils.crypto import keccak

__all__ = [
    "ADDRESS_THIS",
    "DEPOSIT_TOPIC",
    "ERC20_ABI",
    "FACTORY_ABI",
    "FEE_TIERS",
    "MAX_UINT256",
    "MSG_SENDER",
    "QUOTER_V2_ABI",
    "SWAP_ROUTER02_ABI",
    "TRANSFER_TOPIC",
    "WETH9_ABI",
    "WITHDRAWAL_TOPIC",
    "ZERO_ADDRESS",
]

FEE_TIERS: Final = (500, 3000, 10000)
"""The Uniswap V3 fee tiers quoted by default, in hundredths of a basis point (0.05 %,
0.3 %, 1 %)."""

MAX_UINT256: Final = 2**256 - 1
ZERO_ADDRESS: Final = "0x0000000000000000000000000000000000000000"
MSG_SENDER: Final = "0x0000000000000000000000000000000000000001"
"""SwapRouter02's recipient constant for "the caller" (``Constants.MSG_SENDER``)."""
ADDRESS_THIS: Final = "0x0000000000000000000000000000000000000002"
"""SwapRouter02's recipient constant for "the router itself" (``Constants.ADDRESS_THIS``),
used to unwrap WETH before paying ETH out."""

TRANSFER_TOPIC: Final = "0x" + keccak(text="Transfer(address,address,uint256)").hex()
DEPOSIT_TOPIC: Final = "0x" + keccak(text="Deposit(address,uint256)").hex()
WITHDRAWAL_TOPIC: Final = "0x" + keccak(text="Withdrawal(address,uint256)").hex()


def _fn(
    name: str,
    inputs: list[dict[str, Any]],
    outputs: list[dict[str, Any]],
    mutability: str = "view",
) -> dict[str, Any]:
    return {
        "type": "function",
        "name": name,
        "stateMutability": mutability,
        "inputs": inputs,
        "outputs": outputs,
    }


def _arg(name: str, kind: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": kind, **extra}


def _event(name: str, inputs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "event", "name": name, "anonymous": False, "inputs": inputs}


ERC20_ABI: Final[list[dict[str, Any]]] = [
    _fn("balanceOf", [_arg("owner", "address")], [_arg("", "uint256")]),
    _fn("allowance", [_arg("owner", "address"), _arg("spender", "address")], [_arg("", "uint256")]),
    _fn(
        "approve",
        [_arg("spender", "address"), _arg("amount", "uint256")],
        [_arg("", "bool")],
        "nonpayable",
    ),
    _fn(
        "transfer",
        [_arg("to", "address"), _arg("amount", "uint256")],
        [_arg("", "bool")],
        "nonpayable",
    ),
    _fn("decimals", [], [_arg("", "uint8")]),
    _fn("symbol", [], [_arg("", "string")]),
    _event(
        "Transfer",
        [
            _arg("from", "address", indexed=True),
            _arg("to", "address", indexed=True),
            _arg("value", "uint256", indexed=False),
        ],
    ),
]

WETH9_ABI: Final[list[dict[str, Any]]] = [
    *ERC20_ABI,
    _fn("deposit", [], [], "payable"),
    _fn("withdraw", [_arg("wad", "uint256")], [], "nonpayable"),
    _event(
        "Deposit", [_arg("dst", "address", indexed=True), _arg("wad", "uint256", indexed=False)]
    ),
    _event(
        "Withdrawal",
        [_arg("src", "address", indexed=True), _arg("wad", "uint256", indexed=False)],
    ),
]

_QUOTE_SINGLE_PARAMS: Final = _arg(
    "params",
    "tuple",
    components=[
        _arg("tokenIn", "address"),
        _arg("tokenOut", "address"),
        _arg("amountIn", "uint256"),
        _arg("fee", "uint24"),
        _arg("sqrtPriceLimitX96", "uint160"),
    ],
)

QUOTER_V2_ABI: Final[list[dict[str, Any]]] = [
    _fn(
        "quoteExactInputSingle",
        [_QUOTE_SINGLE_PARAMS],
        [
            _arg("amountOut", "uint256"),
            _arg("sqrtPriceX96After", "uint160"),
            _arg("initializedTicksCrossed", "uint32"),
            _arg("gasEstimate", "uint256"),
        ],
        "nonpayable",
    ),
    _fn("factory", [], [_arg("", "address")]),
    _fn("WETH9", [], [_arg("", "address")]),
]

_EXACT_INPUT_SINGLE_PARAMS: Final = _arg(
    "params",
    "tuple",
    components=[
        _arg("tokenIn", "address"),
        _arg("tokenOut", "address"),
        _arg("fee", "uint24"),
        _arg("recipient", "address"),
        _arg("amountIn", "uint256"),
        _arg("amountOutMinimum", "uint256"),
        _arg("sqrtPriceLimitX96", "uint160"),
    ],
)

SWAP_ROUTER02_ABI: Final[list[dict[str, Any]]] = [
    _fn(
        "exactInputSingle",
        [_EXACT_INPUT_SINGLE_PARAMS],
        [_arg("amountOut", "uint256")],
        "payable",
    ),
    _fn(
        "multicall",
        [_arg("deadline", "uint256"), _arg("data", "bytes[]")],
        [_arg("", "bytes[]")],
        "payable",
    ),
    _fn(
        "unwrapWETH9",
        [_arg("amountMinimum", "uint256"), _arg("recipient", "address")],
        [],
        "payable",
    ),
    _fn("refundETH", [], [], "payable"),
    _fn("factory", [], [_arg("", "address")]),
    _fn("WETH9", [], [_arg("", "address")]),
]

FACTORY_ABI: Final[list[dict[str, Any]]] = [
    _fn(
        "getPool",
        [_arg("tokenA", "address"), _arg("tokenB", "address"), _arg("fee", "uint24")],
        [_arg("", "address")],
    ),
]
