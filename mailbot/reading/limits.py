"""What one inbound mail may contain, and the error that refuses it."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import email.message
    import email.policy


class ParseError(Exception):
    """The mail cannot be turned into a message record; it belongs in quarantine."""


@dataclass(frozen=True)
class Limits:
    """Bounds on what one inbound mail may contain; beyond them it is quarantined."""

    # Largest accepted mail in bytes (the SMTP listener also announces it as SIZE).
    max_message_bytes: int = 25 * 1024 * 1024
    # Most attachments one mail may carry.
    max_attachments: int = 50
    # Largest single attachment in bytes.
    max_attachment_bytes: int = 20 * 1024 * 1024
    # Deepest MIME nesting (multipart inside multipart ...).
    max_mime_depth: int = 12
    # Most header lines in the top-level header block.
    max_headers: int = 500
    # Largest HTML part converted to text, in characters; the rest is cut off.
    max_html_chars: int = 512 * 1024
    # Largest header field in bytes (all its lines), in any part.
    max_header_bytes: int = 128 * 1024
    # Most addresses (and groups) in one address header (From, To, Cc, Reply-To ...).
    max_addresses: int = 1000
    # Most parameters in one Content-Type or Content-Disposition header.
    max_parameters: int = 100
    # Most MIME parts in one mail: every part the parser makes (the mail itself, each
    # multipart, each leaf, each forwarded mail), counted as they are made.
    max_parts: int = 1000


# Headers that hold addresses (and groups); their count is bounded by max_addresses.
ADDRESS_HEADERS = ("from", "sender", "reply-to", "to", "cc", "bcc", "resent-from",
                   "resent-sender", "resent-to", "resent-cc", "resent-bcc",
                   "disposition-notification-to", "return-receipt-to")
# Headers that hold parameters; their count is bounded by max_parameters.
PARAMETER_HEADERS = ("content-type", "content-disposition")


def check_headers(part: email.message.Message, limits: Limits) -> None:
    """Refuse a part whose header fields are beyond the limits, before any is read.

    Reading a field costs time in its size, and the standard library's address and
    parameter readers more than linear time in their counts (and recursion in nested
    groups), so size and counts are checked first, on the field as written.
    """
    for name, value in part.raw_items():
        value, key = str(value), name.lower()
        if len(value) > limits.max_header_bytes:
            raise ParseError(f"the {name} header is {len(value):,} bytes, over the limit of "
                             f"{limits.max_header_bytes:,} (limits.max_header_bytes)")
        if key in ADDRESS_HEADERS and value.count("@") + value.count(":") > limits.max_addresses:
            raise ParseError(f"the {name} header holds more than {limits.max_addresses:,} "
                             "addresses or groups (limits.max_addresses)")
        if key in PARAMETER_HEADERS and value.count(";") > limits.max_parameters:
            raise ParseError(f"the {name} header holds more than {limits.max_parameters:,} "
                             "parameters (limits.max_parameters)")


def counting_parts(limits: Limits) -> email.policy.Policy:
    """The parser's policy (compat32) with a count of the parts it makes: it stops at the
    first part over ``max_parts``, before the parts cost time in the parser or after it."""
    import email.message  # for the reader only: the settings import this module's Limits
    import email.policy

    made = itertools.count(1)

    def part(policy: email.policy.Policy) -> email.message.Message:
        if next(made) > limits.max_parts:
            raise ParseError(f"the mail has more than {limits.max_parts:,} MIME parts "
                             "(limits.max_parts)")
        return email.message.Message(policy)

    return email.policy.compat32.clone(message_factory=part)
