import signal


def _terminated_before_start(signum: int, frame: object) -> None:
    # SIGTERM while still importing or connecting: nothing was claimed yet, so stopping now is a
    # clean stop (exit 0), not a kill. Once running, the relay and the consumer install their own
    # handlers that finish the batch in flight first.
    raise SystemExit(0)


signal.signal(signal.SIGTERM, _terminated_before_start)

from outboxkit.cli import main  # noqa: E402 - after the handler, so an early SIGTERM is clean

main()
