"""Mail going out: signed tokens, composing, wording, the outbox and its transports."""
