"""`python -m mailbot` runs the command line."""

from mailbot.app.cli import main

main()
