"""Jupiter on Solana: SOL ⇄ token swaps that land exactly once and book what really moved.

Contract (on top of :mod:`valux.venues.base` and :mod:`valux.venues.jupiter.sender`):

- **Intents.** The quote asset is SOL (``quote_symbol``, or the wrapped-SOL mint);
  ``token`` is the token's mint (base58). A BUY spends ``amount`` SOL *all fees
  included*; a SELL sells ``amount`` tokens, floored to the mint's decimals (read on
  chain with ``getAccountInfo``/``jsonParsed``, cached). An unknown or non-mint address,
  a bad amount or another quote asset is :class:`~valux.venues.base.OrderRejected`.
- **Sizing a buy.** The SOL swapped is ``amount`` minus a fee reserve: the signature
  fees (``signature_fee_lamports × fee_reserve_signatures``), the priority-fee cap
  (``max_priority_fee_lamports``) and, when the wallet has no associated token account
  for the mint yet, that account's rent. The swap's real cost is at most the reserve,
  so the SOL debited never exceeds ``amount``; what the reserve did not use stays in
  the wallet (the booked ``quote_amount`` is the real debit, ≤ ``amount``).
- **Prepare, check, sign.** :meth:`JupiterVenue.prepare` quotes (``GET /quote``), builds
  (``POST /swap``: dynamic compute-unit limit, priority fee at ``priority_level`` capped
  at ``max_priority_fee_lamports``, wrap/unwrap SOL) and reads what the spend policy
  needs, *from the transaction itself*: the priority fee it will pay
  (``ceil(limit × µlamports / 10⁶)`` from its compute-budget instructions) and the
  quote's price impact — a :class:`Prepared`. Nothing is signed. The wallet runs
  ``custody.policy.check`` on those numbers. Two ways to use it:

  1. ``before_sign`` (constructor): ``await before_sign(intent, prepared)`` runs before
     *every* new transaction is signed — the first one and any re-signed one after a
     blockhash expired (its fee and impact are new). Raising refuses: before the first
     signature the exception propagates from :meth:`submit` (nothing signed); for a
     re-sign the intent is FAILED with the refusal as its reason (nothing landed).
  2. Two steps: ``prepared = await venue.prepare(intent)``, check, then
     ``await venue.submit(intent, prepared=prepared)``. ``before_sign`` (if set) still
     runs, and re-signs need it, so a wallet using two steps should set it too.

  Before signing, :meth:`prepare` also refuses (:class:`NotExecutable`, answered by
  :meth:`submit` as FAILED with nothing signed): too little SOL or tokens on chain, a
  Jupiter simulation error, a priority fee above the cap, more signatures than the fee
  reserve covers. A slippage refusal at ``/swap`` (the pool moved past ``slippageBps``
  between quote and swap) is FAILED too.
- **Submit** (idempotent by ``intent_id``; concurrent duplicates share one execution,
  shielded from a caller's cancellation): prepare → ``before_sign`` → the sender signs,
  journals (``on_attempt``), sends → the sender follows it (rebroadcasting the same
  bytes) → booked. An intent that already has attempts (after a restart, or a second
  call) is *never* swapped anew: its attempts are resolved first — landed → booked;
  in flight → followed; all expired with none landed → a fresh quote and transaction
  is signed (a new attempt, journaled like the first), at most ``max_attempts``
  transactions per intent, then FAILED. A preflight refusal of a send is FAILED (the
  transaction was not forwarded). Once an attempt is signed, trouble following it is
  answered UNKNOWN (ask :meth:`status`), never raised.
- **Booking** (real amounts, from ``getTransaction`` at the sender's landed commitment,
  :func:`~valux.venues.jupiter.booking.swap_flows`; all in lamports / base units, then
  as ``Decimal``):

  - ``base_amount``: BUY the wallet's token delta (received); SELL minus it (sold).
  - ``quote_amount``: BUY the SOL debited, −(Δ wallet lamports + Δ wrapped SOL) = swap
    in + transaction fee + rent locked; SELL the SOL credited, Δ wallet lamports + Δ
    wrapped SOL = swap out − transaction fee − rent locked.
  - ``network_fee``: ``meta.fee`` (signatures + priority fee) + the rent newly locked in
    the wallet's token accounts (a new associated account; negative when one was closed)
    — the parts of FEE-3.
  - ``fee``: Jupiter's platform fee in SOL (0 without one, and on the sandbox); the AMM
    fees are part of the price.
  - ``price``: BUY (quote − network_fee − fee) / base; SELL (quote + network_fee + fee) /
    base — the swap's own rate, fees excluded.

  So the journal's SOL moves by exactly what ``getBalance`` (plus wrapped SOL) shows and
  its token balance by exactly the token account's change: reconciliation matches to
  the lamport and base unit. A transaction that landed with an error is FAILED (every
  amount 0, as the base contract says) but it *did* pay its fee:
  :attr:`SwapResult.fee_paid_lamports` (and the reason) carry it, and the wallet must
  book it as a network-fee expense or reconciliation will see a loss.
- **Status**: memory first; else the sender's attempts: none → NOT_FOUND; landed →
  booked; all expired → FAILED ("expired", final — after that a :meth:`submit` of the
  same id answers it, it does not re-sign); otherwise PENDING. ``status`` never sends
  or signs anything.
- **Errors**: raised only before anything was signed (plus what the wallet's ``signer``,
  ``before_sign`` and ``on_attempt`` raise, unchanged): OrderRejected for an order that
  cannot work as given, VenueUnavailable when Jupiter or the node cannot be asked.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal, localcontext
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field
from solders.keypair import Keypair
from solders.message import Message, MessageV0, MessageV1
from solders.pubkey import Pubkey

from valux.venues.base import (
    OrderIntent,
    OrderRejected,
    OrderState,
    OrderStatus,
    Quote,
    Side,
    VenueUnavailable,
)
from valux.venues.jupiter.booking import SwapFlows, swap_flows
from valux.venues.jupiter.chain import (
    TOKEN_ACCOUNT_SIZE,
    TOKEN_PROGRAM,
    WSOL_MINT,
    Holdings,
    MintInfo,
    SolanaRpc,
    read_holdings,
)
from valux.venues.jupiter.client import JupiterClient, JupiterQuote, JupiterSwap
from valux.venues.jupiter.errors import (
    JupiterUnavailable,
    ResignRefused,
    SignerMismatch,
    SlippageExceeded,
    tx_error_reason,
)
from valux.venues.jupiter.sender import (
    Landing,
    PreflightRefused,
    Resolution,
    SignatureMissing,
    SolanaSender,
    decode_transaction,
)

__all__ = [
    "BeforeSign",
    "JupiterConfig",
    "JupiterVenue",
    "NotExecutable",
    "Prepared",
    "SignerFor",
    "SwapResult",
    "associated_token_address",
    "compute_budget",
]

SignerFor = Callable[[Side], Keypair]
"""The wallet's signer for an order side (BUY = an entry, SELL = an exit); may raise
(e.g. :class:`~valux.custody.vault.Locked`)."""

ATA_PROGRAM: Final = Pubkey.from_string("ATokenGPvbdGVxr1b2hvZbsiqW5xWH25efTNsLJA8knL")
COMPUTE_BUDGET_PROGRAM: Final = Pubkey.from_string("ComputeBudget111111111111111111111111111111")
_MAX_COMPUTE_UNITS: Final = 1_400_000
_DEFAULT_UNITS_PER_INSTRUCTION: Final = 200_000
_ZERO: Final = Decimal(0)


class JupiterConfig(BaseModel):
    """How the venue trades (module contract). Frozen, no unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    quote_symbol: str = Field(default="SOL", min_length=1)
    """The name intents give the quote asset (the wrapped-SOL mint is accepted too)."""
    slippage_bps: int = Field(default=50, ge=0, lt=10_000)
    priority_level: Literal["medium", "high", "veryHigh"] = "veryHigh"
    max_priority_fee_lamports: int = Field(default=1_000_000, ge=0)
    """The cap sent to Jupiter (``maxLamports``) and checked on the transaction."""
    signature_fee_lamports: int = Field(default=5_000, ge=0)
    fee_reserve_signatures: int = Field(default=2, ge=1)
    """Signatures a buy's fee reserve pays for (mainnet Jupiter: 1; the sandbox: 2)."""
    max_attempts: int = Field(default=3, ge=1)
    """Signed transactions per intent (the first and the re-signed ones) before FAILED."""
    refuse_simulation_errors: bool = True
    """Answer FAILED, unsigned, when ``/swap`` reports a ``simulationError``."""
    booking_polls: int = Field(default=20, ge=1)
    """How often to ask ``getTransaction`` for a landed signature before UNKNOWN."""


