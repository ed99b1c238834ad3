"""Whole policy sets: read a set as files, check it against its manifest and signature, compile it.

A *file set* is a policy directory's content as ``{relative path: bytes}``: the policy files at
the top (``*.yaml``), their tests under ``tests/``, and optionally ``.manifest.json`` and
``.signature.jws``. The same checks apply whether the files come from a directory on disk or
from a bundle (``ttlpolicy bundle build``, a deterministic ``.tar.gz`` of a file set):

1. **Signature** — when keys are configured, ``.signature.jws`` must be a JWS (RFC 7515, made
   and verified with PyJWT, asymmetric algorithms only) over the SHA-256 of ``.manifest.json``
   by one of them. No keys: a signature is not required (and not checked).
2. **Manifest** — when ``.manifest.json`` is present, the set holds exactly the policy and test
   files it lists, each with the listed SHA-256, and compiles to the listed semantic digest.
3. **Tests** — a set with a manifest is tested with its own ``tests/`` before it may serve.

Any failure raises :class:`~ttlpolicy.PolicyError` with located problems, so the service and
the CLI report a refused set the same way as a policy with a typo (promise 9).

>>> files = read_file_set("policies")                                  # doctest: +SKIP
>>> loaded = load_file_set(files, "policies")                          # doctest: +SKIP
>>> loaded.policies.digest, loaded.revision                           # doctest: +SKIP
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any, Mapping, Sequence

import jwt

from .errors import Location, PolicyError, Problem, UnknownPolicyError
from .load import MAX_FILE_BYTES
from .policyset import POLICY_SUFFIXES, PolicySet, load_sources
from .testing import Report, parse_test_file, run_tests
from .tokens.keys import ASYMMETRIC_ALGORITHMS, VerifyKey, algorithms_for

MANIFEST = ".manifest.json"
SIGNATURE = ".signature.jws"
TESTS = "tests"
FORMAT = "ttlpolicy-bundle/v1"
SIGNATURE_TYPE = "ttlpolicy-manifest+jws"
FileSet = dict[str, bytes]


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _problem(code: str, message: str, file: str, path: str = "") -> Problem:
    return Problem(code, message, Location(file), path=path)


def is_set_file(name: str) -> bool:
    """Whether a relative POSIX path belongs to a file set (policy, test, manifest, signature)."""
    parts = PurePosixPath(name).parts
    if name in (MANIFEST, SIGNATURE):
        return True
    if not parts or PurePosixPath(name).suffix not in POLICY_SUFFIXES or any(p.startswith(".") for p in parts):
        return False
    return len(parts) == 1 or parts[0] == TESTS


def is_policy_file(name: str) -> bool:
    return "/" not in name and name not in (MANIFEST, SIGNATURE) and is_set_file(name)


def read_file_set(directory: str | Path) -> FileSet:
    """The set's files under ``directory``, read once (hidden files and other names are ignored).

    Raises :class:`PolicyError` (``io-error``) when the directory or a file cannot be read. A
    file over the size limit is read only up to just past it, so loading reports it as too large.
    """
    root = Path(directory)
    files: FileSet = {}
    try:
        if not root.is_dir():
            raise PolicyError([_problem("io-error", "no such directory", str(root))])
        candidates = [p for p in root.iterdir() if p.is_file()]
        tests = root / TESTS
        if tests.is_dir():
            candidates += [p for p in tests.rglob("*") if p.is_file()]
    except OSError as exc:
        raise PolicyError([_problem("io-error", f"cannot list the directory: {exc.strerror or exc}",
                                    str(root))]) from None
    problems = []
    for path in candidates:
        name = path.relative_to(root).as_posix()
        if not is_set_file(name):
            continue
        try:
            with path.open("rb") as stream:
                files[name] = stream.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            problems.append(_problem("io-error", f"cannot read file: {exc.strerror or exc}", str(path)))
    if problems:
        raise PolicyError(problems)
    return files


def file_set_digest(files: Mapping[str, bytes]) -> str:
    """One digest of every file's name and content: equal digests, byte-identical sets."""
    joined = "".join(f"{name}\0{_sha256(files[name])}\n" for name in sorted(files))
    return _sha256(joined.encode())


