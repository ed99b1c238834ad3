"""Security Event Tokens (RFC 8417) pushed per RFC 8935: what is accepted and every reason to refuse."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jwt
import pydantic
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ttlpolicy.activity.security_events import CAEP, RISC, SetRejected, SetVerifier, Transmitter

ISS = "https://idp.example.com"
AUD = "https://ttlpolicy.example.com"
KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_KEY = ec.generate_private_key(ec.SECP256R1())
NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def transmitter(tmp_path: Path, **kw: Any) -> Transmitter:
    pem = tmp_path / "idp.pem"
    pem.write_bytes(KEY.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    return Transmitter.model_validate({"issuer": ISS, "audience": AUD, "public_keys": [str(pem)],
                                       "algorithms": ["ES256"], **kw})


def make_set(event: str = RISC + "credential-compromise", *, key: Any = KEY, typ: str | None = "secevent+jwt",
             payload: dict[str, Any] | None = None, alg: str = "ES256", **claims: Any) -> str:
    body: dict[str, Any] = {"iss": ISS, "aud": AUD, "iat": int(NOW), "jti": "set-1",
                            "sub_id": {"format": "iss_sub", "iss": ISS, "sub": "alice"},
                            "events": {event: payload if payload is not None else {"credential_type": "password"}}}
    body.update(claims)
    body = {k: v for k, v in body.items() if v is not None}
    headers = {"typ": typ} if typ else {}
    return jwt.encode(body, key, algorithm=alg, headers=headers)


@pytest.fixture
def verifier(tmp_path: Path) -> SetVerifier:
    return SetVerifier([transmitter(tmp_path)], clock=lambda: NOW)


def test_a_valid_set_becomes_one_event(verifier: SetVerifier) -> None:
    event = verifier.verify(make_set())
    assert (event.type, event.subject, event.subject_format, event.issuer, event.jti) == (
        "credential-compromise", "alice", "iss_sub", ISS, "set-1")
    assert event.evidence()["credential_type"] == "password"


@pytest.mark.parametrize("uri, short", [
    (CAEP + "session-revoked", "session-revoked"), (CAEP + "credential-change", "credential-change"),
    (RISC + "account-disabled", "account-disabled"),
    (RISC + "account-credential-change-required", "account-credential-change-required"),
])
def test_every_supported_event_type(verifier: SetVerifier, uri: str, short: str) -> None:
    assert verifier.verify(make_set(uri, jti=short)).type == short


def test_subject_formats_and_sessions(verifier: SetVerifier) -> None:
    email = verifier.verify(make_set(jti="a", sub_id={"format": "email", "email": "alice@example.com"}))
    assert (email.subject_format, email.subject) == ("email", "alice@example.com")
    complex_ = verifier.verify(make_set(CAEP + "session-revoked", jti="b", sub_id={
        "format": "complex", "user": {"format": "opaque", "id": "u-7"}, "session": {"format": "opaque", "id": "s-9"}}))
    assert (complex_.subject, complex_.session) == ("u-7", "s-9")
    # CAEP's older layout: the subject inside the event.
    inside = verifier.verify(make_set(CAEP + "credential-change", jti="c", sub_id=None,
                                      payload={"subject": {"format": "opaque", "id": "bob"}, "change_type": "update"}))
    assert inside.subject == "bob" and inside.evidence()["change_type"] == "update"


def rejected(verifier: SetVerifier, token: Any) -> SetRejected:
    with pytest.raises(SetRejected) as info:
        verifier.verify(token)
    return info.value


def test_bad_signature_is_refused_and_not_remembered(verifier: SetVerifier) -> None:
    error = rejected(verifier, make_set(key=OTHER_KEY))
    assert (error.err, error.reason, error.description) == ("invalid_key", "signature", "bad signature")
    # The forged SET's jti was not recorded: the genuine one is still accepted.
    assert verifier.verify(make_set()).jti == "set-1"


def test_tampered_payload_is_a_bad_signature(verifier: SetVerifier) -> None:
    header, payload, signature = make_set().split(".")
    other = make_set(sub_id={"format": "iss_sub", "iss": ISS, "sub": "mallory"}).split(".")[1]
    assert rejected(verifier, f"{header}.{other}.{signature}").reason == "signature"


def test_wrong_audience(verifier: SetVerifier) -> None:
    error = rejected(verifier, make_set(aud="https://someone-else.example.com"))
    assert (error.err, error.reason) == ("invalid_audience", "audience")


def test_replayed_jti(verifier: SetVerifier) -> None:
    token = make_set()
    verifier.verify(token)
    error = rejected(verifier, token)
    assert (error.err, error.reason) == ("invalid_request", "replay")
    assert "already received" in error.description
    verifier.replay.discard(ISS, "set-1")  # the service forgets a jti whose event could not be applied
    assert verifier.verify(token).jti == "set-1"


def test_unknown_event_type(verifier: SetVerifier) -> None:
    error = rejected(verifier, make_set("https://schemas.openid.net/secevent/caep/event-type/token-claims-change"))
    assert (error.err, error.reason) == ("invalid_request", "unknown_event")
    assert "token-claims-change" in error.description and "credential-compromise" in error.description
    # Refused before the replay check: the jti is still free.
    assert verifier.verify(make_set()).jti == "set-1"


@pytest.mark.parametrize("kwargs, reason", [
    ({"iss": "https://evil.example.com"}, "unknown_issuer"),
    ({"typ": None}, "token_type"),
    ({"typ": "JWT"}, "token_type"),
    ({"jti": None}, "missing_claim"),
    ({"events": None}, "missing_claim"),
    ({"iat": int(NOW) + 3600}, "not_yet_valid"),
    ({"iat": int(NOW) - 2 * 86400}, "expired"),
    ({"events": {RISC + "account-disabled": {}, CAEP + "session-revoked": {}}}, "claim_type"),
    ({"sub_id": None}, "missing_subject"),
    ({"sub_id": {"format": "iss_sub", "iss": "https://other.example.com", "sub": "alice"}}, "foreign_subject"),
    ({"sub_id": {"format": "carrier-pigeon", "id": "x"}}, "missing_subject"),
])
def test_every_refusal_says_why(verifier: SetVerifier, kwargs: dict[str, Any], reason: str) -> None:
    claims = dict(kwargs)
    typ = claims.pop("typ", "secevent+jwt")
    error = rejected(verifier, make_set(typ=typ, **claims))
    assert error.reason == reason
    assert set(error.to_dict()) == {"err", "description"}


def test_malformed_and_disallowed_algorithms(verifier: SetVerifier, tmp_path: Path) -> None:
    assert rejected(verifier, "not a jwt").reason == "malformed"
    assert rejected(verifier, b"\xff\xfe").reason == "malformed"
    assert rejected(verifier, "a" * 20_000).reason == "malformed"
    hmac_set = make_set(key="k" * 32, alg="HS256")
    assert rejected(verifier, hmac_set).reason == "algorithm"
    unsigned = jwt.encode({"iss": ISS}, None, algorithm="none")
    assert rejected(verifier, unsigned).reason == "algorithm"


def test_descriptions_never_echo_long_attacker_values(verifier: SetVerifier) -> None:
    error = rejected(verifier, make_set("https://x.example/" + "<script>" * 100))
    assert "<script>" not in error.description and len(error.description) < 400


def test_transmitter_settings(tmp_path: Path) -> None:
    with pytest.raises(pydantic.ValidationError, match="public_keys"):
        Transmitter.model_validate({"issuer": ISS, "audience": AUD})
    with pytest.raises(pydantic.ValidationError, match="unsupported algorithms"):
        transmitter(tmp_path, algorithms=["HS256"])
    jwks = tmp_path / "jwks.json"
    from ttlpolicy.tokens import public_jwk
    jwks.write_text(json.dumps({"keys": [public_jwk(KEY.public_key(), kid="k1", alg="ES256")]}))
    by_jwks = Transmitter.model_validate({"issuer": ISS, "audience": [AUD], "jwks_file": str(jwks),
                                          "algorithms": ["ES256"]})
    verifier = SetVerifier([by_jwks], clock=time.time)
    assert verifier.verify(make_set(iat=int(time.time()))).subject == "alice"
