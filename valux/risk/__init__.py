"""Risk: trading states (ACTIVE / REDUCING / HALTED), the breakers that trip them, and the
pre-trade checks that follow from them. Pure logic; the hosts apply it."""
