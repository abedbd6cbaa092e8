"""Reusable test helpers (fault-injecting servers, ...)."""
