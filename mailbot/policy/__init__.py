"""Support policy (pure): priority rules, business hours, response targets."""
