"""Trading: the Agent state machine and the per-tick position rules it runs."""
