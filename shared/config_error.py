"""The one exception every configuration check raises (shared/config.py re-exports it)."""

from __future__ import annotations


class ConfigError(Exception):
    """A configuration problem, worded as one line that names the field."""
