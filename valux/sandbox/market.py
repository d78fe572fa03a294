"""Constant-product pools of test tokens against wrapped SOL, held as real SPL accounts.

No AMM program exists offline (chains.md A2), so a pool is two SPL token accounts owned
by a *pool authority* keypair the market holds, and a swap is a pair of plain transfers
the authority co-signs.

Contract:

- **Tokens.** Each :class:`TokenSpec` becomes a real mint (``InitializeMint2``; mint
  authority held by the market, no freeze authority) and one pool. Every pool's SOL side
  is **wrapped SOL** (mint ``So11…112``), as on mainnet DEXes, so a buy is "SOL for
  token X" with SOL wrapped and unwrapped inside the swap transaction. Set-up, funding
  and price moves are real transactions (they appear in the ledger's history); only the
  wrapped-SOL mint itself is written directly (LiteSVM does not ship it).
- **Reserves are the vault balances**, read from the ledger at every call: a swap landed
  through the RPC moves the price, and nothing else does except :meth:`Market.set_price`.
- **Prices.** ``price_sol`` = SOL per whole token = ``(sol_reserve / 1e9) /
  (token_reserve / 10**decimals)``; ``price_usd`` = ``price_sol × sol_usd``. ``sol_usd``
  is a number the market holds (default 150); every USD figure follows it. All prices
  are ``Decimal``; amounts are integer base units.
- **Quotes.** Constant product with ``fee_bps`` (30) taken from the input.
  ExactIn: ``out = floor(R_out·in·(1−f) / (R_in + in·(1−f)))``. ExactOut: the least input
  whose ExactIn output is at least the asked amount. ``price_impact`` is the fraction the
  output falls short of the fee-free spot output (0.01 = 1 %).
- **Swap transactions** (:meth:`Market.swap_instructions`) move *exactly* the quoted
  amounts: user → pool ``in_amount``, pool → user ``out_amount``. Buying with
  ``wrap_unwrap``: create the user's wSOL ATA (idempotent), fund it with ``in_amount``
  lamports, ``SyncNative``, transfer it to the pool, receive the token into the user's
  ATA (created idempotently), close the wSOL ATA back to the user. Selling: the mirror.
  The user is the fee payer and pays the rent of any ATA created for them.
- :meth:`Market.set_price` moves a pool to a USD price by minting into or burning from
  its token vault (SOL side unchanged); :meth:`Market.fund` airdrops SOL or mints a test
  token to an owner's ATA (created if missing).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_FLOOR, Decimal, InvalidOperation
from enum import StrEnum
from typing import Final

from solders.instruction import Instruction
from solders.pubkey import Pubkey
from solders.system_program import (
    CreateAccountParams,
    CreateAccountWithSeedParams,
    TransferParams,
    create_account,
    create_account_with_seed,
    transfer,
)

from valux.sandbox.ledger import SolanaLedger, TxRecord
from valux.sandbox.spl import (
    MINT_SIZE,
    NATIVE_MINT,
    TOKEN_ACCOUNT_SIZE,
    TOKEN_PROGRAM_ID,
    associated_token_address,
    burn,
    close_account,
    create_ata_idempotent,
    initialize_account3,
    initialize_mint2,
    mint_to,
    parse_mint,
    parse_token_account,
    sync_native,
    transfer_checked,
)

__all__ = [
    "DEFAULT_SOL_USD",
    "DEFAULT_TOKENS",
    "SOL_DECIMALS",
    "Funding",
    "Market",
    "MarketError",
    "Pool",
    "Quote",
    "Reserves",
    "SwapMode",
    "TokenSpec",
    "amount_in_for",
    "amount_out",
]

SOL_DECIMALS: Final = 9
DEFAULT_SOL_USD: Final = Decimal(150)
_BPS: Final = 10_000
_U64: Final = 2**64


class SwapMode(StrEnum):
    """Which side of a swap the amount fixes (Jupiter's ``swapMode``)."""

    EXACT_IN = "ExactIn"
    EXACT_OUT = "ExactOut"


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenSpec:
    """A test token: symbol, decimals, starting USD price and the pool's SOL depth."""

    symbol: str
    decimals: int
    usd_price: Decimal
    sol_liquidity: Decimal = Decimal(1_000)
    """Whole SOL on the pool's SOL side."""
    name: str = ""

    def __post_init__(self) -> None:
        if not (self.symbol.isalnum() and self.symbol.isupper() and len(self.symbol) <= 10):
            raise ValueError("symbol must be 1–10 upper-case letters or digits")
        if self.symbol == "SOL":
            raise ValueError("SOL is the quote side of every pool, not a test token")
        if not 0 <= self.decimals <= 12:
            raise ValueError("decimals must be within 0..12")
        if not (self.usd_price > 0 and self.sol_liquidity > 0):
            raise ValueError("usd_price and sol_liquidity must be > 0")


DEFAULT_TOKENS: Final = (
    TokenSpec(symbol="BONK", decimals=5, usd_price=Decimal("0.00002"), name="Sandbox Bonk"),
    TokenSpec(symbol="WIF", decimals=6, usd_price=Decimal("1.50"), name="Sandbox dogwifhat"),
    TokenSpec(symbol="POPCAT", decimals=9, usd_price=Decimal("0.40"), name="Sandbox Popcat"),
)
"""Sandbox mints with the symbols and decimals of well-known memecoins (other addresses)."""


class MarketError(Exception):
    """A quote, swap, fund or price request the market cannot serve; ``code`` is
    Jupiter-style (``TOKEN_NOT_TRADABLE``, ``COULD_NOT_FIND_ANY_ROUTE``, …)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Pool:
    """One test token's pool: its mint, the two vaults and the address naming it."""

    symbol: str
    name: str
    mint: Pubkey
    decimals: int
    sol_vault: Pubkey
    token_vault: Pubkey
    address: Pubkey
    """The pool's id (Jupiter ``ammKey``, DexScreener ``pairAddress``); holds no account."""


@dataclass(frozen=True, slots=True)
class Reserves:
    """A pool's vault balances, in base units."""

    sol: int
    token: int


@dataclass(frozen=True, slots=True)
class Quote:
    """A priced swap against one pool."""

    pool: Pool
    mode: SwapMode
    input_mint: Pubkey
    output_mint: Pubkey
    in_amount: int
    out_amount: int
    fee_amount: int
    """Fee kept by the pool, in the input mint's base units."""
    price_impact: Decimal

    @property
    def buying(self) -> bool:
        """True when the input is SOL (the user buys the token)."""
        return self.input_mint == NATIVE_MINT


@dataclass(frozen=True, slots=True)
class Funding:
    """What :meth:`Market.fund` did."""

    signature: str
    account: Pubkey
    """The wallet (SOL) or its associated token account (token)."""
    mint: Pubkey
    amount: int
    balance: int


def amount_out(reserve_in: int, reserve_out: int, amount_in: int, fee_bps: int) -> int:
    """Constant-product output for ``amount_in``, fee taken from the input, rounded down."""
    net = amount_in * (_BPS - fee_bps)
    return reserve_out * net // (reserve_in * _BPS + net)


def amount_in_for(reserve_in: int, reserve_out: int, wanted: int, fee_bps: int) -> int | None:
    """The least input whose output is at least ``wanted``; ``None`` if the pool cannot."""
    if not 0 < wanted < reserve_out:
        return None
    numerator = reserve_in * wanted * _BPS
    denominator = (reserve_out - wanted) * (_BPS - fee_bps)
    guess = -(-numerator // denominator)
    while guess > 1 and amount_out(reserve_in, reserve_out, guess - 1, fee_bps) >= wanted:
        guess -= 1
    while amount_out(reserve_in, reserve_out, guess, fee_bps) < wanted:
        guess += 1
    return guess


def _whole_to_base(amount: Decimal, decimals: int) -> int:
    scaled = amount * (Decimal(10) ** decimals)
    return int(scaled.to_integral_value(rounding=ROUND_FLOOR))


class Market:
    """The test tokens and their pools inside ``ledger`` (see the module contract)."""

    def __init__(
        self,
        ledger: SolanaLedger,
        tokens: tuple[TokenSpec, ...] = DEFAULT_TOKENS,
        *,
        sol_usd: Decimal = DEFAULT_SOL_USD,
        fee_bps: int = 30,
    ) -> None:
        if not 0 <= fee_bps < _BPS:
            raise ValueError("fee_bps must be within 0..9999")
        if len({t.symbol for t in tokens}) != len(tokens):
            raise ValueError("token symbols must be unique")
        self.ledger = ledger
        self.fee_bps = fee_bps
        self._sol_usd = Decimal(0)
        self.sol_usd = sol_usd
        self.authority = ledger.keypair("pool-authority")
        """Owns every vault and co-signs every swap."""
        self.mint_authority = ledger.keypair("mint-authority")
        self.created_at = datetime.now(UTC)
        self.pools: dict[str, Pool] = {}
        self._by_mint: dict[Pubkey, Pool] = {}
        self._reference: dict[str, Decimal] = {}
        self._sol_usd_reference = self._sol_usd
        self.version = 0
        """Incremented by every control change (price, SOL/USD); swaps do not touch it."""
        for spec in tokens:
            pool = self._create_pool(spec)
            self.pools[spec.symbol] = pool
            self._by_mint[pool.mint] = pool
            self._reference[spec.symbol] = self.price_usd(pool)

    # ------------------------------------------------------------ set-up

    def _create_pool(self, spec: TokenSpec) -> Pool:
        ledger = self.ledger
        mint = ledger.keypair(f"mint:{spec.symbol}")
        authority = self.authority.pubkey()
        sol_seed, token_seed = f"{spec.symbol}:sol-vault", f"{spec.symbol}:token-vault"
        sol_vault = Pubkey.create_with_seed(authority, sol_seed, TOKEN_PROGRAM_ID)
        token_vault = Pubkey.create_with_seed(authority, token_seed, TOKEN_PROGRAM_ID)
        payer = ledger.faucet.pubkey()
        account_rent = ledger.rent_exempt(TOKEN_ACCOUNT_SIZE)
        ixs: list[Instruction] = [
            create_account(
                CreateAccountParams(
                    from_pubkey=payer,
                    to_pubkey=mint.pubkey(),
                    lamports=ledger.rent_exempt(MINT_SIZE),
                    space=MINT_SIZE,
                    owner=TOKEN_PROGRAM_ID,
                )
            ),
            initialize_mint2(
                mint=mint.pubkey(), decimals=spec.decimals, authority=self.mint_authority.pubkey()
            ),
        ]
        for vault, seed, vault_mint in (
            (sol_vault, sol_seed, NATIVE_MINT),
            (token_vault, token_seed, mint.pubkey()),
        ):
            ixs.append(
                create_account_with_seed(
                    CreateAccountWithSeedParams(
                        from_pubkey=payer,
                        to_pubkey=vault,
                        base=authority,
                        seed=seed,
                        lamports=account_rent,
                        space=TOKEN_ACCOUNT_SIZE,
                        owner=TOKEN_PROGRAM_ID,
                    )
                )
            )
            ixs.append(initialize_account3(account=vault, mint=vault_mint, owner=authority))
        ledger.execute(ixs, [mint, self.authority])
        sol_reserve = _whole_to_base(spec.sol_liquidity, SOL_DECIMALS)
        price_sol = spec.usd_price / self._sol_usd
        token_reserve = _whole_to_base(spec.sol_liquidity / price_sol, spec.decimals)
        if token_reserve <= 0 or sol_reserve <= 0:
            raise ValueError(f"{spec.symbol}: the starting reserves round to zero")
        ledger.execute(
            [
                transfer(
                    TransferParams(from_pubkey=payer, to_pubkey=sol_vault, lamports=sol_reserve)
                ),
                sync_native(sol_vault),
                mint_to(
                    mint=mint.pubkey(),
                    destination=token_vault,
                    authority=self.mint_authority.pubkey(),
                    amount=token_reserve,
                ),
            ],
            [self.mint_authority],
        )
        return Pool(
            symbol=spec.symbol,
            name=spec.name or f"Sandbox {spec.symbol}",
            mint=mint.pubkey(),
            decimals=spec.decimals,
            sol_vault=sol_vault,
            token_vault=token_vault,
            address=Pubkey.create_with_seed(authority, f"{spec.symbol}:pool", TOKEN_PROGRAM_ID),
        )

    # ------------------------------------------------------------ lookups

    def tokens(self) -> dict[str, str]:
        """``{symbol: mint}`` of the test tokens."""
        return {symbol: str(pool.mint) for symbol, pool in self.pools.items()}

    def pool_by_mint(self, mint: Pubkey) -> Pool | None:
        """The pool of the token ``mint``, if it is a test token."""
        return self._by_mint.get(mint)

    def resolve(self, token: str) -> Pool:
        """The pool named by ``token`` (a symbol, any case, or a mint address)."""
        pool = self.pools.get(token.upper())
        if pool is None:
            try:
                pool = self._by_mint.get(Pubkey.from_string(token))
            except ValueError:
                pool = None
        if pool is None:
            raise MarketError("TOKEN_NOT_FOUND", f"unknown token {token!r}")
        return pool

    # ------------------------------------------------------------ prices

    @property
    def sol_usd(self) -> Decimal:
        """USD per SOL, the one price the market holds rather than derives."""
        return self._sol_usd

    @sol_usd.setter
    def sol_usd(self, value: Decimal) -> None:
        if not (isinstance(value, Decimal) and value.is_finite() and value > 0):
            raise MarketError("INVALID_PRICE", "the SOL price must be a positive Decimal")
        self._sol_usd = value
        self.version = getattr(self, "version", 0) + 1

    def reserves(self, pool: Pool) -> Reserves:
        """The vault balances of ``pool`` now."""
        sol = parse_token_account(self.ledger.account(pool.sol_vault))
        token = parse_token_account(self.ledger.account(pool.token_vault))
        return Reserves(sol.amount if sol else 0, token.amount if token else 0)

    def price_sol(self, pool: Pool) -> Decimal:
        """SOL per whole token at the pool's current reserves (0 when a side is empty)."""
        reserves = self.reserves(pool)
        if reserves.sol == 0 or reserves.token == 0:
            return Decimal(0)
        sol = Decimal(reserves.sol) / (Decimal(10) ** SOL_DECIMALS)
        return sol / (Decimal(reserves.token) / (Decimal(10) ** pool.decimals))

    def price_usd(self, pool: Pool) -> Decimal:
        """USD per whole token."""
        return self.price_sol(pool) * self._sol_usd

    def liquidity_usd(self, pool: Pool) -> Decimal:
        """USD value of both sides of ``pool``."""
        sol = Decimal(self.reserves(pool).sol) / (Decimal(10) ** SOL_DECIMALS)
        return 2 * sol * self._sol_usd

    def change_pct(self, pool: Pool | None) -> Decimal:
        """Percent change of the USD price since the market started (``None``: SOL)."""
        if pool is None:
            reference, now = self._sol_usd_reference, self._sol_usd
        else:
            reference, now = self._reference[pool.symbol], self.price_usd(pool)
        return (now / reference - 1) * 100 if reference else Decimal(0)

    def supply(self, pool: Pool) -> int:
        """The mint's supply in base units."""
        mint = parse_mint(self.ledger.account(pool.mint))
        return mint.supply if mint else 0

    def set_price(self, token: str, usd: Decimal) -> None:
        """Move ``token``'s pool (or SOL/USD for ``"SOL"``) to ``usd`` per whole token."""
        if not (isinstance(usd, Decimal) and usd.is_finite() and usd > 0):
            raise MarketError("INVALID_PRICE", "price must be a positive number")
        if token.upper() == "SOL" or token == str(NATIVE_MINT):
            self.sol_usd = usd
            return
        pool = self.resolve(token)
        reserves = self.reserves(pool)
        sol = Decimal(reserves.sol) / (Decimal(10) ** SOL_DECIMALS)
        try:
            target = _whole_to_base(sol * self._sol_usd / usd, pool.decimals)
        except InvalidOperation:
            raise MarketError("INVALID_PRICE", "price out of range") from None
        if target <= 0 or target >= 2**64:
            raise MarketError("INVALID_PRICE", "that price needs a reserve out of range")
        delta = target - reserves.token
        if delta > 0:
            ix = mint_to(
                mint=pool.mint,
                destination=pool.token_vault,
                authority=self.mint_authority.pubkey(),
                amount=delta,
            )
            self.ledger.execute([ix], [self.mint_authority])
        elif delta < 0:
            ix = burn(
                account=pool.token_vault,
                mint=pool.mint,
                authority=self.authority.pubkey(),
                amount=-delta,
            )
            self.ledger.execute([ix], [self.authority])
        self.version += 1

    # ------------------------------------------------------------ funding

    def fund(self, owner: Pubkey, amount: Decimal, token: str | None = None) -> Funding:
        """Airdrop ``amount`` SOL, or mint ``amount`` whole ``token`` to ``owner``'s ATA."""
        if not (isinstance(amount, Decimal) and amount.is_finite() and amount > 0):
            raise MarketError("INVALID_AMOUNT", "amount must be a positive number")
        if token is None or token.upper() == "SOL":
            lamports = amount * (Decimal(10) ** SOL_DECIMALS)
            if lamports != lamports.to_integral_value():
                raise MarketError("INVALID_AMOUNT", "SOL has 9 decimals")
            if lamports >= _U64:
                raise MarketError("INVALID_AMOUNT", "amount out of range")
            airdrop = self.ledger.airdrop(owner, int(lamports))
            return Funding(
                str(airdrop.signature),
                owner,
                NATIVE_MINT,
                int(lamports),
                self.ledger.balance(owner),
            )
        pool = self.resolve(token)
        base = amount * (Decimal(10) ** pool.decimals)
        if base != base.to_integral_value():
            raise MarketError("INVALID_AMOUNT", f"{pool.symbol} has {pool.decimals} decimals")
        if base + self.supply(pool) >= _U64:
            raise MarketError("INVALID_AMOUNT", "amount out of range (the supply is a u64)")
        ata = associated_token_address(owner, pool.mint)
        record: TxRecord = self.ledger.execute(
            [
                create_ata_idempotent(self.ledger.faucet.pubkey(), owner, pool.mint),
                mint_to(
                    mint=pool.mint,
                    destination=ata,
                    authority=self.mint_authority.pubkey(),
                    amount=int(base),
                ),
            ],
            [self.mint_authority],
        )
        held = parse_token_account(self.ledger.account(ata))
        return Funding(str(record.signature), ata, pool.mint, int(base), held.amount if held else 0)

    # ------------------------------------------------------------ quotes and swaps

    def _route(self, input_mint: Pubkey, output_mint: Pubkey) -> Pool:
        known = {NATIVE_MINT, *self._by_mint}
        for mint in (input_mint, output_mint):
            if mint not in known:
                raise MarketError("TOKEN_NOT_TRADABLE", f"The token {mint} is not tradable")
        if input_mint == NATIVE_MINT and output_mint in self._by_mint:
            return self._by_mint[output_mint]
        if output_mint == NATIVE_MINT and input_mint in self._by_mint:
            return self._by_mint[input_mint]
        raise MarketError("COULD_NOT_FIND_ANY_ROUTE", "Could not find any route")

    def quote(self, input_mint: Pubkey, output_mint: Pubkey, amount: int, mode: SwapMode) -> Quote:
        """Price a swap of ``amount`` base units at the current reserves."""
        pool = self._route(input_mint, output_mint)
        if not 0 < amount < _U64:
            raise MarketError("INVALID_AMOUNT", "amount must be a positive 64-bit integer")
        reserves = self.reserves(pool)
        r_in, r_out = (
            (reserves.sol, reserves.token)
            if input_mint == NATIVE_MINT
            else (reserves.token, reserves.sol)
        )
        if mode is SwapMode.EXACT_IN:
            in_amount, out_amount = amount, amount_out(r_in, r_out, amount, self.fee_bps)
        else:
            needed = amount_in_for(r_in, r_out, amount, self.fee_bps)
            if needed is None:
                raise MarketError("COULD_NOT_FIND_ANY_ROUTE", "Could not find any route")
            in_amount, out_amount = needed, amount
        if out_amount <= 0:
            raise MarketError("COULD_NOT_FIND_ANY_ROUTE", "Could not find any route")
        net = Decimal(in_amount * (_BPS - self.fee_bps)) / _BPS
        spot_out = net * r_out / r_in
        impact = 1 - Decimal(out_amount) / spot_out if spot_out else Decimal(0)
        return Quote(
            pool=pool,
            mode=mode,
            input_mint=input_mint,
            output_mint=output_mint,
            in_amount=in_amount,
            out_amount=out_amount,
            fee_amount=-(-in_amount * self.fee_bps // _BPS),
            price_impact=max(impact, Decimal(0)),
        )

    def swap_instructions(
        self,
        user: Pubkey,
        quote: Quote,
        *,
        wrap_unwrap: bool = True,
        destination: Pubkey | None = None,
    ) -> list[Instruction]:
        """The instructions (no compute budget) that move exactly the quoted amounts."""
        pool = quote.pool
        authority = self.authority.pubkey()
        user_wsol = associated_token_address(user, NATIVE_MINT)
        user_token = associated_token_address(user, pool.mint)
        ixs: list[Instruction] = []
        if quote.buying:
            if wrap_unwrap:
                ixs += [
                    create_ata_idempotent(user, user, NATIVE_MINT),
                    transfer(
                        TransferParams(
                            from_pubkey=user, to_pubkey=user_wsol, lamports=quote.in_amount
                        )
                    ),
                    sync_native(user_wsol),
                ]
            receive = destination or user_token
            if destination is None:
                ixs.append(create_ata_idempotent(user, user, pool.mint))
            ixs += [
                transfer_checked(
                    source=user_wsol,
                    mint=NATIVE_MINT,
                    destination=pool.sol_vault,
                    authority=user,
                    amount=quote.in_amount,
                    decimals=SOL_DECIMALS,
                ),
                transfer_checked(
                    source=pool.token_vault,
                    mint=pool.mint,
                    destination=receive,
                    authority=authority,
                    amount=quote.out_amount,
                    decimals=pool.decimals,
                ),
            ]
            if wrap_unwrap:
                ixs.append(close_account(account=user_wsol, destination=user, authority=user))
            return ixs
        receive = destination or user_wsol
        if destination is None:
            ixs.append(create_ata_idempotent(user, user, NATIVE_MINT))
        ixs += [
            transfer_checked(
                source=user_token,
                mint=pool.mint,
                destination=pool.token_vault,
                authority=user,
                amount=quote.in_amount,
                decimals=pool.decimals,
            ),
            transfer_checked(
                source=pool.sol_vault,
                mint=NATIVE_MINT,
                destination=receive,
                authority=authority,
                amount=quote.out_amount,
                decimals=SOL_DECIMALS,
            ),
        ]
        if wrap_unwrap and destination is None:
            ixs.append(close_account(account=user_wsol, destination=user, authority=user))
        return ixs
