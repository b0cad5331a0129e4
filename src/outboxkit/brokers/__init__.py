"""Bus adapters: one module per bus, each implementing the protocols in ``base``."""
