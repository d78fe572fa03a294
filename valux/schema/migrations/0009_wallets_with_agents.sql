-- Every wallet now lives in its agent's host process (no wallet hosts of their own): a
-- wallet's host slot is its agent's, so the agent host that recovers the agent recovers
-- its wallet, and only that one.
UPDATE wallets w SET host_slot = a.host_slot
  FROM agents a WHERE a.wallet_id = w.id AND w.host_slot <> a.host_slot;
UPDATE agents SET wallet_slot = host_slot WHERE wallet_slot <> host_slot;
