"""Hosting: many logical actors per Ray actor (mailboxes, journal, recovery), call
batching, actor names and handles."""
