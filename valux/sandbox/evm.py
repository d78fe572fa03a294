"""The EVM half of ``valux sandbox``: anvil (chain id 42161) running real Uniswap V3 bytecode.

Contract:

- :class:`EvmSandbox` starts the ``anvil`` binary of the pinned npm package
  ``@foundry-rs/anvil-linux-amd64`` (installed on demand by
  :func:`valux.sandbox.npm.ensure_node_modules`) on loopback, ``--chain-id 42161`` (Arbitrum
  One's id, so signatures for any other chain are refused by the node as on mainnet), on a
  free port unless one is configured, waits until it answers ``eth_chainId``, and deploys
  from the npm artifacts, read from ``node_modules`` at run time and never copied into the
  repository:

  - WETH9 (``canonical-weth``);
  - the Uniswap V3 factory (``@uniswap/v3-core``), NonfungiblePositionManager
    (``@uniswap/v3-periphery``; token descriptor = the zero address, which only
    ``tokenURI`` reads);
  - SwapRouter02 and QuoterV2 (``@uniswap/swap-router-contracts``); SwapRouter02's
    constructor stores its V2 factory without calling it, so it gets the zero address:
    only V3 routes are offered (a V2 leg would revert);
  - test ERC-20s (OpenZeppelin 4.9.6 ``ERC20PresetMinterPauser``, 18 decimals, the
    deployer holds the minter role), and ``USDC`` with 6 decimals: OpenZeppelin's preset
    hard-codes 18, so USDC is a second WETH9 (whose ``name``/``symbol``/``decimals`` are
    storage) with those three slots rewritten — a real ERC-20 with 6 decimals, minted by
    depositing wei (1 base unit = 1 wei);
  - pools (:data:`DEFAULT_POOLS`) created at their prices with full-range liquidity.

  The deployer is anvil's first dev account; it is also the faucet and the account that
  moves prices. Its key is anvil's public test key and appears in no description.
- Controls: :meth:`EvmSandbox.fund` (ETH by ``anvil_setBalance``, WETH and USDC by
  transfer from the faucet's reserve, a test ERC-20 by minting); :meth:`EvmSandbox.set_price`
  moves every pool of a pair to a price by swapping against it from the faucet through
  SwapRouter02 with ``sqrtPriceLimitX96`` at the target (a real swap, so ticks, fees and
  oracle observations move as on chain); :meth:`EvmSandbox.snapshot` /
  :meth:`EvmSandbox.revert` (``evm_snapshot``/``evm_revert``: a revert consumes its snapshot
  and every later one), :meth:`EvmSandbox.set_automine` and :meth:`EvmSandbox.mine`.
- :meth:`EvmSandbox.description` is what ``sandbox.json`` gains: ``evm_rpc_url``,
  ``chain_id``, ``evm_tokens`` (``{symbol: address}``, WETH included), ``router``,
  ``quoter``, plus ``evm_ws_url``, ``evm_factory``, ``evm_position_manager``,
  ``evm_pools`` (``{"BASE/QUOTE/fee": address}``) and ``evm_faucet`` (an address).
- :meth:`EvmSandbox.stop` terminates anvil (SIGTERM, then SIGKILL after a grace period);
  anvil is also asked to die with its parent process (``PR_SET_PDEATHSIG``) so a killed
  test run leaves no node behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, localcontext
from pathlib import Path
from typing import Any, Final, Self

from eth_utils.address import to_checksum_address
from web3 import AsyncHTTPProvider, AsyncWeb3

from valux.errors import ValuxError
from valux.feeds.uniswap_pool import (
    POOL_ABI,
    PoolInfo,
    price_to_sqrt_price_x96,
    sqrt_price_x96_to_price,
)
from valux.sandbox.npm import REPO_ROOT, anvil_binary, artifact_path, ensure_node_modules

__all__ = [
    "ARBITRUM_CHAIN_ID",
    "DEFAULT_POOLS",
    "DEFAULT_TOKENS",
    "EvmSandbox",
    "EvmSandboxConfig",
    "EvmSandboxError",
    "PoolSpec",
    "TokenSpec",
]

ARBITRUM_CHAIN_ID: Final = 42161
ZERO_ADDRESS: Final = "0x0000000000000000000000000000000000000000"
MAX_UINT256: Final = 2**256 - 1
MIN_TICK: Final = -887272
MAX_TICK: Final = 887272
MIN_SQRT_RATIO: Final = 4295128739
MAX_SQRT_RATIO: Final = 1461446703485210103287273052203988822378723970342
TICK_SPACING: Final[Mapping[int, int]] = {100: 1, 500: 10, 3000: 60, 10000: 200}
_GAS: Final = 15_000_000  # explicit gas for sandbox transactions: no estimate round trip
_DEPLOY_GAS: Final = 29_000_000
_FAUCET_ETH: Final = 10**9 * 10**18
_FAUCET_WETH: Final = 10**7 * 10**18
_FAUCET_USDC: Final = 10**12 * 10**6  # minted by depositing wei: 1 base unit = 1 wei
_FAUCET_MINT: Final = 10**12 * 10**18

ARTIFACTS: Final[Mapping[str, str]] = {
    "WETH9": "canonical-weth/build/contracts/WETH9.json",
    "ERC20": "@openzeppelin/contracts/build/contracts/ERC20PresetMinterPauser.json",
    "Factory": "@uniswap/v3-core/artifacts/contracts/UniswapV3Factory.sol/UniswapV3Factory.json",
    "PositionManager": "@uniswap/v3-periphery/artifacts/contracts/"
    "NonfungiblePositionManager.sol/NonfungiblePositionManager.json",
    "SwapRouter02": "@uniswap/swap-router-contracts/artifacts/contracts/"
    "SwapRouter02.sol/SwapRouter02.json",
    "QuoterV2": "@uniswap/swap-router-contracts/artifacts/contracts/lens/"
    "QuoterV2.sol/QuoterV2.json",
}


class EvmSandboxError(ValuxError):
    """The EVM sandbox could not start, or a control was asked something it cannot do."""

    code = "EVM_SANDBOX_ERROR"


@dataclass(frozen=True, slots=True)
class TokenSpec:
    """A test token: ``kind`` ``"erc20"`` (OpenZeppelin preset, 18 decimals, minted) or
    ``"usdc"`` (WETH9 code with 6 decimals, minted by deposit)."""

    symbol: str
    name: str
    kind: str = "erc20"

    @property
    def decimals(self) -> int:
        """18 for the OpenZeppelin preset, 6 for the USDC stand-in."""
        return 6 if self.kind == "usdc" else 18


@dataclass(frozen=True, slots=True)
class PoolSpec:
    """A pool created at ``price`` (``quote`` per ``base``) holding about ``depth`` of the
    quote token (and its worth of the base token) in full-range liquidity."""

    base: str
    quote: str
    fee: int
    price: Decimal
    depth: Decimal

    @property
    def key(self) -> str:
        """``"BASE/QUOTE/fee"``, the pool's name in the description."""
        return f"{self.base}/{self.quote}/{self.fee}"


