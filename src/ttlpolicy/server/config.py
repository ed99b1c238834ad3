"""Service settings: a YAML file, overridden by ``TTLPOLICY_*`` environment variables,
overridden by command-line flags. Validated once, at start, with pydantic.

Environment variables name a setting by its path, upper case, with ``__`` between levels:
``TTLPOLICY_PORT=9090``, ``TTLPOLICY_DECISION_LOG__SINK=off``,
``TTLPOLICY_AUTH__JWT__AUDIENCE=ttlpolicy``. A value starting with ``[`` or ``{`` is read as
YAML/JSON (``TTLPOLICY_RELOAD__WATCH_PATHS='["/git"]'``).
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Mapping

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from ..activity.settings import ActivitySettings
from ..alerts.webhooks import WebhookSettings
from ..state.settings import StateSettings

if TYPE_CHECKING:
    from ..tokens import IssuerConfig, TokenVerifier

ENV_PREFIX = "TTLPOLICY_"
# How `serve` hands the resolved settings to uvicorn worker processes; never read from a user.
INTERNAL_ENV = "TTLPOLICY_INTERNAL_SETTINGS"
# ttlpolicy's other variables, which are not service settings (the parser cache switch, and the
# test suite's own): skipped, so that setting one never stops `serve` with "extra inputs".
NOT_SETTINGS = frozenset({INTERNAL_ENV, "TTLPOLICY_NO_PARSER_CACHE", "TTLPOLICY_UPDATE_GOLDEN",
                          "TTLPOLICY_TEST_ARTEFACTS"})
_HASH = re.compile(r"^sha256:[0-9a-f]{64}$")
ASYMMETRIC_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                         "ES256", "ES384", "ES512", "EdDSA")
SCOPES = ("decide", "revoke", "admin")
# The longest `subject_token` a decide request may carry (a JWT is rarely over 2 KiB).
MAX_SUBJECT_TOKEN = 8192


class ConfigError(ValueError):
    """Settings that cannot be used; the message says which and why."""


def _asymmetric(value: tuple[str, ...]) -> tuple[str, ...]:
    # Shared-secret algorithms are not offered at all: that rules out key confusion.
    bad = [a for a in value if a not in ASYMMETRIC_ALGORITHMS]
    if bad or not value:
        raise ValueError(f"unsupported algorithms {bad or value}; use some of {', '.join(ASYMMETRIC_ALGORITHMS)}")
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ApiKey(_Model):
    """One API key: a name for the logs, the key's SHA-256 and the scopes it grants."""

    name: str = Field(min_length=1, max_length=128)
    hash: str = Field(description="sha256:<64 hex digits> of the key; never the key itself")
    scopes: tuple[Literal["decide", "revoke", "admin"], ...] = ("decide",)

    @field_validator("hash")
    @classmethod
    def _check_hash(cls, value: str) -> str:
        value = value.strip().lower()
        if not _HASH.match(value):
            raise ValueError("must be 'sha256:' followed by 64 hex digits (see `ttlpolicy serve --hash-key`)")
        return value


