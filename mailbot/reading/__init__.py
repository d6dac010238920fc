"""Reading a mail (pure): parse the bytes, classify the sender, find quotes, facts, bounces."""
