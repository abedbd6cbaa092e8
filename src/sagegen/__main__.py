"""``python -m sagegen``."""

from sagegen.cli.main import main

main()
