"""The whole Solana sandbox in one object: ledger + clock, JSON-RPC, Jupiter/price/control.

Contract:

- :class:`Sandbox` is an async context manager (or ``start``/``stop``): ``start`` builds
  the ledger and the market (test mints and pools, funded by real transactions), starts
  the slot clock, the RPC server and the HTTP service on loopback (free ports unless
  configured), and — unless ``write_manifest=False`` — writes the manifest to
  ``<data_dir>/sandbox.json`` (mode 0600, atomically). ``stop`` ends all of it and
  removes the manifest it wrote (if no other sandbox replaced it since), so a manifest
  left on disk after a clean stop never points at dead ports.
- The manifest (:meth:`Sandbox.manifest`) has the keys ``solana_rpc_url``,
  ``jupiter_url`` (base of ``/swap/v1/...`` and ``/price/v3``), ``control_url`` (base of
  ``/fund``, ``/price``, ``/network``, ``/state``), ``dexscreener_url``, ``pyth_url``,
  ``jupiter_api_key``, ``tokens`` (``{symbol: mint}``), ``sol_mint``, ``pyth_feeds``
  (``{symbol: feed id}``), ``seed``, ``pid``, ``started_at`` (ISO-8601 UTC) and ``env``:
  the environment that points valux at the sandbox — ``VALUX_SOLANA__RPC_URL``,
  ``VALUX_JUPITER__URL``, ``VALUX_JUPITER__API_KEY``, ``VALUX_JUPITER__PRICE_URL``,
  ``VALUX_FEEDS__JUPITER__ENABLED`` (prices of the positions' mints from its
  ``/price/v3``), ``VALUX_FEEDS__DEXSCREENER__URL``, ``VALUX_FEEDS__PYTH__URL``.
- With ``evm=True`` (what ``valux sandbox`` does unless ``--no-evm``) it also starts the
  EVM half (:class:`~valux.sandbox.evm.EvmSandbox`: anvil with chain id 42161 and real
  Uniswap V3 bytecode) before the service; the manifest gains that side's keys
  (``evm_rpc_url``, ``chain_id``, ``evm_tokens``, ``router``, ``quoter``, …) and ``env`` the
  ``VALUX_EVM__*`` settings; ``/control/fund`` and ``/control/price`` serve 0x addresses
  and its tokens.
- The Jupiter API key defaults to one derived from the seed (stable across runs, so a
  saved environment keeps working); ``api_key=None`` in :class:`SandboxConfig` with
  ``require_api_key=False`` leaves the API open.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Final, Self

from valux.sandbox.evm import EvmSandbox, EvmSandboxConfig
from valux.sandbox.jupiter import JupiterService
from valux.sandbox.ledger import LedgerConfig, SolanaLedger, check_network
from valux.sandbox.market import DEFAULT_SOL_USD, DEFAULT_TOKENS, Market, TokenSpec
from valux.sandbox.price_apis import pyth_feed_ids
from valux.sandbox.solana_rpc import SolanaRpcServer
from valux.sandbox.spl import NATIVE_MINT
from valux.sandbox.web import ServiceConfig

__all__ = ["DEFAULT_DATA_DIR", "MANIFEST_NAME", "Sandbox", "SandboxConfig"]

DEFAULT_DATA_DIR: Final = Path.home() / ".valux" / "sandbox"
MANIFEST_NAME: Final = "sandbox.json"


@dataclass(frozen=True, slots=True, kw_only=True)
class SandboxConfig:
    """Everything a sandbox is started with."""

    data_dir: Path = DEFAULT_DATA_DIR
    host: str = "127.0.0.1"
    rpc_port: int = 0
    service_port: int = 0
    seed: int = 0
    slot_ms: float | None = 400.0
    landing_delay_slots: int = 0
    drop_rate: float = 0.0
    skip_rate: float = 0.0
    tokens: tuple[TokenSpec, ...] = DEFAULT_TOKENS
    sol_usd: Decimal = DEFAULT_SOL_USD
    fee_bps: int = 30
    api_key: str | None = None
    """The Jupiter ``x-api-key``; ``None`` = derived from the seed (or none, see below)."""
    require_api_key: bool = True
    pyth_stream_interval_s: float = 0.4
    write_manifest: bool = True
    evm: bool = False
    """Also run the EVM half (anvil + Uniswap V3; needs node and npm)."""

    def __post_init__(self) -> None:
        if self.host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the sandbox listens on loopback only")
        check_network(self.slot_ms, self.landing_delay_slots, self.drop_rate, self.skip_rate)

    def effective_api_key(self) -> str | None:
        """The key the service requires, or ``None`` when it is open."""
        if not self.require_api_key:
            return None
        if self.api_key:
            return self.api_key
        return (
            "sandbox-" + hashlib.sha256(f"valux-sandbox-key:{self.seed}".encode()).hexdigest()[:32]
        )


class Sandbox:
    """A running Solana sandbox (see the module contract)."""

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config or SandboxConfig()
        self._ledger: SolanaLedger | None = None
        self._market: Market | None = None
        self._rpc: SolanaRpcServer | None = None
        self._service: JupiterService | None = None
        self._evm: EvmSandbox | None = None
        self._started_at: datetime | None = None
        self._written_for: str | None = None
        """The RPC URL of the manifest this sandbox wrote (to remove only its own)."""

    # ------------------------------------------------------------ parts

    @property
    def ledger(self) -> SolanaLedger:
        if self._ledger is None:
            raise RuntimeError("the sandbox is not started")
        return self._ledger

    @property
    def market(self) -> Market:
        if self._market is None:
            raise RuntimeError("the sandbox is not started")
        return self._market

    @property
    def rpc(self) -> SolanaRpcServer:
        if self._rpc is None:
            raise RuntimeError("the sandbox is not started")
        return self._rpc

    @property
    def service(self) -> JupiterService:
        if self._service is None:
            raise RuntimeError("the sandbox is not started")
        return self._service

    @property
    def evm(self) -> EvmSandbox:
        if self._evm is None:
            raise RuntimeError("the sandbox runs no EVM (evm=False)")
        return self._evm

    @property
    def manifest_path(self) -> Path:
        return self.config.data_dir / MANIFEST_NAME

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> dict[str, Any]:
        """Start everything; return the manifest (also written unless disabled)."""
        if self._ledger is not None:
            return self.manifest()
        cfg = self.config
        ledger = SolanaLedger(
            LedgerConfig(
                seed=cfg.seed,
                slot_ms=cfg.slot_ms,
                landing_delay_slots=cfg.landing_delay_slots,
                drop_rate=cfg.drop_rate,
                skip_rate=cfg.skip_rate,
            )
        )
        market = Market(ledger, cfg.tokens, sol_usd=cfg.sol_usd, fee_bps=cfg.fee_bps)
        rpc = SolanaRpcServer(ledger, host=cfg.host, port=cfg.rpc_port)
        service = JupiterService(
            market,
            ServiceConfig(
                api_key=cfg.effective_api_key(),
                pyth_stream_interval_s=cfg.pyth_stream_interval_s,
            ),
            host=cfg.host,
            port=cfg.service_port,
        )
        self._ledger, self._market, self._rpc, self._service = ledger, market, rpc, service
        try:
            if cfg.evm:
                self._evm = EvmSandbox(EvmSandboxConfig(host=cfg.host))
                await self._evm.start()
                service.evm = self._evm
            await rpc.start()
            await service.start()
            await ledger.start()
        except BaseException:
            await self.stop()
            raise
        self._started_at = datetime.now(UTC)
        manifest = self.manifest()
        if cfg.write_manifest:
            self._write_manifest(manifest)
        return manifest

    async def stop(self) -> None:
        """Stop everything and remove the manifest (idempotent)."""
        if self._ledger is not None:
            await self._ledger.stop()
        if self._service is not None:
            await self._service.stop()
        if self._rpc is not None:
            await self._rpc.stop()
        if self._evm is not None:
            await self._evm.stop()
        self._ledger = self._market = self._rpc = self._service = None
        self._evm = None
        if self._written_for is not None:
            self._remove_manifest(self._written_for)
            self._written_for = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------ manifest

    def manifest(self) -> dict[str, Any]:
        """What ``sandbox.json`` holds (see the module contract)."""
        base = self.service.url
        api_key = self.service.settings.api_key
        env = {
            "VALUX_SOLANA__RPC_URL": self.rpc.url,
            "VALUX_JUPITER__URL": base,
            "VALUX_JUPITER__API_KEY": api_key or "",
            "VALUX_JUPITER__PRICE_URL": base,
            "VALUX_FEEDS__JUPITER__ENABLED": "true",
            "VALUX_FEEDS__DEXSCREENER__URL": base,
            "VALUX_FEEDS__PYTH__URL": base,
        }
        started = self._started_at or datetime.now(UTC)
        evm: dict[str, Any] = {}
        if self._evm is not None:
            evm = self._evm.description()
            env.update(
                {
                    "VALUX_EVM__RPC_URL": evm["evm_rpc_url"],
                    "VALUX_EVM__CHAIN_ID": str(evm["chain_id"]),
                    "VALUX_EVM__ROUTER": evm["router"],
                    "VALUX_EVM__QUOTER": evm["quoter"],
                    "VALUX_EVM__WETH": evm["evm_tokens"]["WETH"],
                    "VALUX_EVM__FACTORY": evm["evm_factory"],
                    "VALUX_FEEDS__UNISWAP__ENABLED": "true",
                    "VALUX_FEEDS__UNISWAP__URL": evm["evm_ws_url"],
                }
            )
        return {
            **evm,
            "solana_rpc_url": self.rpc.url,
            "jupiter_url": base,
            "control_url": f"{base}/control",
            "dexscreener_url": base,
            "pyth_url": base,
            "jupiter_api_key": api_key,
            "tokens": self.market.tokens(),
            "sol_mint": str(NATIVE_MINT),
            "pyth_feeds": pyth_feed_ids(self.market),
            "seed": self.config.seed,
            "pid": os.getpid(),
            "started_at": started.isoformat(),
            "env": env,
        }

    def _write_manifest(self, manifest: dict[str, Any]) -> None:
        directory = self.config.data_dir
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / f".{MANIFEST_NAME}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(manifest, handle, indent=2)
            handle.write("\n")
        os.replace(tmp, self.manifest_path)
        self._written_for = str(manifest["solana_rpc_url"])

    def _remove_manifest(self, rpc_url: str) -> None:
        """Remove the manifest if it is still the one this sandbox wrote."""
        try:
            current = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        if isinstance(current, dict) and current.get("solana_rpc_url") == rpc_url:
            self.manifest_path.unlink(missing_ok=True)
