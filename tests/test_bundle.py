"""Signed policy bundles: build, sign, verify, inspect, and safe unpacking (issue 14)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from server_fixtures.delivery import digest, version, write_set
from server_fixtures.helpers import hand_made_token, public_pem

from ttlpolicy import PolicyError
from ttlpolicy.bundle import (MANIFEST, SIGNATURE, build_bundle, open_bundle, pack, sign_bundle, sign_manifest,
                              unpack)
from ttlpolicy.cli.main import main
from ttlpolicy.tokens.keys import load_jwks, private_key_pem, public_jwk, verify_key

REPO = Path(__file__).resolve().parents[1]


def _codes(exc: pytest.ExceptionInfo[PolicyError]) -> list[str]:
    return [p.code for p in exc.value.problems]


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def bundle(tmp_path: Path) -> bytes:
    write_set(tmp_path / "src", 10, tests=True)
    return build_bundle(tmp_path / "src", revision="r10")[0]


def test_cli_round_trip_with_the_bundled_policies(tmp_path: Path, key: Any, capsys: Any) -> None:
    out, private, public = tmp_path / "set.tar.gz", tmp_path / "k.pem", tmp_path / "k.pub"
    private.write_bytes(private_key_pem(key))
    public.write_bytes(public_pem(key))
    assert main(["bundle", "build", str(REPO / "policies"), "-o", str(out), "--revision", "v1.2.3",
                 "--format", "json"]) == 0
    built = json.loads(capsys.readouterr().out)
    assert built["revision"] == "v1.2.3" and built["tests"]["failed"] == 0 and built["tests"]["cases"] > 10
    assert main(["bundle", "inspect", str(out), "--format", "json"]) == 0
    manifest = json.loads(capsys.readouterr().out)["manifest"]
    assert manifest["set_digest"] == built["digest"] and manifest["lint"]["errors"] == 0
    assert set(manifest["files"]) == {"baseline.yaml", "machine.yaml", "workforce.yaml", "tests/invariants.yaml",
                                      "tests/machine.yaml", "tests/workforce.yaml"}
    assert manifest["tests"]["coverage"] == 100.0
    assert main(["bundle", "verify", str(out), "--public-key", str(public)]) == 1  # unsigned, keys given
    assert "signature-missing" in capsys.readouterr().err
    assert main(["bundle", "sign", str(out), "--key", str(private), "--kid", "ci-2026"]) == 0
    assert capsys.readouterr().out.startswith("signed ")
    assert main(["bundle", "verify", str(out), "--public-key", str(public), "--format", "json"]) == 0
    verified = json.loads(capsys.readouterr().out)
    assert verified["signed"] is True and verified["revision"] == "v1.2.3"
    assert main(["bundle", "inspect", str(out)]) == 0
    assert '"kid": "ci-2026"' in capsys.readouterr().out
    assert main(["bundle", "verify", str(tmp_path / "missing.tar.gz")]) == 2


def test_build_refuses_a_set_whose_tests_fail(tmp_path: Path, capsys: Any) -> None:
    write_set(tmp_path / "src", 10, tests=True)
    (tmp_path / "src" / "app.yaml").write_text(version(20))  # the tests still expect 10 minutes
    assert main(["bundle", "build", str(tmp_path / "src"), "-o", str(tmp_path / "out.tar.gz")]) == 1
    assert "set-tests-failed" in capsys.readouterr().err and not (tmp_path / "out.tar.gz").exists()
    assert main(["bundle", "build", str(tmp_path / "nowhere"), "-o", str(tmp_path / "out.tar.gz")]) == 2


def test_signatures_are_checked_against_the_configured_keys(bundle: bytes, key: Any) -> None:
    keys = [verify_key(key)]
    with pytest.raises(PolicyError) as info:
        open_bundle(bundle, "b", keys)
    assert _codes(info) == ["signature-missing"]
    signed = sign_bundle(bundle, key)
    assert open_bundle(signed, "b", keys).signed_by == ""
    assert open_bundle(signed, "b").signed_by is None  # no keys configured: not checked
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(PolicyError) as info:
        open_bundle(sign_bundle(bundle, other), "b", keys)
    assert _codes(info) == ["signature-invalid"]


@pytest.mark.parametrize("forge", ["none", "hmac-with-public-key", "other-manifest", "garbage", "unknown-kid"])
def test_forged_signatures_are_refused(bundle: bytes, key: Any, forge: str) -> None:
    files = unpack(bundle, "b")
    if forge == "none":
        token = hand_made_token({"alg": "none", "typ": "ttlpolicy-manifest+jws"}, {"manifest": "x"}, None)
    elif forge == "hmac-with-public-key":
        token = hand_made_token({"alg": "HS256", "typ": "ttlpolicy-manifest+jws"}, {"manifest": "x"},
                                public_pem(key))
    elif forge == "other-manifest":
        token = sign_manifest(files[MANIFEST].replace(b"r10", b"r11"), key)
    elif forge == "garbage":
        token = "not a jws"
    else:
        token = sign_manifest(files[MANIFEST], key, kid="stolen")
    files[SIGNATURE] = token.encode()
    keys = load_jwks({"keys": [public_jwk(key, kid="ci")]})
    with pytest.raises(PolicyError) as info:
        open_bundle(pack(files), "b", keys)
    assert _codes(info) == ["signature-invalid"]
    files[SIGNATURE] = sign_manifest(files[MANIFEST], key, kid="ci").encode()
    assert open_bundle(pack(files), "b", keys).signed_by == "ci"


def test_a_changed_file_missing_file_or_extra_file_is_refused(bundle: bytes) -> None:
    files = unpack(bundle, "b")
    changed = dict(files, **{"app.yaml": files["app.yaml"] + b"# edited after the build\n"})
    extra = dict(files, **{"more.yaml": version(1).encode()})
    missing = {k: v for k, v in files.items() if k != "tests/app.yaml"}
    for variant in (changed, extra, missing):
        with pytest.raises(PolicyError) as info:
            open_bundle(pack(variant), "b")
        assert _codes(info) == ["manifest-mismatch"]


def test_a_bundle_whose_tests_fail_is_refused(bundle: bytes) -> None:
    files = unpack(bundle, "b")
    manifest = json.loads(files[MANIFEST])
    files["tests/app.yaml"] = files["tests/app.yaml"].replace(b"10m", b"11m")
    manifest["files"]["tests/app.yaml"] = "sha256:" + hashlib.sha256(files["tests/app.yaml"]).hexdigest()
    files[MANIFEST] = json.dumps(manifest).encode()  # a manifest that lies about its tests
    with pytest.raises(PolicyError) as info:
        open_bundle(pack(files), "b")
    assert _codes(info) == ["set-tests-failed"]
    assert "11m" in info.value.problems[0].message or "660" in info.value.problems[0].message


def test_a_manifest_that_lies_about_the_digest_is_refused(bundle: bytes) -> None:
    files = unpack(bundle, "b")
    manifest = json.loads(files[MANIFEST])
    manifest["set_digest"] = digest(version(5))
    files[MANIFEST] = json.dumps(manifest).encode()
    with pytest.raises(PolicyError) as info:
        open_bundle(pack(files), "b")
    assert _codes(info) == ["manifest-mismatch"]


@pytest.mark.parametrize("manifest", [b"{", b"[]", b'{"format": "other"}',
                                      b'{"format": "ttlpolicy-bundle/v1", "revision": "", "set_digest": "x"}',
                                      b'{"format": "ttlpolicy-bundle/v1", "revision": "r", "set_digest": "sha256:0",'
                                      b' "files": {"../etc/passwd.yaml": "sha256:0"}}'])
def test_invalid_manifests_are_refused(bundle: bytes, manifest: bytes) -> None:
    files = dict(unpack(bundle, "b"), **{MANIFEST: manifest})
    with pytest.raises(PolicyError) as info:
        open_bundle(pack(files), "b")
    assert _codes(info) == ["manifest-invalid"]


def _tar(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return gzip.compress(raw.getvalue())


def _member(name: str, data: bytes = b"x", kind: bytes = tarfile.REGTYPE, link: str = "") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname = kind, len(data) if kind == tarfile.REGTYPE else 0, link
    return info, data


@pytest.mark.parametrize("archive", [
    pytest.param(lambda b: _tar(_member("../escape.yaml")), id="parent-path"),
    pytest.param(lambda b: _tar(_member("/etc/cron.d/x.yaml")), id="absolute-path"),
    pytest.param(lambda b: _tar(_member("tests/../../x.yaml")), id="nested-parent-path"),
    pytest.param(lambda b: _tar(_member("app.yaml", kind=tarfile.SYMTYPE, link="/etc/passwd")), id="symlink"),
    pytest.param(lambda b: _tar(_member("app.yaml", kind=tarfile.LNKTYPE, link="other.yaml")), id="hardlink"),
    pytest.param(lambda b: _tar(_member("dev.yaml", kind=tarfile.CHRTYPE)), id="device"),
    pytest.param(lambda b: _tar(_member("run.sh")), id="not-a-set-file"),
    pytest.param(lambda b: _tar(_member("a.yaml"), _member("a.yaml")), id="duplicate"),
    pytest.param(lambda b: _tar(_member("big.yaml", b"#" * (1 << 20 + 1))), id="oversized-member"),
    pytest.param(lambda b: b"garbage, not gzip", id="garbage"),
    pytest.param(lambda b: b[: len(b) // 2], id="truncated"),
    pytest.param(lambda b: gzip.compress(b"not a tar archive" * 100), id="gzip-not-tar"),
])
def test_unsafe_or_broken_archives_are_refused(bundle: bytes, archive: Any, tmp_path: Path, monkeypatch: Any) -> None:
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    with pytest.raises(PolicyError) as info:
        open_bundle(archive(bundle), "b")
    assert _codes(info) == ["bundle-invalid"]
    assert list((tmp_path / "cwd").iterdir()) == []  # nothing is ever written while unpacking


def test_a_gzip_bomb_stops_at_the_limit() -> None:
    bomb = gzip.compress(b"\0" * (4 << 20), compresslevel=9)  # 4 KiB that inflate to 4 MiB
    with pytest.raises(PolicyError) as info:
        unpack(bomb, "b", max_unpacked=1 << 20)
    assert _codes(info) == ["bundle-invalid"] and "decompressed" in info.value.problems[0].message


def test_unsigned_directory_is_refused_when_keys_are_configured(tmp_path: Path, key: Any) -> None:
    from ttlpolicy.server.reload import DirectorySource

    write_set(tmp_path / "p", 10)
    with pytest.raises(PolicyError) as info:
        DirectorySource(tmp_path / "p", [verify_key(key)]).load_now()
    assert _codes(info) == ["signature-missing"]
    for name, data in unpack(sign_bundle(build_bundle(tmp_path / "p")[0], key), "b").items():
        (tmp_path / "p" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "p" / name).write_bytes(data)
    assert DirectorySource(tmp_path / "p", [verify_key(key)]).load_now().signed_by == ""
    with pytest.raises(jwt.PyJWTError):  # sanity: the JWS really is a signature, not a checksum
        jwt.api_jws.PyJWS().decode((tmp_path / "p" / SIGNATURE).read_text(), public_pem(
            ec.generate_private_key(ec.SECP256R1())), algorithms=["ES256"])
