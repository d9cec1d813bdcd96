"""`python -m cli` runs the agg command."""

from cli.main import main

main()