class NotExecutable(OrderRejected):
    """The order cannot be executed now (too little SOL or tokens, a failed simulation, a
    fee above the cap); :meth:`JupiterVenue.submit` answers it as FAILED, unsigned."""

    code = "JUPITER_NOT_EXECUTABLE"


@dataclass(frozen=True, slots=True, kw_only=True)
class Prepared:
    """A quoted, built, *unsigned* swap and the numbers the spend policy checks."""

    intent_id: str
    side: Side
    token: str
    token_decimals: int
    amount: Decimal
    """The intent's amount (SOL for a BUY, tokens for a SELL)."""
    amount_in: int
    """Base units swapped in: lamports (BUY) or token units (SELL)."""
    quote: JupiterQuote
    swap: JupiterSwap
    blockhash: str
    last_valid_block_height: int
    priority_fee_lamports: int
    """What the transaction's compute-budget instructions make it pay (policy rule)."""
    compute_unit_limit: int
    compute_unit_price_micro_lamports: int
    signature_fee_lamports: int
    rent_reserve_lamports: int
    """Rent of the token account this buy creates (0 when it exists)."""
    price_impact: Decimal
    """The quote's price impact, a fraction (policy rule)."""
    slippage_bps: int

    @property
    def transaction(self) -> str:
        """The swap transaction, base64, unsigned by the wallet."""
        return self.swap.swap_transaction

    @property
    def network_fee_lamports(self) -> int:
        """Signature fees + priority fee + rent reserve: the most the chain costs."""
        return self.signature_fee_lamports + self.priority_fee_lamports + self.rent_reserve_lamports

    def context(self, intent: OrderIntent) -> dict[str, Any]:
        """What booking needs after a restart, journaled with the attempt (strings for
        amounts: they may exceed 64 bits)."""
        return {
            "side": self.side.value,
            "token": self.token,
            "token_decimals": self.token_decimals,
            "wallet_id": intent.wallet_id,
            "quote_asset": intent.quote_asset,
            "amount": str(self.amount),
            "amount_in": str(self.amount_in),
            "input_mint": self.quote.input_mint,
            "output_mint": self.quote.output_mint,
            "quoted_out": str(self.quote.out_amount),
            "min_out": str(self.quote.other_amount_threshold),
            "slippage_bps": self.slippage_bps,
            "price_impact": str(self.price_impact),
            "priority_fee_lamports": self.priority_fee_lamports,
            "platform_fee_amount": str(self.quote.platform_fee_amount),
            "platform_fee_bps": self.quote.platform_fee_bps,
        }


