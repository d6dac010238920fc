"""What our border MTA found out about a mail's sender: SPF, DKIM and DMARC (RFC 8601).

Anyone can write an Authentication-Results header, so only the ones our own receiving
server wrote count: those whose authserv-id is ``[trust] authserv_id``.  Of those, the
topmost wins (the last one added, by the server closest to us; a well-run MTA removes
older ones claiming its name).  Without a configured authserv-id nothing is known.
"""

from __future__ import annotations

from dataclasses import dataclass

import authres

from mailbot.reading.message import Message


@dataclass(frozen=True)
class Authentication:
    """The verdicts of our border MTA; ``""`` where it said nothing."""

    # spf: pass, fail, softfail, neutral, none, temperror, permerror
    spf: str = ""
    # The domain of the envelope sender SPF was checked for.
    spf_domain: str = ""
    # One (result, signing domain) pair per DKIM signature checked.
    dkim: tuple[tuple[str, str], ...] = ()
    # dmarc: pass, fail, none, ...
    dmarc: str = ""
    # The From domain DMARC was evaluated for.
    dmarc_domain: str = ""

    @property
    def known(self) -> bool:
        """Whether our MTA reported anything at all."""
        return bool(self.spf or self.dkim or self.dmarc)

    def dkim_pass(self, domain: str) -> bool:
        """Whether a DKIM signature of ``domain`` (or a parent domain of it) verified."""
        domain = domain.lower()
        return any(result == "pass" and (domain == d or domain.endswith("." + d))
                   for result, d in self.dkim)

    def spf_pass(self, domain: str) -> bool:
        """Whether SPF passed for an envelope sender of ``domain``."""
        return self.spf == "pass" and self.spf_domain == domain.lower()

    @property
    def failed(self) -> str:
        """Why the sender is not who it claims to be (SPF or DMARC failed), or ``""``."""
        if self.dmarc == "fail":
            return f"DMARC failed for {self.dmarc_domain or 'the From domain'}"
        if self.spf == "fail":
            return f"SPF failed for {self.spf_domain or 'the envelope sender'}"
        return ""


def authentication(msg: Message, authserv_id: str) -> Authentication:
    """The verdicts of the topmost Authentication-Results header of ``authserv_id``."""
    if not authserv_id:
        return Authentication()
    for value in msg.header_all("Authentication-Results"):
        try:
            header = authres.AuthenticationResultsHeader.parse_value(" ".join(value.split()))
        except Exception:  # noqa: S112 - a header we cannot read is a header we do not trust
            continue
        if str(header.authserv_id).lower() == authserv_id.lower():
            return _verdicts(header.results)
    return Authentication()


def _verdicts(results: list) -> Authentication:
    found: dict = {"dkim": []}
    for result in results:
        method, verdict = str(result.method).lower(), str(result.result).lower()
        props = {f"{p.type}.{p.name}".lower(): str(p.value).lower() for p in result.properties}
        if method == "spf" and "spf" not in found:
            sender = props.get("smtp.mailfrom", "") or props.get("smtp.helo", "")
            found.update(spf=verdict, spf_domain=sender.rpartition("@")[2])
        elif method == "dkim":
            found["dkim"].append((verdict, props.get("header.d", "")
                                  or props.get("header.i", "").rpartition("@")[2]))
        elif method == "dmarc" and "dmarc" not in found:
            found.update(dmarc=verdict, dmarc_domain=props.get("header.from", ""))
    return Authentication(spf=found.get("spf", ""), spf_domain=found.get("spf_domain", ""),
                          dkim=tuple(found["dkim"]), dmarc=found.get("dmarc", ""),
                          dmarc_domain=found.get("dmarc_domain", ""))
