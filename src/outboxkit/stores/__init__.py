"""Database adapters: one module per database, each implementing the protocols in ``base``."""
