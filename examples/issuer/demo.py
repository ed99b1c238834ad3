"""Demo directory: users, OAuth clients and a risk table. Stand-ins for an IdP's real sources.

Passwords are stored as PBKDF2 hashes and client secrets as SHA-256 hashes (they are long
random strings in real life); both are compared in constant time. The cleartext values are
only in the README, for the walkthrough.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from dataclasses import dataclass

PBKDF2_ROUNDS = 60_000


@dataclass(frozen=True, slots=True)
class User:
    id: str
    salt: str
    password_hash: str
    tier: str
    department: str
    groups: tuple[str, ...]
    otp: str | None  # a fixed one-time code standing in for a TOTP device
    risk: float  # the identity-protection score of the account


@dataclass(frozen=True, slots=True)
class Client:
    id: str
    type: str  # public | confidential
    secret_hash: str | None
    grants: tuple[str, ...]
    workload: str | None = None  # client-credentials clients: where the workload runs


USERS = {u.id: u for u in (
    User("alice", "2bd806c97f0e00af", "a535f754981965d685abf4bd87b5293fc52af2b340e6c8a09a94c440734c264a",
         "standard", "engineering", ("engineering",), "123456", 0.0),
    User("bob", "81b637d8fcd2c6da", "7565b29af94d44941354744fcd858e97caf175c696618a6a00fb152ab32a92f7",
         "standard", "contractor", ("contractors",), None, 0.0),
    User("mallory", "c0a497761b175379", "fe50ad301d5c3d74bd45ecbb0c1333a3c3695c70e0e53694267cfdd6e4216d36",
         "standard", "sales", (), None, 0.95),
)}

CLIENTS = {c.id: c for c in (
    Client("web", "confidential", "761fed9dbb22427bedbc73c3f0ab93fff41104aa77eb145025d0113be8c035a3",
           ("password", "refresh_token")),
    Client("cli", "public", None, ("password", "refresh_token")),
    Client("reporter", "confidential", "f4497fc39757f6c57d04503bb6d3e32682e561996058938bc96c6057faa197c8",
           ("client_credentials",), workload="kubernetes"),
)}

# Threat-intelligence view of networks (documentation ranges, RFC 5737).
NETWORK_RISK = (
    (ipaddress.ip_network("203.0.113.0/24"), 0.6),  # anonymising VPN exit nodes
    (ipaddress.ip_network("10.66.0.0/16"), 0.6),  # an office subnet where the SOC is chasing malware
    (ipaddress.ip_network("192.0.2.0/24"), 0.95),  # a known botnet
)

# A dummy hash to compare against for unknown users, so timing does not reveal who exists.
_DUMMY = User("", "00" * 8, "00" * 32, "standard", "sales", (), None, 0.0)


def check_password(username: str, password: str) -> User | None:
    user = USERS.get(username)
    candidate = user or _DUMMY
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), bytes.fromhex(candidate.salt), PBKDF2_ROUNDS).hex()
    ok = hmac.compare_digest(digest, candidate.password_hash)
    return user if ok and user is not None else None


def check_otp(user: User, otp: str | None) -> bool:
    return bool(otp) and user.otp is not None and hmac.compare_digest(otp.encode(), user.otp.encode())


def authenticate_client(client_id: str | None, secret: str | None) -> Client | None:
    """The client, if ``secret`` is right (confidential) or absent (public)."""
    client = CLIENTS.get(client_id or "")
    if client is None:
        return None
    if client.secret_hash is None:
        return client if secret is None else None
    if secret is None:
        return None
    return client if hmac.compare_digest(hashlib.sha256(secret.encode()).hexdigest(), client.secret_hash) else None


def risk_of(user: User | None, ip: str | None) -> float:
    """The higher of the account's risk and the network's."""
    risk = user.risk if user else 0.0
    if ip:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return risk
        for network, score in NETWORK_RISK:
            if address.version == network.version and address in network:
                risk = max(risk, score)
    return risk
