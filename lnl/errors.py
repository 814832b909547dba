"""Errors raised for bad user input."""


class ConfigError(ValueError):
    """Bad user input: one clear line naming the value and what is allowed (docs/design.md, "Reliability")."""
