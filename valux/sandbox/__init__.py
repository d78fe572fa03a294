"""`valux sandbox`: Solana mainnet, Jupiter and the price APIs stood in for on loopback.

Production clients talk to it unchanged (solana-py's ``AsyncClient``, aiohttp), so live
mode can be tried without funds and tests run the production code paths.

Modules, from the chain up:

- :mod:`~valux.sandbox.spl` — SPL Token / ATA / compute-budget instruction builders,
  account parsing, base58, RPC-style token amounts.
- :mod:`~valux.sandbox.txerror` — transaction errors as the RPC renders them.
- :mod:`~valux.sandbox.ledger` — :class:`SolanaLedger`: LiteSVM plus a slot clock, a
  150-block blockhash window, commitment levels, landing delay and seeded drops.
- :mod:`~valux.sandbox.solana_rpc` — :class:`SolanaRpcServer`, the JSON-RPC endpoint.
- :mod:`~valux.sandbox.market` — :class:`Market`: test mints and constant-product pools
  against wrapped SOL, held as real SPL token accounts.
- :mod:`~valux.sandbox.jupiter`, :mod:`~valux.sandbox.price_apis`,
  :mod:`~valux.sandbox.control`, :mod:`~valux.sandbox.web` — the HTTP service:
  Jupiter quote/swap, Jupiter Price v3, DexScreener, Pyth Hermes, control endpoints.
- :mod:`~valux.sandbox.runtime` — :class:`Sandbox`, everything together, and
  ``sandbox.json``; :mod:`~valux.sandbox.cli` — ``python -m valux.sandbox``.

The package imports no other valux room: it is a stand-in for the outside world.
"""
