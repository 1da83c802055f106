"""Development tooling: the embedded local stack, demo data and producers (not shipped)."""
