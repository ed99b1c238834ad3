"""A reviewer's planted mistakes in the bundled policies: each one is caught, at the offending
token (file, line and column found here from the planted text itself), with the message's
suggestion of what to do."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ttlpolicy import PolicyError, load_policies

POLICIES = Path(__file__).resolve().parents[1] / "policies"

# (file, original text, planted text, token to point at (in the planted text), code, suggestion)
PLANTED = [
    ("workforce.yaml", 'tier in ["finance", "government"]', 'tier in ["finance", "goverment"]',
     '"goverment"', "unknown-tier", "did you mean 'government'?"),
    ("workforce.yaml", 'device.trust in ["managed", "compliant"]', 'device.trust in ["managed", "complaint"]',
     '"complaint"', "cel-enum-value", "did you mean 'compliant'?"),
    ("workforce.yaml", '!(location.zone in ["corporate", "vpn"])', '!(location.zone in ["corporate", "vpm"])',
     '"vpm"', "unknown-zone", "did you mean 'vpn'?"),
    ("workforce.yaml", 'time.weekday in ["sat", "sun"]', 'time.weekday in ["sat", "sunday"]',
     '"sunday"', "cel-enum-value", "did you mean 'sun'?"),
    ("workforce.yaml", "time.hour >= 22 || time.hour < 6", "time.hour >= 24 || time.hour < 6",
     "24", "cel-impossible-comparison", "compare with a value inside that range"),
    ("baseline.yaml", "when: user.risk >= 0.9", "when: user.risk >= 9.0",
     "9.0", "cel-impossible-comparison", "user.risk is declared in 0 … 1"),
    ("machine.yaml", 'client.workload == "ci"', 'client.workload == "CI"',
     '"CI"', "cel-enum-value", "did you mean 'ci'?"),
    ("machine.yaml", 'grant.type != "client_credentials"', 'grant.type != "client_credential"',
     '"client_credential"', "cel-enum-value", "did you mean 'client_credentials'?"),
    ("workforce.yaml", 'when: device.trust == "unmanaged"\n',
     'when: device.trust != "managed" || device.trust != "known"\n',
     "device.trust != \"managed\" ||", "condition-always-true", "use `&&` or `!(x in [...])`"),
    ("workforce.yaml", "has(user.department) && user.department", "has(user.departmnt) && user.department",
     "user.departmnt", "cel-unknown-attribute", "did you mean user.department?"),
    ("workforce.yaml", 'user.auth_time < time.now - duration("72h")', 'user.auth_time < time.now - "72h"',
     "time.now", "cel-type-mismatch", 'write duration("72h")'),
    ("baseline.yaml", "reuse_grace: 10s", "reuse_grace: 10m", "10m", "setting-bound", "use at most 5m"),
    ("baseline.yaml", "multiply: {expr: \"1.0 - user.risk\", min: 0.25, max: 1.0}\n    refresh_ttl",
     "multiply: {expr: \"1.0 - user.risk\", min: 0.25, max: 0.2}\n    refresh_ttl", "0.2}",
     "factor-bounds", "multiply max 0.2 is below min 0.25"),
    ("baseline.yaml", "timezone: Europe/Berlin", "timezone: Europe/Berln", "Europe/Berln", "invalid-timezone",
     "did you mean 'Europe/Berlin'?"),
    ("baseline.yaml", "    max_access_ttl: 30m\n", "    max_access_ttl: 30h\n", "30h", "tier-above-limit",
     "is above limits.access_ttl.max (12h)"),
    ("workforce.yaml", "when: |\n      (has(user.department)", "when: |\n      ((has(user.department)",
     "(", "cel-syntax", "is never closed; add ')'"),
    # cel-python's parser makes `true` and `false` tokens without a position: errors in the
    # expressions that start with one were reported with none (a traceback in lint)
    ("workforce.yaml", 'resource.sensitivity == "restricted" && !user.mfa',
     'resource.sensitivity == "restricted" && (true + 1 > 0)', "true", "cel-type-mismatch", "no operator bool + int"),
    ("workforce.yaml", 'device.platform == "other"', 'device.platform.matches(false ? "other":"[")',
     "false", "cel-unsupported", "invalid regex"),
]


def planted(tmp_path: Path, file: str, original: str, new: str) -> tuple[Path, str]:
    target = tmp_path / "policies"
    shutil.copytree(POLICIES, target, ignore=shutil.ignore_patterns("tests"))
    text = (target / file).read_text()
    assert text.count(original) == 1, original
    text = text.replace(original, new)
    (target / file).write_text(text)
    return target, text


def position(text: str, new: str, token: str) -> tuple[int, int]:
    """Line and column of ``token`` inside the planted text."""
    start = text.index(new) + new.index(token)
    line = text.count("\n", 0, start) + 1
    return line, start - (text.rfind("\n", 0, start) + 1) + 1


@pytest.mark.parametrize("file, original, new, token, code, suggestion", PLANTED, ids=[p[4] + ":" + p[3]
                                                                                       for p in PLANTED])
def test_a_planted_mistake_is_caught_at_its_token(tmp_path: Path, file: str, original: str, new: str, token: str,
                                                  code: str, suggestion: str) -> None:
    directory, text = planted(tmp_path, file, original, new)
    with pytest.raises(PolicyError) as info:
        load_policies(directory)
    errors = [p for p in info.value.errors if p.code == code]
    assert errors, [p.render() for p in info.value.problems]
    line, column = position(text, new, token)
    where = [(str(Path(p.location.file).name), p.location.line, p.location.column) for p in errors if p.location]
    if code == "condition-always-true":  # a whole condition: reported at the start of `when`'s value
        column = text.splitlines()[line - 1].index("device") + 1
    assert (file, line, column) in where, (where, (file, line, column))
    assert any(suggestion in p.message for p in errors), [p.message for p in errors]


def test_a_broken_base_is_reported_once_and_its_extenders_not_checked(tmp_path: Path) -> None:
    directory, text = planted(tmp_path, "baseline.yaml", "timezone: Europe/Berlin", "timezone: Europe/Berlin\ncolour: blue")
    text = (directory / "workforce.yaml").read_text().replace('tier in ["finance", "government"]',
                                                               'tier in ["finance", "goverment"]')
    (directory / "workforce.yaml").write_text(text)
    with pytest.raises(PolicyError) as info:
        load_policies(directory)
    found = sorted((Path(p.location.file).name, p.code) for p in info.value.errors if p.location)
    # the base's schema error; the extenders are not checked against it, but their own CEL is typed
    assert ("baseline.yaml", "schema") in found
    assert ("machine.yaml", "base-broken") in found and ("workforce.yaml", "base-broken") in found
    assert ("workforce.yaml", "unknown-tier") in found
    assert not any(code == "unknown-base" for _, code in found)
    message = next(p.message for p in info.value.errors if p.code == "base-broken")
    assert "was not checked: its base 'baseline' has errors" in message


def test_a_base_that_is_not_even_yaml_is_named_as_the_broken_base(tmp_path: Path) -> None:
    directory, _ = planted(tmp_path, "baseline.yaml", "  vpn: [172.16.0.0/12]", "  vpn: [172.16.0.0/12")
    with pytest.raises(PolicyError) as info:
        load_policies(directory)
    found = sorted((Path(p.location.file).name, p.code) for p in info.value.errors if p.location)
    assert found == [("baseline.yaml", "yaml-syntax"), ("machine.yaml", "base-broken"),
                     ("workforce.yaml", "base-broken")]


def test_an_extender_of_an_unreadable_base_gets_no_false_unknown_attributes(tmp_path: Path) -> None:
    directory, _ = planted(tmp_path, "baseline.yaml", "  vpn: [172.16.0.0/12]", "  vpn: [172.16.0.0/12")
    text = (directory / "workforce.yaml").read_text().replace("default: true\n", "default: true\ncolour: blue\n")
    (directory / "workforce.yaml").write_text(text)
    with pytest.raises(PolicyError) as info:
        load_policies(directory)
    codes = {p.code for p in info.value.errors}
    assert "cel-unknown-attribute" not in codes and {"yaml-syntax", "schema"} <= codes
