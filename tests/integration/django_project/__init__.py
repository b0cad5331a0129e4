"""A real Django project for the tests of ``outboxkit.contrib.django`` (a shop that emits events).

Its databases come from the environment (``settings.py``), so the test process and the
``python -m django outbox_relay`` processes it starts use the same ones."""
