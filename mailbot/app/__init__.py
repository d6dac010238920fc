"""The top: the `mailbot` command, the daemon, and what the command line prints."""
