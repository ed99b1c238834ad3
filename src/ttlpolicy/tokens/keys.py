"""Keys for signing and verifying tokens: PEM and JWKS loading, JWK thumbprints.

Only asymmetric algorithms are offered. A verifier that holds an HMAC secret can also mint
tokens, and letting the token's header pick HMAC for a public key is the classic key-confusion
attack; refusing shared secrets outright removes both problems.

>>> from cryptography.hazmat.primitives.asymmetric import ec
>>> key = ec.generate_private_key(ec.SECP256R1())
>>> sorted(algorithms_for(key.public_key()))
['ES256']
>>> len(jwk_thumbprint(public_jwk(key)))
43
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

ASYMMETRIC_ALGORITHMS: tuple[str, ...] = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                                          "ES256", "ES384", "ES512", "EdDSA")
_RSA = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_EC_CURVES = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
# RFC 7638 §3.2: the members that identify a key, per key type.
_THUMBPRINT_MEMBERS = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x")}


class KeyFileError(ValueError):
    """A key file or JWK that cannot be used; the message names the file, never key material."""


def algorithms_for(key: Any) -> frozenset[str]:
    """The JWS algorithms a key can take part in, chosen by the key's type, never by a token.

    Works for public and private keys; anything else (bytes, a shared secret) gets no algorithm.
    """
    if isinstance(key, (rsa.RSAPublicKey, rsa.RSAPrivateKey)):
        return _RSA
    if isinstance(key, (ec.EllipticCurvePublicKey, ec.EllipticCurvePrivateKey)):
        alg = _EC_CURVES.get(key.curve.name)
        return frozenset({alg}) if alg else frozenset()
    if isinstance(key, (ed25519.Ed25519PublicKey, ed25519.Ed25519PrivateKey,
                        ed448.Ed448PublicKey, ed448.Ed448PrivateKey)):
        return frozenset({"EdDSA"})
    return frozenset()


@dataclass(frozen=True, slots=True)
class VerifyKey:
    """A public key, its ``kid`` (if it has one) and the algorithms it may verify."""

    key: Any
    kid: str | None
    algorithms: frozenset[str]


def check_algorithms(algorithms: Iterable[str]) -> tuple[str, ...]:
    """Validate an algorithm allow-list: non-empty and asymmetric only (``none``/HMAC refused)."""
    algorithms = tuple(algorithms)
    bad = [a for a in algorithms if a not in ASYMMETRIC_ALGORITHMS]
    if bad or not algorithms:
        raise ValueError(f"unsupported algorithms {bad or list(algorithms)}; use some of "
                         f"{', '.join(ASYMMETRIC_ALGORITHMS)}")
    return algorithms


def verify_key(key: Any, kid: str | None = None, allowed: Iterable[str] = ASYMMETRIC_ALGORITHMS) -> VerifyKey:
    """Wrap a public key (or the public half of a private key) for :class:`~.verify.IssuerConfig`."""
    if hasattr(key, "public_key"):  # a private key or a certificate: verify with its public half
        key = key.public_key()
    algorithms = algorithms_for(key) & frozenset(allowed)
    if not algorithms:
        raise KeyFileError(f"key {kid or '(no kid)'} cannot verify any of {', '.join(allowed)}")
    return VerifyKey(key, kid, algorithms)


def load_pem_public_key(path: str | Path, allowed: Iterable[str] = ASYMMETRIC_ALGORITHMS) -> VerifyKey:
    """A public key or X.509 certificate from a PEM file."""
    data = _read(path)
    try:
        if b"BEGIN CERTIFICATE" in data:
            key: Any = x509.load_pem_x509_certificate(data).public_key()
        else:
            key = serialization.load_pem_public_key(data)
    except ValueError:
        raise KeyFileError(f"{path}: not a PEM public key or certificate") from None
    return verify_key(key, None, allowed)


def load_jwks(source: str | Path | Mapping[str, Any], allowed: Iterable[str] = ASYMMETRIC_ALGORITHMS
              ) -> list[VerifyKey]:
    """The signature keys of a JWKS document (a file path or the parsed mapping).

    Shared-secret (``oct``) and encryption keys are skipped: they never verify a token. A key's
    own ``alg`` narrows what it may verify.
    """
    allowed = frozenset(allowed)
    name = "JWKS" if isinstance(source, Mapping) else str(source)
    try:
        document = source if isinstance(source, Mapping) else json.loads(_read(source))
        entries = document["keys"]
        if not isinstance(entries, list):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise KeyFileError(f"{name}: not a JWKS document ({{\"keys\": [...]}})") from None
    keys: list[VerifyKey] = []
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("kty") == "oct" or entry.get("use", "sig") != "sig":
            continue
        if "d" in entry or "p" in entry:
            raise KeyFileError(f"{name}: key {entry.get('kid')!r} holds private material; publish public keys only")
        try:
            key = jwt.PyJWK(entry).key
        except jwt.PyJWTError:
            raise KeyFileError(f"{name}: unusable key {entry.get('kid')!r}") from None
        algorithms = algorithms_for(key) & allowed
        if "alg" in entry:
            algorithms &= {entry["alg"]}
        if algorithms:
            kid = entry.get("kid")
            keys.append(VerifyKey(key, kid if isinstance(kid, str) else None, frozenset(algorithms)))
    return keys


def load_private_key(source: str | Path | bytes, password: bytes | None = None) -> Any:
    """A private signing key from a PEM file or PEM bytes (RSA, EC or Ed25519/Ed448)."""
    data = source if isinstance(source, bytes) else _read(source)
    try:
        key = serialization.load_pem_private_key(data, password=password)
    except (ValueError, TypeError):
        raise KeyFileError("not a PEM private key (or wrong password)") from None
    if not algorithms_for(key):
        raise KeyFileError("private key type cannot sign with an asymmetric JWS algorithm")
    return key


def private_key_pem(key: Any) -> bytes:
    """PKCS#8 PEM of a private key (unencrypted: protect the file, e.g. mode 0600)."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def public_jwk(key: Any, kid: str | None = None, alg: str | None = None) -> dict[str, Any]:
    """The public JWK of a (private or public) key, for a JWKS endpoint or a ``cnf`` claim."""
    public = key.public_key() if hasattr(key, "public_key") else key
    if isinstance(public, rsa.RSAPublicKey):
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(public))
    elif isinstance(public, ec.EllipticCurvePublicKey):
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(public))
    elif isinstance(public, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(public))
    else:
        raise TypeError(f"not an asymmetric key: {type(key).__name__}")
    jwk = {k: v for k, v in jwk.items() if k not in ("key_ops", "d")}
    if kid is not None:
        jwk["kid"] = kid
    if alg is not None:
        jwk["alg"] = alg
    jwk["use"] = "sig"
    return jwk


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 JWK SHA-256 thumbprint, base64url: a DPoP ``jkt`` and a good ``kid``.

    >>> jwk_thumbprint({"kty": "EC", "crv": "P-256", "x": "a", "y": "b", "kid": "ignored"})
    'RDgNRYDb79jbk-P-ajJnMZumfDir5astRaQ6H-xiOCM'
    """
    members = _THUMBPRINT_MEMBERS.get(str(jwk.get("kty")))
    if members is None or any(not isinstance(jwk.get(m), str) for m in members):
        raise ValueError("JWK lacks the members of its key type (RFC 7638)")
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
    return b64url(hashlib.sha256(canonical.encode()).digest())


def certificate_thumbprint(certificate: x509.Certificate | bytes) -> str:
    """RFC 8705 ``x5t#S256``: base64url SHA-256 of a client certificate's DER encoding."""
    der = certificate if isinstance(certificate, bytes) else certificate.public_bytes(serialization.Encoding.DER)
    return b64url(hashlib.sha256(der).digest())


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _read(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read {path}: {exc.strerror or exc}") from None
