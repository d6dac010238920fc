"""OAuth2 access tokens for the IMAP mailboxes and the relay (Microsoft 365, Google, RFC 6749)."""
