"""Pure DataFrame -> DataFrame transforms (no IO, no session lookup, no clock)."""