BeforeSign = Callable[[OrderIntent, Prepared], Awaitable[None]]
"""``await before_sign(intent, prepared)`` before each new transaction is signed; raise
to refuse (e.g. ``custody.policy.check(...).error()``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SwapResult:
    """What one intent did on chain, in lamports and base units (richer than an
    :class:`~valux.venues.base.OrderStatus`)."""

    intent_id: str
    state: OrderState
    side: Side | None = None
    token: str = ""
    token_decimals: int = 0
    base_units: int = 0
    quote_lamports: int = 0
    """BUY: lamports debited; SELL: lamports credited (module contract)."""
    swap_lamports: int = 0
    tx_fee_lamports: int = 0
    rent_lamports: int = 0
    platform_fee_lamports: int = 0
    fee_paid_lamports: int = 0
    """A FAILED transaction that landed: the SOL it still cost (book it as a fee)."""
    signature: str | None = None
    slot: int | None = None
    attempts: int = 0
    reason: str | None = None
    ts: float

    def status(self) -> OrderStatus:
        """The :class:`~valux.venues.base.OrderStatus` of this result."""
        if self.state is not OrderState.FILLED or self.side is None:
            return OrderStatus(
                intent_id=self.intent_id,
                state=self.state,
                reason=self.reason,
                ts=self.ts,
                tx_id=self.signature,
            )
        base = Decimal(self.base_units).scaleb(-self.token_decimals)
        quote = Decimal(self.quote_lamports).scaleb(-9)
        network_fee = Decimal(self.tx_fee_lamports + self.rent_lamports).scaleb(-9)
        fee = Decimal(self.platform_fee_lamports).scaleb(-9)
        if not base:
            price = _ZERO
        elif self.side is Side.BUY:
            price = (quote - network_fee - fee) / base
        else:
            price = (quote + network_fee + fee) / base
        return OrderStatus(
            intent_id=self.intent_id,
            state=OrderState.FILLED,
            base_amount=base,
            quote_amount=quote,
            price=price,
            fee=fee,
            network_fee=network_fee,
            reason=self.reason,
            ts=self.ts,
            tx_id=self.signature,
        )


def associated_token_address(owner: str, mint: str, token_program: str = TOKEN_PROGRAM) -> str:
    """The associated token account of ``owner`` for ``mint`` under ``token_program``."""
    seeds = [
        bytes(Pubkey.from_string(owner)),
        bytes(Pubkey.from_string(token_program)),
        bytes(Pubkey.from_string(mint)),
    ]
    return str(Pubkey.find_program_address(seeds, ATA_PROGRAM)[0])


def compute_budget(message: Message | MessageV0 | MessageV1) -> tuple[int, int]:
    """``(compute-unit limit, µlamports per unit)`` a message sets, with the runtime's
    defaults (200,000 units per other instruction, at most 1.4 M; price 0)."""
    keys = list(message.account_keys)
    limit: int | None = None
    price = 0
    others = 0
    for ix in message.instructions:
        program = keys[ix.program_id_index] if ix.program_id_index < len(keys) else None
        data = bytes(ix.data)
        if program != COMPUTE_BUDGET_PROGRAM:
            others += 1
        elif data[:1] == b"\x02" and len(data) >= 5:
            limit = struct.unpack_from("<I", data, 1)[0]
        elif data[:1] == b"\x03" and len(data) >= 9:
            price = struct.unpack_from("<Q", data, 1)[0]
    if limit is None:
        limit = _DEFAULT_UNITS_PER_INSTRUCTION * others
    return min(limit, _MAX_COMPUTE_UNITS), price


def _units(amount: Decimal, decimals: int) -> int:
    with localcontext() as ctx:
        ctx.prec = 80
        return int(amount.scaleb(decimals).to_integral_value(rounding=ROUND_FLOOR))


def _describe(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    code = getattr(exc, "code", None)
    return f"{code}: {text}" if isinstance(code, str) and code not in text else str(text)


class JupiterVenue:
    """The Jupiter venue of one Solana wallet (module contract).

    One instance per wallet; it shares the wallet's :class:`SolanaSender`.
    """

    name = "jupiter"

    def __init__(
        self,
        client: JupiterClient,
        rpc: SolanaRpc,
        config: JupiterConfig | None = None,
        *,
        sender: SolanaSender,
        signer: SignerFor,
        before_sign: BeforeSign | None = None,
        slippage_bps: Callable[[OrderIntent], int] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.rpc = rpc
        self.config = config or JupiterConfig()
        self.sender = sender
        self.signer = signer
        self.before_sign = before_sign
        self.slippage_bps = slippage_bps
        self.clock = clock
        self.wallet = sender.address
        self._mints: dict[str, MintInfo] = {}
        self._results: dict[str, SwapResult] = {}
        self._running: dict[str, asyncio.Future[SwapResult]] = {}

    # -- reads ---------------------------------------------------------------------------

    async def mint(self, token: str) -> MintInfo:
        """The mint's decimals and program (cached). OrderRejected if it is not a mint."""
        token = self._token(token)
        if token not in self._mints:
            info = await self.rpc.mint_info(token)
            if info is None:
                raise OrderRejected(f"{token} is not a token mint on this chain", self.name)
            self._mints[token] = info
        return self._mints[token]

    async def holdings(self) -> Holdings:
        """What the chain says this wallet holds (for reconciliation)."""
        return await read_holdings(self.rpc, self.wallet)

    async def _lamports(self, address: str) -> int:
        return (await self.rpc.balance(address))[0]

    def _token(self, token: str) -> str:
        try:
            key = Pubkey.from_string(token)
        except (ValueError, TypeError):
            raise OrderRejected(
                f"token must be a base58 mint address, got {token!r}", self.name
            ) from None
        text = str(key)
        if text == WSOL_MINT:
            raise OrderRejected("the token is the quote asset (wrapped SOL) itself", self.name)
        return text

    def _check_intent(self, intent: OrderIntent) -> None:
        symbol = intent.quote_asset.upper() == self.config.quote_symbol.upper()
        if not symbol and intent.quote_asset != WSOL_MINT:  # mints are case-sensitive
            raise OrderRejected(
                f"this venue trades against {self.config.quote_symbol}, the intent is quoted "
                f"in {intent.quote_asset}",
                self.name,
            )
        self._token(intent.token)
        if not intent.amount.is_finite() or intent.amount <= 0:
            raise OrderRejected(
                f"amount must be a finite Decimal > 0, got {intent.amount!r}", self.name
            )

    def _bps(self, intent: OrderIntent | None) -> int:
        bps = (
            self.config.slippage_bps
            if self.slippage_bps is None or intent is None
            else self.slippage_bps(intent)
        )
        if not 0 <= bps < 10_000:
            raise OrderRejected(f"slippage bound {bps} bps is outside [0, 10000)", self.name)
        return bps

    # -- sizing --------------------------------------------------------------------------

    @property
    def _signature_reserve(self) -> int:
        return self.config.signature_fee_lamports * self.config.fee_reserve_signatures

    async def _rent_reserve(self, mint: MintInfo) -> int:
        """The token account's rent when the wallet has no associated account for it."""
        ata = associated_token_address(self.wallet, mint.mint, mint.program)
        if await self._lamports(ata) > 0:
            return 0
        return await self.rpc.rent_exempt(TOKEN_ACCOUNT_SIZE)

    def _buy_in(self, amount: Decimal, rent_reserve: int) -> int:
        reserve = self._signature_reserve + self.config.max_priority_fee_lamports + rent_reserve
        amount_in = _units(amount, 9) - reserve
        if amount_in <= 0:
            raise OrderRejected(
                f"a buy of {amount} SOL does not cover the fee reserve of {reserve} lamports "
                f"(signatures {self._signature_reserve}, priority fee cap "
                f"{self.config.max_priority_fee_lamports}, token account rent {rent_reserve})",
                self.name,
            )
        return amount_in

    # -- quote -----------------------------------------------------------------------------

    async def quote(self, side: Side, token: str, amount: Decimal) -> Quote:
        """What an order would do now (module contract): Jupiter's quote for the amount
        this venue would swap, with the fee reserve as the network-fee estimate."""
        side = Side(side)
        if not isinstance(amount, Decimal) or not amount.is_finite() or amount <= 0:
            raise OrderRejected(f"amount must be a finite Decimal > 0, got {amount!r}", self.name)
        mint = await self.mint(token)
        reserve = self._signature_reserve + self.config.max_priority_fee_lamports
        if side is Side.BUY:
            rent = await self._rent_reserve(mint)
            amount_in = self._buy_in(amount, rent)
            reserve += rent
            found = await self.client.quote(
                input_mint=WSOL_MINT,
                output_mint=mint.mint,
                amount=amount_in,
                slippage_bps=self._bps(None),
            )
            base = Decimal(found.out_amount).scaleb(-mint.decimals)
            fee_lamports = _platform_fee_lamports(
                Side.BUY, found.platform_fee_amount, amount_in, found.out_amount
            )
            price = (Decimal(amount_in - fee_lamports).scaleb(-9) / base) if base else _ZERO
            quote_amount = amount
        else:
            units = _units(amount, mint.decimals)
            if units <= 0:
                raise OrderRejected(f"amount {amount} is below one base unit", self.name)
            found = await self.client.quote(
                input_mint=mint.mint,
                output_mint=WSOL_MINT,
                amount=units,
                slippage_bps=self._bps(None),
            )
            base = Decimal(units).scaleb(-mint.decimals)
            fee_lamports = found.platform_fee_amount
            price = Decimal(found.out_amount + fee_lamports).scaleb(-9) / base
            quote_amount = Decimal(found.out_amount - reserve).scaleb(-9)
        return Quote(
            side=side,
            token=mint.mint,
            amount=amount,
            price=price,
            price_impact=float(found.price_impact),
            fee=Decimal(fee_lamports).scaleb(-9),
            network_fee=Decimal(reserve).scaleb(-9),
            base_amount=base,
            quote_amount=quote_amount,
            ts=self.clock(),
        )

    # -- prepare ---------------------------------------------------------------------------

    async def prepare(self, intent: OrderIntent) -> Prepared:
        """Quote and build ``intent``'s swap, unsigned (module contract).

        Raises NotExecutable / SlippageExceeded (submit answers FAILED), OrderRejected,
        VenueUnavailable.
        """
        self._check_intent(intent)
        side = intent.side
        mint = await self.mint(intent.token)
        bps = self._bps(intent)
        lamports = await self._lamports(self.wallet)
        wsol_ata = associated_token_address(self.wallet, WSOL_MINT)
        transient = (
            0
            if await self._lamports(wsol_ata) > 0
            else await self.rpc.rent_exempt(TOKEN_ACCOUNT_SIZE)
        )
        cap = self.config.max_priority_fee_lamports
        if side is Side.BUY:
            rent_reserve = await self._rent_reserve(mint)
            amount_in = self._buy_in(intent.amount, rent_reserve)
            needed = _units(intent.amount, 9) + transient
            if lamports < needed:
                raise NotExecutable(
                    f"insufficient SOL: the wallet holds {lamports} lamports, a buy of "
                    f"{intent.amount} SOL needs {needed} (with {transient} of temporary "
                    "wrapped-SOL account rent)",
                    self.name,
                )
            input_mint, output_mint = WSOL_MINT, mint.mint
        else:
            rent_reserve = 0
            amount_in = _units(intent.amount, mint.decimals)
            if amount_in <= 0:
                raise OrderRejected(f"amount {intent.amount} is below one base unit", self.name)
            ata = associated_token_address(self.wallet, mint.mint, mint.program)
            held = sum(
                a.amount
                for a in await self.rpc.token_accounts(self.wallet, mint=mint.mint)
                if a.address == ata
            )
            if held < amount_in:
                raise NotExecutable(
                    f"insufficient {mint.mint}: the wallet's token account holds {held} base "
                    f"units, the sell needs {amount_in}",
                    self.name,
                )
            needed = self._signature_reserve + cap + transient
            if lamports < needed:
                raise NotExecutable(
                    f"insufficient SOL for the fees: the wallet holds {lamports} lamports, "
                    f"a sell needs up to {needed}",
                    self.name,
                )
            input_mint, output_mint = mint.mint, WSOL_MINT
        found = await self.client.quote(
            input_mint=input_mint, output_mint=output_mint, amount=amount_in, slippage_bps=bps
        )
        if found.in_amount != amount_in or found.input_mint != input_mint:
            raise JupiterUnavailable(
                f"jupiter: the quote is for {found.in_amount} of {found.input_mint}, "
                f"not {amount_in} of {input_mint}"
            )
        built = await self.client.swap(
            user_public_key=self.wallet,
            quote=found,
            max_priority_fee_lamports=cap,
            priority_level=self.config.priority_level,
        )
        if built.simulation_error is not None and self.config.refuse_simulation_errors:
            error = built.simulation_error.get("error") or built.simulation_error
            raise NotExecutable(f"Jupiter's simulation of the swap failed: {error}", self.name)
        tx = decode_transaction(built.swap_transaction)
        message = tx.message
        limit, price = compute_budget(message)
        priority = -(-limit * price // 1_000_000)
        if priority > cap:
            raise NotExecutable(
                f"the swap transaction sets a priority fee of {priority} lamports, above the "
                f"cap of {cap}",
                self.name,
            )
        signatures = message.header.num_required_signatures
        signature_fee = signatures * self.config.signature_fee_lamports
        if side is Side.BUY and signature_fee > self._signature_reserve:
            raise NotExecutable(
                f"the swap transaction needs {signatures} signatures; the fee reserve covers "
                f"{self.config.fee_reserve_signatures}",
                self.name,
            )
        return Prepared(
            intent_id=intent.intent_id,
            side=side,
            token=mint.mint,
            token_decimals=mint.decimals,
            amount=intent.amount,
            amount_in=amount_in,
            quote=found,
            swap=built,
            blockhash=str(message.recent_blockhash),
            last_valid_block_height=built.last_valid_block_height,
            priority_fee_lamports=priority,
            compute_unit_limit=limit,
            compute_unit_price_micro_lamports=price,
            signature_fee_lamports=signature_fee,
            rent_reserve_lamports=rent_reserve,
            price_impact=found.price_impact,
            slippage_bps=bps,
        )

    # -- submit / status --------------------------------------------------------------------

    async def submit(self, intent: OrderIntent, *, prepared: Prepared | None = None) -> OrderStatus:
        """Place ``intent``; idempotent by ``intent_id`` (module contract). ``prepared``:
        a :meth:`prepare` result for this intent, used for its first transaction only
        (ignored when the intent already has attempts or an outcome)."""
        if prepared is not None and prepared.intent_id != intent.intent_id:
            raise ValueError("prepared is for another intent")
        result = await self._once(intent, prepared)
        return result.status()

    async def status(self, intent_id: str) -> OrderStatus:
        """What became of ``intent_id`` (module contract). Raises VenueUnavailable when
        the node cannot be asked."""
        result = await self.result(intent_id)
        if result is None:
            return OrderStatus.not_found(intent_id, self.clock())
        return result.status()

    async def result(self, intent_id: str) -> SwapResult | None:
        """The :class:`SwapResult` of ``intent_id`` without waiting or sending (``None``:
        no transaction was ever signed for it)."""
        if intent_id in self._results:
            return self._results[intent_id]
        if intent_id in self._running:
            return self._pending(intent_id)
        attempts = self.sender.attempts_of(intent_id)
        if not attempts:
            return None
        found = await self.sender.lookup(attempts)
        if found.state is Landing.PENDING:
            return self._pending(intent_id)
        if found.state is Landing.EXPIRED:
            result = self._expired(intent_id)
        else:
            result = await self._book(found, polls=1)
        if result.state.is_final:
            self._results.setdefault(intent_id, result)
            return self._results[intent_id]
        return result

    async def _once(self, intent: OrderIntent, prepared: Prepared | None) -> SwapResult:
        intent_id = intent.intent_id
        if intent_id in self._results:
            return self._results[intent_id]
        future = self._running.get(intent_id)
        if future is None:
            if self.sender.attempts_of(intent_id):
                work = self._follow(intent)  # journaled: resolve first, never swap twice
            else:
                work = self._execute(intent, prepared)
            future = asyncio.ensure_future(self._record(intent_id, work))
            self._running[intent_id] = future
        return await asyncio.shield(future)

    async def _record(self, intent_id: str, work: Awaitable[SwapResult]) -> SwapResult:
        try:
            result = await work
        finally:
            self._running.pop(intent_id, None)
        if result.state.is_final:
            self._results[intent_id] = result
        return result

    # -- execution ---------------------------------------------------------------------------

    async def _execute(self, intent: OrderIntent, prepared: Prepared | None) -> SwapResult:
        self._check_intent(intent)
        signer = self._signer(intent.side)
        try:
            ready = prepared if prepared is not None else await self.prepare(intent)
        except (NotExecutable, SlippageExceeded) as exc:
            return self._failed(
                intent.intent_id, _describe(exc), side=intent.side, token=intent.token
            )
        if self.before_sign is not None:
            await self.before_sign(intent, ready)
        try:
            await self.sender.send_new(
                intent.intent_id,
                ready.transaction,
                signer,
                last_valid_block_height=ready.last_valid_block_height,
                context=ready.context(intent),
            )
        except PreflightRefused as exc:
            return self._failed(
                intent.intent_id, exc.reason, side=intent.side, token=intent.token, attempts=1
            )
        return await self._follow(intent)

    def _signer(self, side: Side) -> Keypair:
        signer = self.signer(side)
        if signer.pubkey() != Pubkey.from_string(self.wallet):
            raise SignerMismatch(
                f"the signer is for {signer.pubkey()}, this venue's wallet is {self.wallet}",
                self.name,
            )
        return signer

    async def _follow(self, intent: OrderIntent) -> SwapResult:
        """Follow the intent's attempts to an outcome, re-signing when all expired."""
        intent_id = intent.intent_id
        while True:
            try:
                found = await self.sender.wait(intent_id)
            except Exception as exc:  # a signed swap: answer, do not raise
                return self._unknown(intent_id, f"following the transaction failed: {exc}")
            if found.state is Landing.LANDED:
                return await self._book(found)
            if found.state is Landing.PENDING:
                return self._unknown(
                    intent_id,
                    "the transaction has neither landed nor expired yet; ask status later",
                )
            attempts = self.sender.attempts_of(intent_id)
            if len(attempts) >= self.config.max_attempts:
                return self._expired(intent_id)
            refused = await self._resign(intent, len(attempts))
            if refused is not None:
                return refused

    async def _resign(self, intent: OrderIntent, made: int) -> SwapResult | None:
        """Sign a fresh transaction for an intent whose attempts all expired; ``None``
        when one was sent, else the FAILED outcome (nothing landed, nothing will)."""
        intent_id = intent.intent_id

        def failed(reason: str) -> SwapResult:
            return self._failed(
                intent_id,
                f"none of {made} transaction(s) landed before its blockhash expired, and a "
                f"fresh one was not signed: {reason}",
                side=intent.side,
                token=intent.token,
                attempts=made,
            )

        try:
            signer = self._signer(intent.side)
            ready = await self.prepare(intent)
            if self.before_sign is not None:
                await self.before_sign(intent, ready)
        except Exception as exc:  # whatever stops a re-sign, the intent ends here
            return failed(_describe(exc))
        try:
            await self.sender.send_new(
                intent_id,
                ready.transaction,
                signer,
                last_valid_block_height=ready.last_valid_block_height,
                context=ready.context(intent),
            )
        except PreflightRefused as exc:
            return failed(exc.reason)
        except ResignRefused as exc:
            return self._unknown(intent_id, _describe(exc))
        except (SignatureMissing, SignerMismatch, VenueUnavailable) as exc:
            return failed(_describe(exc))
        return None

    # -- outcomes ----------------------------------------------------------------------------

    def _pending(self, intent_id: str) -> SwapResult:
        return SwapResult(
            intent_id=intent_id,
            state=OrderState.PENDING,
            attempts=len(self.sender.attempts_of(intent_id)),
            ts=self.clock(),
        )

    def _unknown(self, intent_id: str, reason: str) -> SwapResult:
        attempts = self.sender.attempts_of(intent_id)
        return SwapResult(
            intent_id=intent_id,
            state=OrderState.UNKNOWN,
            reason=reason,
            attempts=len(attempts),
            signature=attempts[-1].signature if attempts else None,
            ts=self.clock(),
        )

    def _failed(
        self,
        intent_id: str,
        reason: str,
        *,
        side: Side | None = None,
        token: str = "",
        attempts: int = 0,
        **extra: Any,
    ) -> SwapResult:
        return SwapResult(
            intent_id=intent_id,
            state=OrderState.FAILED,
            side=side,
            token=token,
            reason=reason,
            attempts=attempts,
            ts=self.clock(),
            **extra,
        )

    def _expired(self, intent_id: str) -> SwapResult:
        attempts = self.sender.attempts_of(intent_id)
        ctx = attempts[-1].context if attempts else {}
        side = Side(ctx["side"]) if ctx.get("side") else None
        return self._failed(
            intent_id,
            f"expired: none of {len(attempts)} transaction(s) landed before its blockhash "
            "expired; nothing moved",
            side=side,
            token=str(ctx.get("token", "")),
            attempts=len(attempts),
            signature=attempts[-1].signature if attempts else None,
        )

    async def _book(self, found: Resolution, polls: int | None = None) -> SwapResult:
        """Book a landed attempt from its transaction's metadata (module contract), asking
        ``getTransaction`` up to ``polls`` times (default ``booking_polls``)."""
        attempt = found.attempt
        assert attempt is not None
        intent_id = attempt.intent_id
        ctx = attempt.context
        tx: Mapping[str, Any] | None = None
        polls = self.config.booking_polls if polls is None else polls
        try:
            for poll in range(polls):
                tx = await self.rpc.transaction(
                    attempt.signature, self.sender.settings.landed_commitment
                )
                if tx is not None:
                    break
                if poll + 1 < polls:
                    await self.sender.sleep(self.sender.settings.poll_interval_s)
        except VenueUnavailable as exc:
            return self._unknown(
                intent_id, f"landed as {attempt.signature}; reading it failed: {exc}"
            )
        if tx is None:
            return self._unknown(
                intent_id, f"landed as {attempt.signature}; getTransaction does not have it yet"
            )
        try:
            flows = swap_flows(tx, self.wallet)
        except (ValueError, KeyError, TypeError) as exc:
            return self._unknown(intent_id, f"landed as {attempt.signature}; unreadable: {exc}")
        side = Side(ctx["side"])
        token = str(ctx["token"])
        decimals = int(flows.decimals.get(token, ctx.get("token_decimals", 0)))
        count = len(self.sender.attempts_of(intent_id))
        common: dict[str, Any] = {
            "intent_id": intent_id,
            "side": side,
            "token": token,
            "token_decimals": decimals,
            "signature": attempt.signature,
            "slot": flows.slot or found.slot,
            "attempts": count,
            "ts": self.clock(),
        }
        err = flows.err if flows.err is not None else found.err
        if err is not None:
            paid = -flows.liquid_delta
            return SwapResult(
                state=OrderState.FAILED,
                fee_paid_lamports=paid,
                tx_fee_lamports=flows.fee,
                reason=(
                    f"landed and failed on chain ({attempt.signature}): "
                    f"{tx_error_reason(err, flows.programs)}; only its fee moved "
                    f"({paid} lamports)"
                ),
                **common,
            )
        return SwapResult(state=OrderState.FILLED, **common, **_amounts(side, token, flows, ctx))


def _platform_fee_lamports(side: Side, fee_amount: int, swap_lamports: int, out_units: int) -> int:
    """Jupiter's platform fee in lamports. ExactIn takes it from the output: lamports for a
    sell; tokens for a buy, valued at the swap's own rate (lamports per token unit)."""
    if fee_amount <= 0:
        return 0
    if side is Side.SELL:
        return fee_amount
    total_units = out_units + fee_amount
    return swap_lamports * fee_amount // total_units if total_units else 0


def _amounts(side: Side, token: str, flows: SwapFlows, ctx: Mapping[str, Any]) -> dict[str, Any]:
    fee_amount = int(ctx.get("platform_fee_amount", 0) or 0)
    if side is Side.BUY:
        base = flows.token_delta(token)
        quote = -flows.liquid_delta
    else:
        base = -flows.token_delta(token)
        quote = flows.liquid_delta
    swap = flows.swap_lamports
    return {
        "base_units": base,
        "quote_lamports": quote,
        "swap_lamports": swap,
        "tx_fee_lamports": flows.fee,
        "rent_lamports": flows.rent_delta,
        "platform_fee_lamports": _platform_fee_lamports(side, fee_amount, swap, base),
    }
