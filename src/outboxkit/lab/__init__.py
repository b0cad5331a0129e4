"""The lab: strategies run under injected faults, measured by one verifier. Starts with the demo."""