class JwtSettings(_Model):
    """JWT bearer tokens, verified locally against configured public keys (no network fetch)."""

    issuer: str = Field(min_length=1)
    audience: str = Field(min_length=1)
    public_keys: tuple[Path, ...] = ()
    jwks_file: Path | None = None
    algorithms: tuple[str, ...] = ("RS256", "ES256", "EdDSA")
    leeway: float = Field(30.0, ge=0, le=300)
    cache_size: int = Field(10_000, ge=0)

    @field_validator("algorithms")
    @classmethod
    def _asymmetric_only(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _asymmetric(value)

    @model_validator(mode="after")
    def _some_key(self) -> JwtSettings:
        if not self.public_keys and self.jwks_file is None:
            raise ValueError("give public_keys (PEM files) or jwks_file")
        return self


class AuthSettings(_Model):
    api_keys: tuple[ApiKey, ...] = ()
    jwt: JwtSettings | None = None
    metrics_require_auth: bool = Field(False, description="require a credential (any scope) for GET /metrics")

    @property
    def enabled(self) -> bool:
        return bool(self.api_keys) or self.jwt is not None


class LimitSettings(_Model):
    max_body_bytes: int = Field(65_536, ge=256, le=64 * 1024 * 1024)
    max_batch: int = Field(100, ge=1, le=10_000)
    # Connection limits (server/protocol.py): a slow or silent client cannot hold a connection.
    header_timeout: float = Field(10.0, gt=0, le=300, description="seconds for a request's headers to arrive")
    body_timeout: float = Field(10.0, gt=0, le=300, description="seconds for a request's body to arrive")
    idle_timeout: float = Field(75.0, gt=0, le=3600, description="seconds a keep-alive connection may idle "
                                                                  "between requests")
    max_header_bytes: int = Field(32_768, ge=1024, le=1024 * 1024, description="request line and headers")
    max_connections: int = Field(1024, ge=1, le=100_000, description="open connections per worker")


class UiSettings(_Model):
    """The playground page at /ui/ and the /v1/playground/* API behind it (same credentials as the API)."""

    enabled: bool = True
    git: bool = Field(True, description="offer git revisions of the policy directory as diff sides")
    max_text_bytes: int = Field(262_144, ge=1024, le=16 * 1024 * 1024,
                                description="policy text one request may send, all files together")
    max_cells: int = Field(2_500, ge=1, le=100_000, description="heat-map cells one request may ask for")
    max_diff_scenarios: int = Field(2_000, ge=1, le=100_000, description="scenarios of a playground diff")
    max_seconds: float = Field(5.0, gt=0, le=120, description="compute time of one request")
    max_concurrent: int = Field(2, ge=1, le=64, description="playground computations running at once")


class ReloadSettings(_Model):
    watch: bool = True
    debounce_ms: int = Field(500, ge=10, le=60_000)
    watch_paths: tuple[Path, ...] = Field((), description="watch these instead of the policy directory "
                                                           "(e.g. a git-sync root whose symlink is swapped)")
    quiet_ms: int = Field(1000, ge=0, le=60_000, description="a reload takes the files only once their content "
                                                             "has not changed for this long")
    settle_timeout_ms: int = Field(30_000, ge=100, le=600_000, description="give up (keep serving) when files "
                                                                          "keep changing this long")
    verify_interval_s: float = Field(30.0, ge=0, le=86_400, description="compare the digest on disk with the "
                                                                        "served one this often (0: never)")


class BundleSettings(_Model):
    """Policy bundles (``ttlpolicy bundle build``): where to get them and which keys must sign them.

    With ``public_keys`` or ``jwks_file``, every set — a bundle or the policy directory — must
    carry a manifest signed by one of these keys; unsigned or wrongly signed sets are refused.
    """

    source: str | None = Field(None, description="a bundle file or http(s):// URL; unset: serve `policies`")
    public_keys: tuple[Path, ...] = ()
    jwks_file: Path | None = None
    poll_interval_s: float = Field(30.0, ge=0.05, le=86_400)
    max_backoff_s: float = Field(300.0, ge=0.05, le=86_400)
    timeout_s: float = Field(10.0, gt=0, le=300)
    max_bytes: int = Field(16 * 1024 * 1024, ge=1024, le=1024 * 1024 * 1024)
    cache_dir: Path | None = Field(None, description="where the last good bundle is kept for restarts "
                                                     "(default: $XDG_CACHE_HOME/ttlpolicy/bundles)")
    _keys: tuple[Any, ...] = PrivateAttr(default=())

    @field_validator("source")
    @classmethod
    def _check_source(cls, value: str | None) -> str | None:
        if value is not None and "://" in value and not value.startswith(("http://", "https://", "file://")):
            raise ValueError("expected a file path or an http://, https:// or file:// URL")
        return value

    @model_validator(mode="after")
    def _load_keys(self) -> BundleSettings:
        from ..tokens.keys import KeyFileError, load_jwks, load_pem_public_key

        try:
            keys = [load_pem_public_key(path) for path in self.public_keys]
            if self.jwks_file is not None:
                keys += load_jwks(self.jwks_file)
        except KeyFileError as exc:
            raise ValueError(str(exc)) from None
        if (self.public_keys or self.jwks_file is not None) and not keys:
            raise ValueError("no usable signature key in the configured key files")
        self._keys = tuple(keys)
        return self

    @property
    def keys(self) -> tuple[Any, ...]:
        """The verification keys (:class:`ttlpolicy.tokens.keys.VerifyKey`); empty: signatures not required."""
        return self._keys


class DecisionLogSettings(_Model):
    sink: Literal["stdout", "file", "off"] = "stdout"
    path: Path | None = None
    queue_size: int = Field(10_000, ge=1)
    mask: dict[str, Literal["hash", "drop"]] = Field(default_factory=dict)
    salt: str = ""
    hash_length: int = Field(16, ge=8, le=64)
    on_failure: Literal["degrade", "refuse"] = Field(
        "degrade", description="while the log cannot be written: degrade (decide, /readyz degraded) or refuse "
                               "(answer 503, /readyz 503) where the audit trail is mandatory")

    @field_validator("sink", mode="before")
    @classmethod
    def _yaml_off(cls, value: Any) -> Any:
        return "off" if value is False else value  # YAML 1.1 reads a bare `off` as false

    @model_validator(mode="after")
    def _consistent(self) -> DecisionLogSettings:
        if self.sink == "file" and self.path is None:
            raise ValueError("sink 'file' needs a path")
        if "hash" in self.mask.values() and not self.salt:
            raise ValueError("masking with 'hash' needs a salt: set TTLPOLICY_DECISION_LOG__SALT, e.g. export "
                             "TTLPOLICY_DECISION_LOG__SALT=$(python -c \"import secrets; "
                             "print(secrets.token_hex(32))\")")
        return self


class SubjectTokenIssuer(_Model):
    """One issuer whose tokens a decide request may carry as ``subject_token``.

    The same fields as :meth:`ttlpolicy.tokens.IssuerConfig.from_mapping` (minus the inline
    ``jwks``); relative key paths in the config file resolve against the file's directory.
    """

    issuer: str = Field(min_length=1, max_length=1024)
    audience: tuple[str, ...] = Field(min_length=1, description="accepted `aud` values (a string or a list)")
    public_keys: tuple[Path, ...] = ()
    jwks_file: Path | None = None
    algorithms: tuple[str, ...] = ("RS256", "ES256", "EdDSA")
    leeway: int = Field(30, ge=0, le=300)
    required_claims: tuple[str, ...] = ("exp", "iat", "iss", "aud")
    token_types: tuple[str, ...] | None = Field(None, description="required JOSE `typ` values, e.g. [at+jwt]")
    _config: IssuerConfig | None = PrivateAttr(default=None)  # built from the fields, key files read

    @field_validator("audience", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return (value,) if isinstance(value, str) else value

    @field_validator("audience", "required_claims")
    @classmethod
    def _non_empty_strings(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not all(value):
            raise ValueError("entries must be non-empty strings")
        return value

    @field_validator("algorithms")
    @classmethod
    def _asymmetric_only(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _asymmetric(value)

    @model_validator(mode="after")
    def _load_keys(self) -> SubjectTokenIssuer:
        if not self.public_keys and self.jwks_file is None:
            raise ValueError("give public_keys (PEM files) or jwks_file")
        from ..tokens import IssuerConfig  # PyJWT and cryptography only when this is used

        # Reads the key files now: an unreadable or unusable key is a configuration error.
        self._config = IssuerConfig.from_mapping(self.as_mapping())  # its ValueErrors say what is wrong
        return self

    def as_mapping(self) -> dict[str, Any]:
        """The form :meth:`ttlpolicy.tokens.IssuerConfig.from_mapping` reads."""
        out: dict[str, Any] = {"issuer": self.issuer, "audience": list(self.audience),
                               "public_keys": [str(p) for p in self.public_keys],
                               "algorithms": list(self.algorithms), "leeway": self.leeway,
                               "required_claims": list(self.required_claims)}
        if self.jwks_file is not None:
            out["jwks_file"] = str(self.jwks_file)
        if self.token_types is not None:
            out["token_types"] = list(self.token_types)
        return out


class SubjectTokenSettings(_Model):
    """Issuers whose JWTs ``POST /v1/decide`` accepts as ``subject_token`` (default: none).

    The key files are read and the verifier is built when the settings are validated, so a
    missing or unusable key is a configuration error before anything is served.
    """

    issuers: tuple[SubjectTokenIssuer, ...] = ()
    _verifier: TokenVerifier | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _build(self) -> SubjectTokenSettings:
        if not self.issuers:
            return self
        seen = [i.issuer for i in self.issuers]
        twice = sorted({i for i in seen if seen.count(i) > 1})
        if twice:
            raise ValueError(f"issuer {twice[0]} is configured twice")
        from ..tokens import TokenVerifier

        self._verifier = TokenVerifier([i._config for i in self.issuers if i._config is not None])
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.issuers)

    @property
    def verifier(self) -> TokenVerifier | None:
        """The one verifier built from these settings, or ``None`` when no issuer is configured."""
        return self._verifier


class Settings(_Model):
    """Every setting of `ttlpolicy serve`; see docs/service.md and examples/serve.yaml."""

    policies: Path = Path("policies")
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65_535)
    workers: int = Field(1, ge=1, le=64)
    insecure_no_auth: bool = False
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    access_log: bool = False
    limits: LimitSettings = LimitSettings()
    auth: AuthSettings = AuthSettings()
    reload: ReloadSettings = ReloadSettings()
    decision_log: DecisionLogSettings = DecisionLogSettings()
    subject_tokens: SubjectTokenSettings = SubjectTokenSettings()
    bundle: BundleSettings = BundleSettings()
    activity: ActivitySettings = ActivitySettings()
    webhooks: WebhookSettings = WebhookSettings()
    state: StateSettings = StateSettings()
    ui: UiSettings = UiSettings()

    def bind_problem(self) -> str | None:
        """Why this bind is refused (non-loopback without credentials), or ``None``."""
        if self.auth.enabled or self.insecure_no_auth or is_loopback(self.host):
            return None
        return (f"refusing to listen on {self.host}: no credentials are configured. Configure auth.api_keys or "
                "auth.jwt, bind to 127.0.0.1, or pass --insecure-no-auth")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# Sections that may be written as one string, which stands for one of their fields
# (``state: redis://…`` is ``state: {url: redis://…}``). The short form is expanded before the
# file, the environment and the flags are merged, so each sets only what it names:
# ``TTLPOLICY_STATE=redis://…`` replaces the file's URL and keeps its other state settings, and
# ``TTLPOLICY_STATE__DEGRADED=…`` keeps a URL given in the short form.
SHORT_FORMS = {"state": "url"}


def _expand_short_forms(data: dict[str, Any], origin: str) -> dict[str, Any]:
    for section, field in SHORT_FORMS.items():
        value = data.get(section)
        if isinstance(value, str):
            data[section] = {field: value}
        elif isinstance(value, dict) and isinstance(value.get(""), str):
            short = value.pop("")  # the short form beside the long one (see _set_path)
            if field in value and value[field] != short:
                both = (f"{ENV_PREFIX}{section.upper()} and {ENV_PREFIX}{section.upper()}__{field.upper()}"
                        if origin == "environment" else f"{section} and {section}.{field}")
                raise ConfigError(f"{both} name different values; set one of them")
            value[field] = short
    return data


def _set_path(target: dict[str, Any], path: list[str], value: Any) -> None:
    for key in path[:-1]:
        child = target.get(key)
        if not isinstance(child, dict):
            # A short form met on the way down (TTLPOLICY_STATE, then TTLPOLICY_STATE__DEGRADED)
            # is kept under "" for _expand_short_forms, never dropped.
            child = target[key] = {"": child} if isinstance(child, str) and key in SHORT_FORMS else {}
        target = child
    if isinstance(target.get(path[-1]), dict) and isinstance(value, str) and path[-1] in SHORT_FORMS:
        target[path[-1]][""] = value
        return
    target[path[-1]] = value


def _env_value(raw: str) -> Any:
    text = raw.strip()
    if text[:1] in "[{":
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError:
            return raw
    return raw


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """Nested settings from ``TTLPOLICY_*`` variables (``__`` separates levels)."""
    out: dict[str, Any] = {}
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or name in NOT_SETTINGS:
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX):].split("__") if part]
        if path:
            _set_path(out, path, _env_value(raw))
    return _expand_short_forms(out, "environment")


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _relative_to(data: dict[str, Any], base: Path) -> None:
    """Resolve the relative key paths of the file (``subject_tokens`` issuers, security-event
    transmitters, webhook secret files) against ``base``."""
    section = data.get("subject_tokens")
    issuers = section.get("issuers") if isinstance(section, dict) else None
    if not isinstance(issuers, list):
        issuers = None

    def resolve(value: Any) -> Any:
        if isinstance(value, (str, Path)) and str(value) and not Path(value).is_absolute():
            return str(base / value)
        return value  # anything else is left for validation to refuse

    activity = data.get("activity")
    events = activity.get("security_events") if isinstance(activity, dict) else None
    transmitters = events.get("transmitters") if isinstance(events, dict) else None
    hooks = data.get("webhooks")
    endpoints = hooks.get("endpoints") if isinstance(hooks, dict) else None
    for issuer in [*(issuers or []), *(transmitters if isinstance(transmitters, list) else [])]:
        if not isinstance(issuer, dict):
            continue
        if isinstance(issuer.get("public_keys"), list):
            issuer["public_keys"] = [resolve(p) for p in issuer["public_keys"]]
        if "jwks_file" in issuer:
            issuer["jwks_file"] = resolve(issuer["jwks_file"])
    for endpoint in endpoints if isinstance(endpoints, list) else []:
        if isinstance(endpoint, dict) and "secret_file" in endpoint:
            endpoint["secret_file"] = resolve(endpoint["secret_file"])


