"""Integrations with the frameworks services are written in (each an optional extra)."""
