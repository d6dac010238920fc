"""What the operator configures: the config file's schema and loader, the team."""
