"""`python -m workers.cli …` runs the `relous` command."""

from workers.cli import main

main()
