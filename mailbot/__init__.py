"""mailbot: every support mail becomes a ticket, every customer gets an answer."""