def load_settings(file: str | Path | None = None, environ: Mapping[str, str] | None = None,
                  flags: Mapping[str, Any] | None = None) -> Settings:
    """File, then environment, then flags (``None`` flag values are ignored); raises :class:`ConfigError`.

    >>> load_settings(flags={"port": 9090}).port                     # doctest: +SKIP
    9090
    """
    data: dict[str, Any] = {}
    if file is not None:
        try:
            loaded = yaml.safe_load(Path(file).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read config {file}: {exc.strerror or exc}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config {file} is not valid YAML: {exc}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config {file} must be a mapping of settings")
        data = loaded or {}
        # abspath, not resolve(): a config mounted through symlinks (a Kubernetes ConfigMap)
        # must keep pointing through them when the volume is updated.
        _relative_to(data, Path(os.path.abspath(Path(file).parent)))
    data = _merge(_expand_short_forms(data, "file"), env_overrides(os.environ if environ is None else environ))
    for key, value in (flags or {}).items():
        if value is not None:
            _set_path(data, key.split("."), value)
    _expand_short_forms(data, "flags")
    try:
        return Settings.model_validate(data)
    except pydantic.ValidationError as exc:
        lines = [f"  {'.'.join(map(str, e['loc'])) or '(top)'}: {e['msg']}" for e in exc.errors()]
        raise ConfigError("invalid settings:\n" + "\n".join(lines)) from None

