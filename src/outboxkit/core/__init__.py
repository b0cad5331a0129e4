"""Decisions without I/O: event envelope, ids, ordering, retry. Imports nothing else of ours but errors."""