DEFAULT_TOKENS: Final[tuple[TokenSpec, ...]] = (
    TokenSpec("USDC", "USD Coin (sandbox)", "usdc"),
    TokenSpec("ARB", "Arbitrum (sandbox)"),
    TokenSpec("LINK", "Chainlink (sandbox)"),
    TokenSpec("GMX", "GMX (sandbox)"),
)

DEFAULT_POOLS: Final[tuple[PoolSpec, ...]] = (
    PoolSpec("WETH", "USDC", 500, Decimal(3000), Decimal(3_000_000)),
    PoolSpec("WETH", "USDC", 3000, Decimal(3000), Decimal(600_000)),
    PoolSpec("ARB", "WETH", 500, Decimal("0.0002"), Decimal(40)),
    PoolSpec("ARB", "WETH", 3000, Decimal("0.0002"), Decimal(400)),
    PoolSpec("LINK", "WETH", 3000, Decimal("0.005"), Decimal(200)),
    PoolSpec("GMX", "WETH", 10000, Decimal("0.01"), Decimal(100)),
    PoolSpec("ARB", "USDC", 3000, Decimal("0.6"), Decimal(300_000)),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class EvmSandboxConfig:
    """How the EVM sandbox starts (frozen, keyword-only)."""

    host: str = "127.0.0.1"
    port: int = 0
    """0 = a free port."""
    chain_id: int = ARBITRUM_CHAIN_ID
    block_time_s: float | None = None
    """``None`` = anvil's automine (a block per transaction); else interval mining."""
    tokens: tuple[TokenSpec, ...] = DEFAULT_TOKENS
    pools: tuple[PoolSpec, ...] = DEFAULT_POOLS
    root: Path = REPO_ROOT
    """Where ``package.json`` and ``node_modules`` are."""
    startup_timeout_s: float = 20.0

    def __post_init__(self) -> None:
        if self.host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the EVM sandbox listens on loopback only")
        symbols = [t.symbol for t in self.tokens]
        if "WETH" in symbols or len(set(symbols)) != len(symbols):
            raise ValueError("token symbols must be unique and must not include WETH")
        known = {"WETH", *symbols}
        for pool in self.pools:
            if pool.base not in known or pool.quote not in known or pool.base == pool.quote:
                raise ValueError(f"pool {pool.key} names an unknown token or one token twice")
            if pool.fee not in TICK_SPACING:
                raise ValueError(f"pool {pool.key}: fee must be one of {sorted(TICK_SPACING)}")


@dataclass(slots=True)
class _Deployment:
    weth: str = ""
    factory: str = ""
    position_manager: str = ""
    router: str = ""
    quoter: str = ""
    tokens: dict[str, str] = field(default_factory=dict)
    decimals: dict[str, int] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)
    pools: dict[str, str] = field(default_factory=dict)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _short_string_slot(text: str) -> str:
    """A Solidity storage word holding a string of < 32 bytes (data left, length×2 right)."""
    data = text.encode()
    if len(data) > 31:
        raise ValueError("only strings of at most 31 bytes fit one slot")
    word = data.ljust(31, b"\0") + bytes([len(data) * 2])
    return "0x" + word.hex()


