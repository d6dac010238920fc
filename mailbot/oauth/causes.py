"""Why a token could not be had, in words an operator can act on.

An identity provider answers ``invalid_client`` or ``AADSTS7000215``; the operator needs to
read "the client secret was refused" and what to check.  :class:`TokenError` carries that
sentence and whether retrying can help by itself (``refused`` False: the endpoint is
unreachable or busy) or only an operator can (``refused`` True: credentials, consent,
delegation or mailbox permission).
"""

from __future__ import annotations

import re

# OAuth2 error codes (RFC 6749 5.2, RFC 8628 3.5) and what they mean for mailbot.
CAUSES = {
    "invalid_client": "the identity provider refused the client id or its secret or "
                      "certificate (invalid_client)",
    "unauthorized_client": "the client may not get tokens this way (unauthorized_client)",
    "invalid_grant": "the refresh token or the grant was refused (invalid_grant): revoked, "
                     "expired or never valid; sign in again with `mailbot oauth login NAME`",
    "invalid_scope": "the scope was refused (invalid_scope): check scope",
    "invalid_request": "the token request was refused as malformed (invalid_request)",
    "consent_required": "consent missing: an administrator must grant the app's permission "
                        "(consent_required)",
    "interaction_required": "consent missing: the user or an administrator must sign in and "
                            "consent again (interaction_required)",
    "access_denied": "the sign-in was declined (access_denied)",
    "expired_token": "the sign-in code expired before it was entered (expired_token)",
    "unsupported_grant_type": "the token endpoint does not offer this grant "
                              "(unsupported_grant_type)",
}
# Microsoft Entra ID's AADSTS codes that name the cause better than the OAuth2 error.
AADSTS = {
    "65001": "consent missing: an administrator has not granted the app's API permission "
             "(IMAP.AccessAsApp / SMTP.SendAsApp, or the delegated ones) (AADSTS65001)",
    "7000215": "invalid client secret (AADSTS7000215): use the secret's Value, not its ID",
    "7000222": "the client secret expired (AADSTS7000222): create a new one",
    "700016": "the application is not found in the tenant (AADSTS700016): check client_id "
              "and tenant, or the app was deleted",
    "90002": "tenant not found (AADSTS90002): check tenant",
    "700027": "the certificate is not registered with the application (AADSTS700027)",
    "70000": "the refresh token was revoked (AADSTS70000): run `mailbot oauth login NAME`",
    "700082": "the refresh token expired after long disuse (AADSTS700082): run "
              "`mailbot oauth login NAME`",
    "50076": "multi-factor authentication is required (AADSTS50076): sign in again",
}
# Google's wording when domain-wide delegation does not cover the scope or the mailbox.
GOOGLE_DELEGATION = "Client is unauthorized to retrieve access tokens"
TRANSIENT = ("temporarily_unavailable", "server_error", "slow_down", "authorization_pending")


class TokenError(Exception):
    """No access token: ``cause`` in words, ``code`` the provider's error, ``refused``
    whether only an operator can fix it (credentials, consent, permission)."""

    def __init__(self, cause: str, refused: bool, code: str = "") -> None:
        super().__init__(cause)
        self.cause = cause
        self.refused = refused
        self.code = code


def refusal(answer: dict, status: int = 0) -> TokenError:
    """The error of a token endpoint's (or msal's) error answer, named in words."""
    code = str(answer.get("error") or (f"HTTP {status}" if status else "no access token"))
    description = _first_line(str(answer.get("error_description") or ""))
    aadsts = re.search(r"AADSTS(\d+)", description)
    if aadsts and aadsts.group(1) in AADSTS:
        words = AADSTS[aadsts.group(1)]
    elif GOOGLE_DELEGATION in description:
        words = ("domain-wide delegation missing: the service account's client ID is not "
                 "allowed https://mail.google.com/ for this mailbox in the Google Admin "
                 "console (unauthorized_client)")
    elif code in CAUSES:
        words = CAUSES[code]
    elif status == 429:
        words = "the token endpoint throttles us (HTTP 429)"
    elif status >= 500:
        words = f"the token endpoint failed (HTTP {status})"
    else:
        words = f"the token endpoint refused ({code})"
    refused = code not in TRANSIENT and status < 500 and status != 429
    return TokenError(f"{words}: {description}" if description else words, refused, code)


def unreachable(url: str, error: Exception) -> TokenError:
    """The token endpoint could not be asked at all (DNS, connection, TLS, timeout)."""
    return TokenError(f"token endpoint unreachable: {url}: {type(error).__name__}: "
                      f"{_first_line(str(error))}", refused=False, code="unreachable")


# Where to look when a mail server refuses a fresh token, by protocol.
PERMISSIONS = {
    "IMAP": "Microsoft: IMAP.AccessAsApp with admin consent, New-ServicePrincipal and "
            "Add-MailboxPermission for this mailbox; Google: domain-wide delegation, IMAP "
            "allowed for the user",
    "SMTP": "Microsoft: SMTP.SendAsApp with admin consent, New-ServicePrincipal and "
            "Add-MailboxPermission, SMTP AUTH enabled for the mailbox; Google: domain-wide "
            "delegation",
}


def login_refused(protocol: str, server: str, username: str, answer: str) -> TokenError:
    """The mail server refused a token just fetched: the token is fine, the access is not."""
    return TokenError(
        f"the {protocol} server {server} refused a fresh access token for {username} "
        f"({_first_line(answer)}): mailbox permission missing? ({PERMISSIONS[protocol]})",
        refused=True, code="login_refused")


def _first_line(text: str) -> str:
    """The first line of a provider's description (Microsoft adds trace IDs below it)."""
    return text.strip().splitlines()[0][:300] if text.strip() else ""
