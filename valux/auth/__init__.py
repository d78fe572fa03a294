"""Authentication building blocks: pure, storage-agnostic, wired into the API elsewhere.

- :mod:`~valux.auth.passwords`: argon2id hashes, the strength minimum, the lockout policy.
- :mod:`~valux.auth.tokens`: JWT access tokens, rotating refresh-token families, the key file.
- :mod:`~valux.auth.siwe` / :mod:`~valux.auth.siws`: Sign-In with Ethereum / Solana, on the
  shared skeleton in :mod:`~valux.auth.signin`.
- :mod:`~valux.auth.nonces` and :mod:`~valux.auth.ratelimit`: the two pieces that talk to
  Redis (single-use login nonces, sliding-window limits).
- :mod:`~valux.auth.webhooks`: HMAC-SHA256 webhook signatures.
- :mod:`~valux.auth.api_keys`: ``vx_<prefix>_<secret>`` keys with scopes.
- :mod:`~valux.auth.audit`: the audit log's event names and ``write_audit`` (one row, on a
  connection the caller passes; for the API and the custody code alike).
- :mod:`~valux.auth.errors`: every error above, with its stable code.

Functions take what the caller stored and return what it must store; nothing
here opens a database (``write_audit`` writes through the caller's connection). This
room imports only :mod:`valux.errors`. The API joins these pieces to storage in
:mod:`valux.api.auth_service`.
"""