# -- the manifest ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Manifest:
    """What ``.manifest.json`` says about the set it came with."""

    revision: str
    set_digest: str
    files: Mapping[str, str]  # relative path -> sha256:<hex>
    data: Mapping[str, Any]  # everything, as written (created_at, lint, tests, ...)

    @classmethod
    def parse(cls, raw: bytes, where: str) -> Manifest:
        def bad(message: str) -> PolicyError:
            return PolicyError([_problem("manifest-invalid", message, where)])

        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise bad(f"not JSON: {exc}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise bad(f"not a {FORMAT} manifest (\"format\": \"{FORMAT}\" is missing)")
        revision, digest, files = data.get("revision"), data.get("set_digest"), data.get("files")
        if not isinstance(revision, str) or not revision or len(revision) > 200:
            raise bad("revision: expected a non-empty string (at most 200 characters)")
        if not isinstance(digest, str) or not digest.startswith("sha256:"):
            raise bad("set_digest: expected sha256:<hex>")
        if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
            raise bad("files: expected an object of relative path -> sha256:<hex>")
        unsafe = [name for name in files if not is_set_file(name) or name in (MANIFEST, SIGNATURE)]
        if unsafe:
            raise bad(f"files: {unsafe[0]!r} is not a policy or test file of a set")
        return cls(revision, digest, dict(files), data)


def check_manifest(files: Mapping[str, bytes], manifest: Manifest, label: str) -> list[Problem]:
    """Problems that make ``files`` differ from exactly what the manifest lists."""
    problems = []
    for name, digest in sorted(manifest.files.items()):
        where = f"{label}/{name}"
        if name not in files:
            problems.append(_problem("manifest-mismatch", f"listed in the manifest (revision {manifest.revision}) "
                                     "but missing", where))
        elif _sha256(files[name]) != digest:
            problems.append(_problem("manifest-mismatch", f"content differs from the manifest (revision "
                                     f"{manifest.revision}): incomplete or changed since the build", where))
    for name in sorted(set(files) - set(manifest.files) - {MANIFEST, SIGNATURE}):
        problems.append(_problem("manifest-mismatch", f"not listed in the manifest (revision {manifest.revision})",
                                 f"{label}/{name}"))
    return problems


# -- signatures --------------------------------------------------------------------------------

def sign_manifest(manifest: bytes, key: Any, kid: str | None = None, algorithm: str | None = None) -> str:
    """A compact JWS over the manifest's SHA-256 (and revision), signed with a private ``key``."""
    usable = algorithms_for(key)
    if not usable or not hasattr(key, "sign"):
        raise ValueError("the signing key must be a private RSA, EC or Ed25519/Ed448 key")
    if algorithm is None:
        algorithm = "PS256" if "PS256" in usable else sorted(usable)[0]
    if algorithm not in usable:
        raise ValueError(f"a {type(key).__name__} cannot sign {algorithm}; use {', '.join(sorted(usable))}")
    payload = {"manifest": _sha256(manifest), "revision": json.loads(manifest).get("revision")}
    headers: dict[str, Any] = {"typ": SIGNATURE_TYPE}
    if kid:
        headers["kid"] = kid
    return jwt.api_jws.PyJWS().encode(json.dumps(payload, sort_keys=True).encode(), key, algorithm, headers)


def verify_signature(token: bytes, manifest: bytes, keys: Sequence[VerifyKey], where: str) -> str | None:
    """Check ``token`` signs ``manifest`` with one of ``keys``; the signing key's ``kid``.

    Asymmetric algorithms only, chosen by the key's type; when the keys have ids, the JWS must
    name one of them (``kid``), so an unknown key id is refused rather than tried against all.
    """
    def refused(message: str) -> PolicyError:
        return PolicyError([_problem("signature-invalid", message, where)])

    try:
        text = token.decode("ascii").strip()
        header = jwt.get_unverified_header(text)
    except (UnicodeDecodeError, jwt.PyJWTError):
        raise refused("not a compact JWS") from None
    alg, kid = header.get("alg"), header.get("kid")
    if alg not in ASYMMETRIC_ALGORITHMS:
        raise refused(f"algorithm {alg!r} is not allowed (asymmetric algorithms only)")
    if header.get("typ") != SIGNATURE_TYPE:
        raise refused(f"typ must be {SIGNATURE_TYPE!r}")
    candidates = [k for k in keys if alg in k.algorithms]
    if any(k.kid for k in keys):
        candidates = [k for k in candidates if k.kid is not None and k.kid == kid]
        if not candidates:
            raise refused(f"signed with key id {kid!r}, which is not a configured key for {alg}")
    for candidate in candidates:
        try:
            payload = jwt.api_jws.PyJWS().decode(text, candidate.key, algorithms=[alg])
        except jwt.PyJWTError:
            continue
        try:
            claims = json.loads(payload)
        except ValueError:
            raise refused("the signed payload is not JSON") from None
        if not isinstance(claims, dict) or claims.get("manifest") != _sha256(manifest):
            raise refused("the signature is for another manifest")
        return candidate.kid
    raise refused("no configured key verifies the signature")


# -- loading a whole set -----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class LoadedSet:
    """A compiled set together with what was verified about it."""

    policies: PolicySet
    files_digest: str
    manifest: Manifest | None
    tests: Report | None
    signed_by: str | None  # the kid of the key that verified it ("" for a key without id)

    @property
    def revision(self) -> str | None:
        return self.manifest.revision if self.manifest else None


def load_file_set(files: Mapping[str, bytes], label: str, keys: Sequence[VerifyKey] = (),
                  run_set_tests: bool = True) -> LoadedSet:
    """Verify and compile a file set; raises :class:`PolicyError` unless it is whole and fit to serve.

    ``label`` prefixes file names in problems (the directory, or the bundle's name). With
    ``keys``, the set must carry a manifest signed by one of them.
    """
    manifest = None
    signed_by = None
    if MANIFEST in files:
        manifest = Manifest.parse(files[MANIFEST], f"{label}/{MANIFEST}")
    if keys:
        if manifest is None or SIGNATURE not in files:
            missing = MANIFEST if manifest is None else SIGNATURE
            raise PolicyError([_problem("signature-missing", f"signing keys are configured and the set has no "
                                        f"{missing}: unsigned sets are refused", f"{label}/{missing}")])
        signed_by = verify_signature(files[SIGNATURE], files[MANIFEST], keys, f"{label}/{SIGNATURE}") or ""
    if manifest is not None:
        problems = check_manifest(files, manifest, label)
        if problems:
            raise PolicyError(problems)
    sources = {f"{label}/{name}": data for name, data in files.items() if is_policy_file(name)}
    if not sources:
        raise PolicyError([_problem("no-policies", "the set holds no *.yaml policy files", label)])
    policies = load_sources(sources)
    if manifest is not None and policies.digest != manifest.set_digest:
        raise PolicyError([_problem("manifest-mismatch", f"the set compiles to {policies.digest}, the manifest "
                                    f"says {manifest.set_digest}", f"{label}/{MANIFEST}", "set_digest")])
    report = None
    if manifest is not None and run_set_tests:
        report = test_file_set(files, label, policies)
        if not report.ok:
            failed = report.failed
            raise PolicyError([_problem("set-tests-failed", f"test case {r.name!r} fails: " + ", ".join(
                f"{key} expected {want!r}, got {got!r}" for key, want, got in r.mismatches[:3]) if r.mismatches
                else f"test case {r.name!r} fails", str(r.location)) for r in failed])
    return LoadedSet(policies, file_set_digest(files), manifest, report, signed_by)


def test_file_set(files: Mapping[str, bytes], label: str, policies: PolicySet) -> Report:
    """Run the set's own ``tests/`` against ``policies`` (never against another directory)."""
    suites = []
    problems: list[Problem] = []
    for name in sorted(files):
        if name.startswith(TESTS + "/") and PurePosixPath(name).suffix in POLICY_SUFFIXES:
            try:
                suites.append(parse_test_file(f"{label}/{name}", files[name].decode("utf-8-sig"), label))
            except UnicodeDecodeError:
                problems.append(_problem("test-file", "not UTF-8 text", f"{label}/{name}"))
            except PolicyError as exc:
                problems += exc.problems
    if problems:
        raise PolicyError(problems)
    try:
        # Cases only: invariants are proved in CI (`ttlpolicy verify`), not each time a set loads.
        return run_tests(suites, loader=lambda _: policies, invariants=False)
    except UnknownPolicyError as exc:
        raise PolicyError([_problem("test-file", str(exc), label)]) from None


def describe(loaded: LoadedSet) -> dict[str, Any]:
    """A short JSON summary of a verified set (for ``bundle verify`` and the service)."""
    out: dict[str, Any] = {"digest": loaded.policies.digest, "files_digest": loaded.files_digest,
                           "revision": loaded.revision, "signed": loaded.signed_by is not None}
    if loaded.signed_by:
        out["kid"] = loaded.signed_by
    if loaded.tests is not None:
        out["tests"] = {"cases": len(loaded.tests.results), "failed": len(loaded.tests.failed),
                        "coverage": loaded.tests.coverage.percent}
    return out


def utc_now() -> str:
    # Milliseconds: build times order bundles (a fetched bundle older than the served one is refused).
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- bundles: a file set as a deterministic .tar.gz --------------------------------------------

MAX_MEMBERS = 4096
MAX_UNPACKED_BYTES = 64 * 1024 * 1024  # decompressed; a policy set is a few hundred KiB


def build_bundle(directory: str | Path, revision: str | None = None) -> tuple[bytes, LoadedSet]:
    """Pack a policy directory and its tests with a fresh manifest; raises :class:`PolicyError`.

    The set must compile and its tests must pass; the manifest records the revision (default:
    a prefix of the files' digest), every file's SHA-256, the semantic digest, and the lint and
    test results. Any old manifest or signature in the directory is replaced, never reused.
    """
    label = str(Path(directory))
    files = {n: d for n, d in read_file_set(directory).items() if n not in (MANIFEST, SIGNATURE)}
    unsigned = load_file_set(files, label, run_set_tests=False)  # compile once to learn the digest
    report = test_file_set(files, label, unsigned.policies)
    if not report.ok:
        raise PolicyError([_problem("set-tests-failed", f"test case {r.name!r} fails", str(r.location))
                           for r in report.failed])
    warnings = unsigned.policies.warnings
    manifest = {
        "format": FORMAT,
        "revision": revision or unsigned.files_digest.removeprefix("sha256:")[:16],
        "created_at": utc_now(),
        "set_digest": unsigned.policies.digest,
        "default": unsigned.policies.default,
        "policies": unsigned.policies.names,
        "files": {name: _sha256(files[name]) for name in sorted(files)},
        "lint": {"errors": 0, "warnings": len(warnings), "codes": sorted({w.code for w in warnings})},
        "tests": {"cases": len(report.results), "failed": 0, "coverage": report.coverage.percent},
    }
    files[MANIFEST] = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    loaded = load_file_set(files, label)  # exactly what a service will check
    return pack(files), loaded


def sign_bundle(bundle: bytes, key: Any, kid: str | None = None, algorithm: str | None = None,
                where: str = "bundle") -> bytes:
    """The same bundle with ``.signature.jws`` over its manifest (replacing any earlier one)."""
    files = unpack(bundle, where)
    if MANIFEST not in files:
        raise PolicyError([_problem("manifest-invalid", "the bundle has no manifest to sign", where)])
    Manifest.parse(files[MANIFEST], f"{where}/{MANIFEST}")
    files[SIGNATURE] = sign_manifest(files[MANIFEST], key, kid, algorithm).encode()
    return pack(files)


def pack(files: Mapping[str, bytes]) -> bytes:
    """A deterministic ``.tar.gz`` (sorted names, zero times and owners): equal sets, equal bytes."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(files[name]), 0o644, 0
            tar.addfile(info, io.BytesIO(files[name]))
    return gzip.compress(raw.getvalue(), mtime=0)


def unpack(data: bytes, where: str, max_unpacked: int = MAX_UNPACKED_BYTES) -> FileSet:
    """The files of a bundle, read in memory and never written anywhere; raises :class:`PolicyError`.

    Refused: anything that is not gzip'd tar, more than ``max_unpacked`` bytes once
    decompressed (a gzip bomb stops there), links and devices, absolute or ``..`` paths,
    names a set cannot hold, duplicate names, and members over the policy file size limit.
    """
    def refused(message: str) -> PolicyError:
        return PolicyError([_problem("bundle-invalid", message, where)])

    try:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip framing
        raw = inflater.decompress(data, max_unpacked + 1)
        if len(raw) > max_unpacked or inflater.unconsumed_tail:
            raise refused(f"more than {max_unpacked:,} bytes once decompressed")
        if not inflater.eof:
            raise refused("the gzip stream is truncated")
    except zlib.error as exc:
        raise refused(f"not a gzip'd tar archive ({exc})") from None
    files: FileSet = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
            for count, member in enumerate(tar, 1):
                if count > MAX_MEMBERS:
                    raise refused(f"more than {MAX_MEMBERS} members")
                name = member.name
                parts = PurePosixPath(name).parts
                if name.startswith("/") or "\\" in name or "\0" in name or ".." in parts:
                    raise refused(f"unsafe member path {name!r}")
                if member.isdir():
                    continue
                if not member.isreg():
                    raise refused(f"member {name!r} is a link or special file; bundles hold regular files only")
                name = PurePosixPath(name).as_posix().removeprefix("./")
                if not is_set_file(name):
                    raise refused(f"member {name!r} is not a policy, test, manifest or signature file")
                if name in files:
                    raise refused(f"member {name!r} appears twice")
                if member.size > MAX_FILE_BYTES:
                    raise refused(f"member {name!r} is {member.size:,} bytes; the limit is {MAX_FILE_BYTES:,}")
                stream = tar.extractfile(member)
                content = stream.read() if stream is not None else b""
                if len(content) != member.size:
                    raise refused(f"member {name!r} is truncated")
                files[name] = content
    except (tarfile.TarError, EOFError, ValueError) as exc:
        raise refused(f"not a valid tar archive ({exc})") from None
    return files


def open_bundle(data: bytes, where: str, keys: Sequence[VerifyKey] = ()) -> LoadedSet:
    """Unpack, verify (signature with ``keys``, manifest, tests) and compile a bundle."""
    files = unpack(data, where)
    if MANIFEST not in files:
        raise PolicyError([_problem("manifest-invalid", "a bundle must carry a manifest (.manifest.json)", where)])
    return load_file_set(files, where, keys)


def inspect_bundle(data: bytes, where: str) -> dict[str, Any]:
    """The manifest and signature header of a bundle, without verifying anything."""
    files = unpack(data, where)
    out: dict[str, Any] = {"files": {name: {"bytes": len(files[name]), "sha256": _sha256(files[name])}
                                     for name in sorted(files)}}
    if MANIFEST in files:
        out["manifest"] = Manifest.parse(files[MANIFEST], f"{where}/{MANIFEST}").data
    if SIGNATURE in files:
        try:
            out["signature"] = jwt.get_unverified_header(files[SIGNATURE].decode("ascii").strip())
        except (UnicodeDecodeError, jwt.PyJWTError):
            out["signature"] = {"error": "not a compact JWS"}
    return out
