"""``ttlpolicy bundle build|sign|verify|inspect``: signed policy bundles (see docs/deployment.md).

Exit codes as everywhere: 0 done or valid, 1 a set or bundle that is refused (with every
problem, located), 2 usage or I/O errors (a missing file, an unusable key).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from ..errors import PolicyError
from .output import fail, report, write_json


EXAMPLES = (
    "ttlpolicy bundle build policies/ -o set.tar.gz   # one archive of the whole set, with its manifest",
    "ttlpolicy bundle verify set.tar.gz --public-key release.pem   # signed by a key you trust?",
)


def register(sub: Any) -> None:
    parser = sub.add_parser("bundle", help="build, sign, verify and inspect policy bundles",
                            description="Policy bundles: a deterministic .tar.gz of a policy directory and its "
                                        "tests with a manifest (revision, file digests, semantic digest, lint "
                                        "and test results), signed as a JWS. Exit 0 ok, 1 refused, 2 usage or "
                                        "I/O error.")
    commands = parser.add_subparsers(dest="bundle_command", metavar="SUBCOMMAND", parser_class=type(parser))
    commands.required = True

    build = commands.add_parser("build", help="pack a policy directory and its tests with a manifest",
                                description="Compile DIR, run DIR/tests, and pack both with a manifest. Refused "
                                            "(exit 1) when the set does not compile or a test fails.")
    build.add_argument("directory", metavar="DIR", help="the policy directory (its tests in DIR/tests/)")
    build.add_argument("-o", "--output", required=True, metavar="FILE", help="where to write the bundle")
    build.add_argument("--revision", help="the revision to record (default: a prefix of the files' digest), "
                                          "e.g. \"$(git rev-parse HEAD)\"")
    build.add_argument("--format", choices=["text", "json"], default="text")
    build.set_defaults(run=_build)

    sign = commands.add_parser("sign", help="sign a bundle's manifest with a private key (JWS)",
                               description="Add .signature.jws: a JWS over the manifest's SHA-256, made with an "
                                           "RSA, EC or Ed25519 private key (PEM).")
    sign.add_argument("bundle", metavar="BUNDLE")
    sign.add_argument("--key", required=True, metavar="PEM", help="the private key (PKCS#8 or traditional PEM)")
    sign.add_argument("--kid", help="the key id to put in the JWS header (match it in the verifiers' JWKS)")
    sign.add_argument("--alg", help="the JWS algorithm (default: PS256 for RSA, the curve's ES* or EdDSA)")
    sign.add_argument("-o", "--output", metavar="FILE", help="write the signed bundle here (default: in place)")
    sign.set_defaults(run=_sign)

    verify = commands.add_parser("verify", help="check a bundle as the service would",
                                 description="Unpack safely, check the signature (with the given keys), the "
                                             "manifest, the compiled digest and the bundle's own tests.")
    verify.add_argument("bundle", metavar="BUNDLE")
    verify.add_argument("--public-key", action="append", default=[], metavar="PEM",
                        help="a public key or certificate that may have signed it (repeatable)")
    verify.add_argument("--jwks", metavar="FILE", help="a JWKS file of keys that may have signed it")
    verify.add_argument("--format", choices=["text", "json"], default="text")
    verify.set_defaults(run=_verify)

    inspect = commands.add_parser("inspect", help="show a bundle's manifest, files and signature header",
                                  description="Show what a bundle says about itself, without verifying it.")
    inspect.add_argument("bundle", metavar="BUNDLE")
    inspect.add_argument("--format", choices=["text", "json"], default="text")
    inspect.set_defaults(run=_inspect)


def _read(path: str) -> bytes:
    with open(path, "rb") as stream:
        return stream.read()


def _write(path: str, data: bytes) -> None:
    """Write atomically: a reader (or a service polling the file) never sees half a bundle."""
    target = Path(path)
    fd, temporary = tempfile.mkstemp(dir=target.parent if str(target.parent) else ".", prefix=".bundle-")
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _refused(exc: PolicyError) -> int:
    io_only = exc.problems and all(p.code in ("io-error", "no-policies") for p in exc.problems)
    return report([], 2 if io_only else 1, exc.sources, listed=exc.problems)


def _build(args: argparse.Namespace) -> int:
    from ..bundle import build_bundle, describe

    if not Path(args.directory).is_dir():
        return fail("io-error", f"{args.directory}: not a directory")
    try:
        data, loaded = build_bundle(args.directory, args.revision)
    except PolicyError as exc:
        return _refused(exc)
    try:
        _write(args.output, data)
    except OSError as exc:
        return fail("io-error", f"cannot write {args.output}: {exc.strerror or exc}")
    summary = {"ok": True, "bundle": args.output, "bytes": len(data), **describe(loaded)}
    if args.format == "json":
        write_json(summary)
    else:
        tests = summary.get("tests", {})
        print(f"built {args.output}: revision {loaded.revision}, {len(loaded.policies)} policies, "
              f"{tests.get('cases', 0)} test cases passed, {loaded.policies.digest[:19]}")
    return 0


def _sign(args: argparse.Namespace) -> int:
    from ..bundle import sign_bundle
    from ..tokens.keys import KeyFileError, load_private_key

    try:
        data = _read(args.bundle)
        key = load_private_key(args.key)
    except OSError as exc:
        return fail("io-error", f"cannot read {args.bundle}: {exc.strerror or exc}")
    except KeyFileError as exc:
        return fail("invalid-key", f"{args.key}: {exc}")
    try:
        signed = sign_bundle(data, key, args.kid, args.alg, where=args.bundle)
    except PolicyError as exc:
        return _refused(exc)
    except ValueError as exc:  # a key that cannot sign with the algorithm
        return fail("invalid-key", str(exc))
    output = args.output or args.bundle
    try:
        _write(output, signed)
    except OSError as exc:
        return fail("io-error", f"cannot write {output}: {exc.strerror or exc}")
    print(f"signed {output}" + (f" (kid {args.kid})" if args.kid else ""))
    return 0


def _verify(args: argparse.Namespace) -> int:
    from ..bundle import describe, open_bundle
    from ..tokens.keys import KeyFileError, load_jwks, load_pem_public_key

    try:
        data = _read(args.bundle)
    except OSError as exc:
        return fail("io-error", f"cannot read {args.bundle}: {exc.strerror or exc}")
    try:
        keys = [load_pem_public_key(path) for path in args.public_key]
        if args.jwks:
            keys += load_jwks(args.jwks)
    except KeyFileError as exc:
        return fail("invalid-key", str(exc))
    if (args.public_key or args.jwks) and not keys:
        return fail("invalid-key", "no usable signature key in the given key files")
    try:
        loaded = open_bundle(data, args.bundle, keys)
    except PolicyError as exc:
        return _refused(exc)
    summary = {"ok": True, **describe(loaded)}
    if args.format == "json":
        write_json(summary)
    else:
        signed = f"signed by {loaded.signed_by or 'a configured key'}" if loaded.signed_by is not None else \
            "signature not checked (no keys given)"
        tests = summary.get("tests", {})
        print(f"ok: {args.bundle}: revision {loaded.revision}, {loaded.policies.digest[:19]}, {signed}, "
              f"{tests.get('cases', 0)} test cases passed")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from ..bundle import inspect_bundle

    try:
        data = _read(args.bundle)
    except OSError as exc:
        return fail("io-error", f"cannot read {args.bundle}: {exc.strerror or exc}")
    try:
        info = inspect_bundle(data, args.bundle)
    except PolicyError as exc:
        return _refused(exc)
    if args.format == "json":
        write_json(info)
        return 0
    manifest = info.get("manifest")
    if manifest is None:
        print(f"{args.bundle}: no manifest")
    else:
        print(f"{args.bundle}: revision {manifest.get('revision')}, built {manifest.get('created_at')}")
        print(f"  set digest  {manifest.get('set_digest')}")
        print(f"  policies    {', '.join(manifest.get('policies', []))} (default {manifest.get('default')})")
        lint, tests = manifest.get("lint", {}), manifest.get("tests", {})
        print(f"  lint        {lint.get('errors', '?')} errors, {lint.get('warnings', '?')} warnings")
        print(f"  tests       {tests.get('cases', '?')} cases, {tests.get('failed', '?')} failed, "
              f"coverage {tests.get('coverage', '?')}%")
    signature = info.get("signature")
    print(f"  signature   {json.dumps(signature) if signature is not None else 'none'}")
    for name, entry in info["files"].items():
        print(f"  {entry['sha256'][:19]}  {entry['bytes']:>8}  {name}")
    return 0
