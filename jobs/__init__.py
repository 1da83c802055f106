"""Entry points: each job is a thin ``main(argv) -> int``."""
