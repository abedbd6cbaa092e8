"""``python -m sagegen.cli``."""

from sagegen.cli.main import main

main()
