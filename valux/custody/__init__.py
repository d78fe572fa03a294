"""Custody: the Wallet state machine (balances, in-flight order intents)."""
