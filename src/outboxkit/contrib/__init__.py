"""Integrations with the frameworks services are written in (each an optional extra):
``outboxkit.contrib.django``, ``outboxkit.contrib.faststream``."""
