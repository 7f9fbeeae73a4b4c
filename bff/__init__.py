"""The bff service: the single entry point a frontend calls."""
