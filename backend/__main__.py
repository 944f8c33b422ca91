"""`python -m prelabel ...` runs the command line."""

from prelabel.scripts.cli import main

main()
