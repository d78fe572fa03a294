"""Operations support: port-conflict checks and the embedded PostgreSQL / Redis servers.

Nothing here is on a trading path; these run at start-up, before any actor.
"""
