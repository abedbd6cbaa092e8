"""Screens: how the command line draws what the core computes (the core itself never imports rich)."""
