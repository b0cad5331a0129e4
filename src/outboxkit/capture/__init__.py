"""Change capture: triggers on business tables (``outboxkit capture``). See docs/capture.md."""

from outboxkit.capture.triggers import add_capture, list_captures, reinstall_captures, remove_capture
from outboxkit.stores.capture import CaptureSpec

__all__ = ["CaptureSpec", "add_capture", "list_captures", "reinstall_captures", "remove_capture"]
