"""Jupiter on Solana: quotes and swaps through Jupiter's Swap API, sent exactly once.

- :mod:`.client` — :class:`JupiterClient`, aiohttp over ``/swap/v1/quote`` and
  ``/swap/v1/swap`` (``x-api-key``, timeouts, retries with backoff, errors mapped to the
  venue errors; :func:`should_retry`).
- :mod:`.sender` — :class:`SolanaSender`, one wallet's signing, journal-before-send
  (``on_attempt``), rebroadcasting and resolution by signature (the wallet host owns
  one per Solana wallet; :meth:`Attempt.from_journal` rebuilds it after a restart).
- :mod:`.venue` — :class:`JupiterVenue`, the :class:`~valux.venues.base.Venue` for
  SOL ⇄ token swaps: prepare (the spend policy's numbers) → sign → follow → book the
  real amounts from ``getTransaction``.
- :mod:`.chain` — :class:`SolanaRpc` (the RPC calls, over solana-py's ``AsyncClient``)
  and :func:`read_holdings` (a wallet's SOL and token balances, for reconciliation);
  :mod:`.booking` — what a landed transaction moved; :mod:`.errors` — the errors.

What the wallet host provides and keeps (one Solana wallet):

1. ``on_attempt(intent_id, signature, blockhash, last_valid_block_height, raw_fields)``
   journals the attempt (synchronously committed) before it returns; the sender sends
   only after it returned. Persist all five values as given.
2. On restart, rebuild ``SolanaSender(rpc, address=…, on_attempt=…,
   attempts=[Attempt.from_journal(*row) for row in journaled])`` *before* serving, then
   resolve each pending intent with ``await venue.status(intent_id)`` (landed → its
   booking; expired → FAILED, final; in flight → PENDING, ask again) — or
   ``await venue.submit(intent)`` to carry it on (it follows the journaled attempts,
   rebroadcasting their signed bytes, and re-signs only when all are provably expired).
3. ``signer(side)`` returns the wallet's solders ``Keypair`` (``KeyVault.signer(wallet_id,
   "entry" | "exit")``); ``before_sign(intent, prepared)`` runs the spend policy on
   ``prepared.price_impact`` and ``prepared.priority_fee_lamports`` and raises the
   refusal. Daily spend: count a buy when its first attempt is journaled
   (``raw_fields["number"] == 1``), not again on a re-sign.
4. Book a FILLED status as usual; for a FAILED one, also book
   :attr:`SwapResult.fee_paid_lamports` (``venue.result(intent_id)``) as a network fee —
   a transaction that landed with an error still paid it.
"""

from valux.venues.jupiter.booking import SwapFlows, swap_flows
from valux.venues.jupiter.chain import (
    LAMPORTS_PER_SOL,
    TOKEN_2022_PROGRAM,
    TOKEN_PROGRAM,
    WSOL_MINT,
    Holdings,
    MintInfo,
    RpcError,
    SolanaRpc,
    TokenAccount,
    TokenHolding,
    lamports_to_sol,
    read_holdings,
)
from valux.venues.jupiter.client import (
    MAINNET_URL,
    JupiterClient,
    JupiterQuote,
    JupiterSwap,
)
from valux.venues.jupiter.errors import (
    JupiterRejected,
    JupiterUnavailable,
    ResignRefused,
    SignerMismatch,
    SlippageExceeded,
    should_retry,
    tx_error_reason,
)
from valux.venues.jupiter.sender import (
    Attempt,
    Landing,
    OnAttempt,
    PreflightRefused,
    Resolution,
    SenderSettings,
    SignatureMissing,
    SolanaSender,
)
from valux.venues.jupiter.venue import (
    BeforeSign,
    JupiterConfig,
    JupiterVenue,
    NotExecutable,
    Prepared,
    SignerFor,
    SwapResult,
    associated_token_address,
    compute_budget,
)

__all__ = [
    "LAMPORTS_PER_SOL",
    "MAINNET_URL",
    "TOKEN_2022_PROGRAM",
    "TOKEN_PROGRAM",
    "WSOL_MINT",
    "Attempt",
    "BeforeSign",
    "Holdings",
    "JupiterClient",
    "JupiterConfig",
    "JupiterQuote",
    "JupiterRejected",
    "JupiterSwap",
    "JupiterUnavailable",
    "JupiterVenue",
    "Landing",
    "MintInfo",
    "NotExecutable",
    "OnAttempt",
    "PreflightRefused",
    "Prepared",
    "ResignRefused",
    "Resolution",
    "RpcError",
    "SenderSettings",
    "SignatureMissing",
    "SignerFor",
    "SignerMismatch",
    "SlippageExceeded",
    "SolanaRpc",
    "SolanaSender",
    "SwapFlows",
    "SwapResult",
    "TokenAccount",
    "TokenHolding",
    "associated_token_address",
    "compute_budget",
    "lamports_to_sol",
    "read_holdings",
    "should_retry",
    "swap_flows",
    "tx_error_reason",
]
