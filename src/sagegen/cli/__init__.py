"""The command line and its screens: the only modules that draw (rich, typer)."""
