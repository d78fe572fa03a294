"""Uniswap V3 on an EVM chain (Arbitrum): quotes, approvals and swaps through SwapRouter02.

- :mod:`.sender` — :class:`TxSender`, one wallet's nonce, signing, journal-before-send,
  replacement of stuck transactions and outcome lookup by hash (the wallet host owns one
  per wallet and chain).
- :mod:`.venue` — :class:`UniswapVenue`, the :class:`~valux.venues.base.Venue` that quotes
  with QuoterV2, approves, swaps and books from the receipt's ``Transfer`` logs.
- :mod:`.fees` — EIP-1559 fees from ``eth_feeHistory``; :mod:`.receipts` — log parsing;
  :mod:`.errors` — refusals and revert decoding; :mod:`.abi` — the interfaces called.
"""

from valux.venues.uniswap.errors import (
    ChainIdMismatch,
    NotStarted,
    SendRejected,
    SignerMismatch,
    decode_revert,
)
from valux.venues.uniswap.fees import Fees, FeeSettings, bumped, fees_from_history
from valux.venues.uniswap.receipts import TokenFlows, gas_paid_wei, token_flows
from valux.venues.uniswap.sender import (
    Attempt,
    GroupState,
    Lookup,
    OnAttempt,
    RecoveryReport,
    SenderSettings,
    TxCall,
    TxSender,
    TxSigner,
)
from valux.venues.uniswap.venue import Route, SignerFor, SwapResult, UniswapConfig, UniswapVenue

__all__ = [
    "Attempt",
    "ChainIdMismatch",
    "FeeSettings",
    "Fees",
    "GroupState",
    "Lookup",
    "NotStarted",
    "OnAttempt",
    "RecoveryReport",
    "Route",
    "SendRejected",
    "SenderSettings",
    "SignerFor",
    "SignerMismatch",
    "SwapResult",
    "TokenFlows",
    "TxCall",
    "TxSender",
    "TxSigner",
    "UniswapConfig",
    "UniswapVenue",
    "bumped",
    "decode_revert",
    "fees_from_history",
    "gas_paid_wei",
    "token_flows",
]
