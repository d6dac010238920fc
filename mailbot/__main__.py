"""`python -m mailbot` runs the command line."""

from mailbot.app.launch import main

main()