def _units(amount: Decimal, decimals: int) -> int:
    if not isinstance(amount, Decimal) or not amount.is_finite() or amount < 0:
        raise EvmSandboxError(f"amount must be a finite Decimal ≥ 0, got {amount!r}")
    with localcontext() as ctx:
        ctx.prec = 80
        return int(amount.scaleb(decimals).to_integral_value(rounding="ROUND_FLOOR"))


class EvmSandbox:
    """anvil + Uniswap V3 + SwapRouter02 + QuoterV2 + WETH9 + test tokens (module docstring)."""

    def __init__(self, config: EvmSandboxConfig | None = None) -> None:
        self.config = config or EvmSandboxConfig()
        self._process: subprocess.Popen[bytes] | None = None
        self._port = 0
        self._w3: AsyncWeb3[AsyncHTTPProvider] | None = None
        self._abi: dict[str, list[dict[str, Any]]] = {}
        self._bytecode: dict[str, str] = {}
        self._deployment = _Deployment()
        self._faucet = ""
        self._pool_specs: dict[str, PoolSpec] = {}

    # -- lifecycle -------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Install the npm packages if needed, start anvil and deploy everything."""
        if self._process is not None:
            raise EvmSandboxError("the EVM sandbox is already running")
        await asyncio.to_thread(ensure_node_modules, self.config.root)
        self._load_artifacts()
        try:
            await self._spawn()
            await self._deploy()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Terminate anvil (idempotent)."""
        process, self._process = self._process, None
        if self._w3 is not None:
            with contextlib.suppress(Exception):
                await self._w3.provider.disconnect()
            self._w3 = None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            await asyncio.to_thread(process.wait, 5.0)
        except subprocess.TimeoutExpired:
            process.kill()
            await asyncio.to_thread(process.wait)

    @property
    def running(self) -> bool:
        """Whether anvil is up."""
        return self._process is not None and self._process.poll() is None

    async def _spawn(self) -> None:
        binary = anvil_binary(self.config.root)
        attempts = 1 if self.config.port else 3
        last_error = ""
        for _ in range(attempts):
            port = self.config.port or _free_port(self.config.host)
            command = [
                str(binary),
                "--host",
                self.config.host,
                "--port",
                str(port),
                "--chain-id",
                str(self.config.chain_id),
                "--silent",
            ]
            if self.config.block_time_s is not None:
                command += ["--block-time", str(self.config.block_time_s)]
            # Popen returns once the child has exec'd; it never waits for anvil itself
            process = subprocess.Popen(  # noqa: ASYNC220
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                preexec_fn=_die_with_parent,
            )
            self._process, self._port = process, port
            self._w3 = AsyncWeb3(AsyncHTTPProvider(self.rpc_url, request_kwargs={"timeout": 30}))
            deadline = time.monotonic() + self.config.startup_timeout_s
            while time.monotonic() < deadline:
                if process.poll() is not None:
                    stderr = (
                        process.stderr.read().decode(errors="replace") if process.stderr else ""
                    )
                    last_error = f"anvil exited with {process.returncode}: {stderr.strip()}"
                    break
                try:
                    chain_id = await self._w3.eth.chain_id
                except Exception:  # not listening yet
                    await asyncio.sleep(0.02)
                    continue
                if chain_id != self.config.chain_id:
                    raise EvmSandboxError(
                        f"anvil on port {port} answers chain id {chain_id}, "
                        f"expected {self.config.chain_id}"
                    )
                return
            else:
                last_error = f"anvil did not answer within {self.config.startup_timeout_s:g} s"
            await self.stop()
        raise EvmSandboxError(f"could not start anvil: {last_error}")

    # -- addresses -------------------------------------------------------------

    @property
    def w3(self) -> AsyncWeb3[AsyncHTTPProvider]:
        """An AsyncWeb3 on the node (the sandbox's own; clients should make theirs)."""
        if self._w3 is None:
            raise EvmSandboxError("the EVM sandbox is not running")
        return self._w3

    @property
    def rpc_url(self) -> str:
        """``http://host:port``."""
        return f"http://{self._host_in_url()}:{self._port}"

    @property
    def ws_url(self) -> str:
        """``ws://host:port`` (anvil serves WebSocket JSON-RPC on the same port)."""
        return f"ws://{self._host_in_url()}:{self._port}"

    def _host_in_url(self) -> str:
        return f"[{self.config.host}]" if ":" in self.config.host else self.config.host

    @property
    def chain_id(self) -> int:
        """The node's chain id (42161 unless configured)."""
        return self.config.chain_id

    @property
    def faucet(self) -> str:
        """The deployer/faucet address (anvil's first dev account)."""
        return self._faucet

    @property
    def weth(self) -> str:
        """WETH9's address."""
        return self._deployment.weth

    @property
    def router(self) -> str:
        """SwapRouter02's address."""
        return self._deployment.router

    @property
    def quoter(self) -> str:
        """QuoterV2's address."""
        return self._deployment.quoter

    @property
    def factory(self) -> str:
        """The Uniswap V3 factory's address."""
        return self._deployment.factory

    @property
    def position_manager(self) -> str:
        """NonfungiblePositionManager's address."""
        return self._deployment.position_manager

    @property
    def tokens(self) -> dict[str, str]:
        """``{symbol: address}``, WETH included."""
        return dict(self._deployment.tokens)

    @property
    def pools(self) -> dict[str, str]:
        """``{"BASE/QUOTE/fee": pool address}``."""
        return dict(self._deployment.pools)

    def token(self, symbol_or_address: str) -> str:
        """The checksummed address of a token given by symbol or address."""
        found = self._deployment.tokens.get(symbol_or_address)
        if found is not None:
            return found
        for address in self._deployment.tokens.values():
            if address.lower() == symbol_or_address.lower():
                return address
        raise EvmSandboxError(f"unknown sandbox token {symbol_or_address!r}")

    def symbol(self, symbol_or_address: str) -> str:
        """The symbol of a token given by symbol or address."""
        address = self.token(symbol_or_address)
        return next(s for s, a in self._deployment.tokens.items() if a == address)

    def decimals(self, symbol_or_address: str) -> int:
        """A sandbox token's decimals."""
        return self._deployment.decimals[self.symbol(symbol_or_address)]

    def pool(self, base: str, quote: str, fee: int) -> str:
        """The pool of ``base``/``quote`` at ``fee`` (either order of the two tokens)."""
        base, quote = self.symbol(base), self.symbol(quote)
        for key in (f"{base}/{quote}/{fee}", f"{quote}/{base}/{fee}"):
            if key in self._deployment.pools:
                return self._deployment.pools[key]
        raise EvmSandboxError(f"no {base}/{quote} pool at fee {fee}")

    def description(self) -> dict[str, Any]:
        """The EVM keys of ``sandbox.json`` (see the module docstring)."""
        d = self._deployment
        return {
            "evm_rpc_url": self.rpc_url,
            "evm_ws_url": self.ws_url,
            "chain_id": self.chain_id,
            "evm_tokens": dict(d.tokens),
            "router": d.router,
            "quoter": d.quoter,
            "evm_factory": d.factory,
            "evm_position_manager": d.position_manager,
            "evm_pools": dict(d.pools),
            "evm_faucet": self._faucet,
        }

    # -- artifacts and transactions --------------------------------------------

    def _load_artifacts(self) -> None:
        for name, relative in ARTIFACTS.items():
            data = json.loads(artifact_path(relative, self.config.root).read_text())
            self._abi[name] = data["abi"]
            self._bytecode[name] = data["bytecode"]

    def _contract(self, name: str, address: str) -> Any:
        return self.w3.eth.contract(address=to_checksum_address(address), abi=self._abi[name])

    async def rpc(self, method: str, params: list[Any] | None = None) -> Any:
        """A raw JSON-RPC call to anvil; raises EvmSandboxError on an error answer."""
        answer = await self.w3.provider.make_request(method, params or [])
        if "error" in answer:
            raise EvmSandboxError(f"{method} failed: {answer['error']}")
        return answer.get("result")

    async def _transact(self, call: Any, *, value: int = 0, sender: str | None = None) -> Any:
        tx_hash = await call.transact({"from": sender or self._faucet, "value": value, "gas": _GAS})
        return await self._receipt(tx_hash)

    async def _receipt(self, tx_hash: Any) -> Any:
        receipt = await self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)
        if receipt["status"] != 1:
            raise EvmSandboxError(f"sandbox transaction {tx_hash.hex()} reverted")
        return receipt

    async def _deploy_contract(self, name: str, *args: Any) -> str:
        factory = self.w3.eth.contract(abi=self._abi[name], bytecode=self._bytecode[name])
        tx_hash = await factory.constructor(*args).transact(
            {"from": self._faucet, "gas": _DEPLOY_GAS}
        )
        receipt = await self._receipt(tx_hash)
        return to_checksum_address(receipt["contractAddress"])

    async def _deploy(self) -> None:
        accounts = await self.w3.eth.accounts
        self._faucet = to_checksum_address(accounts[0])
        await self.rpc("anvil_setBalance", [self._faucet, hex(_FAUCET_ETH)])
        d = self._deployment
        d.weth = await self._deploy_contract("WETH9")
        d.tokens["WETH"], d.decimals["WETH"], d.kinds["WETH"] = d.weth, 18, "weth"
        for spec in self.config.tokens:
            if spec.kind == "usdc":
                address = await self._deploy_contract("WETH9")
                for slot, word in (
                    (0, _short_string_slot(spec.name)),
                    (1, _short_string_slot(spec.symbol)),
                    (2, "0x" + (spec.decimals).to_bytes(32, "big").hex()),
                ):
                    await self.rpc("anvil_setStorageAt", [address, hex(slot), word])
            elif spec.kind == "erc20":
                address = await self._deploy_contract("ERC20", spec.name, spec.symbol)
            else:
                raise EvmSandboxError(f"unknown token kind {spec.kind!r} for {spec.symbol}")
            d.tokens[spec.symbol], d.decimals[spec.symbol] = address, spec.decimals
            d.kinds[spec.symbol] = spec.kind
        d.factory = await self._deploy_contract("Factory")
        d.position_manager = await self._deploy_contract(
            "PositionManager", d.factory, d.weth, ZERO_ADDRESS
        )
        d.router = await self._deploy_contract(
            "SwapRouter02", ZERO_ADDRESS, d.factory, d.position_manager, d.weth
        )
        d.quoter = await self._deploy_contract("QuoterV2", d.factory, d.weth)
        # the faucet's reserves, approved to the position manager and the router
        for symbol in d.tokens:
            await self._reserve(symbol)
            token = self._token_contract(symbol)
            for spender in (d.position_manager, d.router):
                await self._transact(token.functions.approve(spender, MAX_UINT256))
        for pool in self.config.pools:
            await self._create_pool(pool)

    def _token_contract(self, symbol: str) -> Any:
        kind = self._deployment.kinds[symbol]
        return self._contract("ERC20" if kind == "erc20" else "WETH9", self.token(symbol))

    async def _reserve(self, symbol: str) -> None:
        """Top up the faucet's holding of ``symbol``."""
        kind = self._deployment.kinds[symbol]
        token = self._token_contract(symbol)
        if kind == "weth":
            await self._transact(token.functions.deposit(), value=_FAUCET_WETH)
        elif kind == "usdc":
            await self._transact(token.functions.deposit(), value=_FAUCET_USDC)
        else:
            await self._transact(token.functions.mint(self._faucet, _FAUCET_MINT))

    async def _create_pool(self, spec: PoolSpec) -> None:
        d = self._deployment
        base, quote = self.token(spec.base), self.token(spec.quote)
        token0, token1 = sorted((base, quote), key=lambda a: int(a, 16))
        dec0, dec1 = d.decimals[self.symbol(token0)], d.decimals[self.symbol(token1)]
        base_is_token0 = token0 == base
        sqrt_price = price_to_sqrt_price_x96(spec.price, dec0, dec1, base_is_token0=base_is_token0)
        manager = self._contract("PositionManager", d.position_manager)
        await self._transact(
            manager.functions.createAndInitializePoolIfNecessary(
                token0, token1, spec.fee, sqrt_price
            )
        )
        factory = self._contract("Factory", d.factory)
        pool = to_checksum_address(await factory.functions.getPool(token0, token1, spec.fee).call())
        quote_units = _units(spec.depth, d.decimals[spec.quote])
        base_units = _units(spec.depth / spec.price, d.decimals[spec.base])
        amount0, amount1 = (
            (base_units, quote_units) if base_is_token0 else (quote_units, base_units)
        )
        spacing = TICK_SPACING[spec.fee]
        lower = -(-MIN_TICK // spacing) * spacing
        upper = (MAX_TICK // spacing) * spacing
        deadline = 2**32
        params = (
            token0,
            token1,
            spec.fee,
            lower,
            upper,
            amount0,
            amount1,
            0,
            0,
            self._faucet,
            deadline,
        )
        await self._transact(manager.functions.mint(params))
        d.pools[spec.key] = pool
        self._pool_specs[spec.key] = spec

    # -- controls --------------------------------------------------------------

    async def fund(self, address: str, amount: Decimal, token: str | None = None) -> None:
        """Give ``address`` ``amount`` whole units of ETH (``token=None``) or of a token."""
        address = to_checksum_address(address)
        if token is None or token.upper() == "ETH":
            wei = _units(amount, 18)
            balance = await self.w3.eth.get_balance(address)
            await self.rpc("anvil_setBalance", [address, hex(balance + wei)])
            return
        symbol = self.symbol(token)
        units = _units(amount, self._deployment.decimals[symbol])
        contract = self._token_contract(symbol)
        if self._deployment.kinds[symbol] == "erc20":
            await self._transact(contract.functions.mint(address, units))
            return
        if await contract.functions.balanceOf(self._faucet).call() < units:
            await self._transact(contract.functions.deposit(), value=units)
        await self._transact(contract.functions.transfer(address, units))

    async def balance(self, address: str, token: str | None = None) -> Decimal:
        """``address``'s ETH (``token=None``) or token balance in whole units."""
        address = to_checksum_address(address)
        if token is None or token.upper() == "ETH":
            return Decimal(await self.w3.eth.get_balance(address)).scaleb(-18)
        symbol = self.symbol(token)
        units = await self._token_contract(symbol).functions.balanceOf(address).call()
        return Decimal(units).scaleb(-self._deployment.decimals[symbol])

    def _pool_info(self, key: str) -> PoolInfo:
        spec = self._pool_specs[key]
        base, quote = self.token(spec.base), self.token(spec.quote)
        token0, token1 = sorted((base, quote), key=lambda a: int(a, 16))
        d = self._deployment
        return PoolInfo(
            d.pools[key],
            token0,
            token1,
            d.decimals[self.symbol(token0)],
            d.decimals[self.symbol(token1)],
            token0 == base,
        )

    def _pool_keys(self, token: str, quote: str, fee: int | None) -> list[str]:
        base, quote = self.symbol(token), self.symbol(quote)
        keys = [
            key
            for key, spec in self._pool_specs.items()
            if {spec.base, spec.quote} == {base, quote} and (fee is None or spec.fee == fee)
        ]
        if not keys:
            raise EvmSandboxError(f"no {base}/{quote} pool" + ("" if fee is None else f" at {fee}"))
        return keys

    async def price(self, token: str, quote: str = "WETH", fee: int | None = None) -> Decimal:
        """``quote`` per ``token`` from ``slot0`` of the pair's pool at ``fee`` (the first
        pool of the pair when ``None``)."""
        key = self._pool_keys(token, quote, fee)[0]
        info = self._pool_info(key)
        sqrt_price = (await self._contract_pool(info.pool).functions.slot0().call())[0]
        price = info.price(int(sqrt_price))
        # the pool may be stored the other way round (e.g. WETH/USDC asked as USDC/WETH)
        return price if self.symbol(info.base_token) == self.symbol(token) else 1 / price

    def _contract_pool(self, address: str) -> Any:
        return self.w3.eth.contract(address=to_checksum_address(address), abi=POOL_ABI)

    async def set_price(
        self, token: str, price: Decimal, quote: str = "WETH", fee: int | None = None
    ) -> dict[str, Decimal]:
        """Move every ``token``/``quote`` pool (or the one at ``fee``) to ``price`` quote per
        token by swapping against it from the faucet; ``{pool key: price after}``."""
        if not isinstance(price, Decimal) or not price.is_finite() or price <= 0:
            raise EvmSandboxError(f"price must be a finite Decimal > 0, got {price!r}")
        router = self._contract("SwapRouter02", self._deployment.router)
        moved: dict[str, Decimal] = {}
        for key in self._pool_keys(token, quote, fee):
            info = self._pool_info(key)
            spec = self._pool_specs[key]
            wanted = price if self.symbol(token) == spec.base else 1 / price
            target = price_to_sqrt_price_x96(
                wanted, info.decimals0, info.decimals1, base_is_token0=info.base_is_token0
            )
            target = min(max(target, MIN_SQRT_RATIO + 1), MAX_SQRT_RATIO - 1)
            current = int((await self._contract_pool(info.pool).functions.slot0().call())[0])
            if target != current:
                zero_for_one = target < current  # selling token0 lowers token1-per-token0
                token_in, token_out = (
                    (info.token0, info.token1) if zero_for_one else (info.token1, info.token0)
                )
                symbol_in = self.symbol(token_in)
                contract_in = self._token_contract(symbol_in)
                amount_in = int(await contract_in.functions.balanceOf(self._faucet).call()) // 2
                params = (token_in, token_out, spec.fee, self._faucet, amount_in, 0, target)
                await self._transact(router.functions.exactInputSingle(params))
                await self._reserve(symbol_in)
            after = int((await self._contract_pool(info.pool).functions.slot0().call())[0])
            got = sqrt_price_x96_to_price(
                after, info.decimals0, info.decimals1, base_is_token0=info.base_is_token0
            )
            moved[key] = got if self.symbol(token) == spec.base else 1 / got
        return moved

    async def snapshot(self) -> str:
        """``evm_snapshot``: an id to :meth:`revert` to."""
        return str(await self.rpc("evm_snapshot"))

    async def revert(self, snapshot_id: str) -> None:
        """``evm_revert`` to ``snapshot_id`` (consumes it and every later snapshot)."""
        if not await self.rpc("evm_revert", [snapshot_id]):
            raise EvmSandboxError(f"evm_revert to {snapshot_id} failed")

    async def set_automine(self, enabled: bool) -> None:
        """Mine a block per transaction (True) or only on :meth:`mine` (False)."""
        await self.rpc("evm_setAutomine", [enabled])

    async def mine(self, blocks: int = 1) -> None:
        """Mine ``blocks`` blocks now (with whatever the mempool holds)."""
        for _ in range(blocks):
            await self.rpc("evm_mine")

    async def set_next_base_fee(self, wei: int) -> None:
        """The next block's base fee (``anvil_setNextBlockBaseFeePerGas``)."""
        await self.rpc("anvil_setNextBlockBaseFeePerGas", [hex(wei)])

    async def block_number(self) -> int:
        """The latest block's number."""
        return int(await self.w3.eth.block_number)
