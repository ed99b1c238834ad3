# The bundled `workforce` policy (with its `baseline`) in Rego v1, for the engine comparison.
#
# Input: the prepared context of benchmarks/handwritten.py `prepare()` (defaults filled in,
# location.zone, time.hour/weekday derived in Python, times as epoch seconds), because Rego
# engines have no notion of the policy's declared attributes. Same semantics as ttlpolicy:
# factors multiply, the highest floor, then the lowest cap, tier ceiling, idle timeout and
# session cap, global limits; any deny wins. Query: data.ttl.decision
package ttl

import rego.v1

tiers := {
	"public": {"access": 7200, "refresh": 2592000, "max_access": 28800, "max_refresh": 7776000},
	"standard": {"access": 3600, "refresh": 1209600, "max_access": 14400, "max_refresh": 2592000},
	"healthcare": {"access": 1800, "refresh": 43200, "max_access": 3600, "max_refresh": 86400},
	"finance": {"access": 900, "refresh": 28800, "max_access": 1800, "max_refresh": 43200},
	"government": {"access": 600, "refresh": 14400, "max_access": 1200, "max_refresh": 28800},
}

risk_factor := min([max([1 - input.user.risk, 0.25]), 1])

# Effects, one table per kind of effect. Comprehensions iterate these tables and test
# `r in matched` (rather than looking up `effects[r].cap`, undefined for most rules): regorus'
# RVM (0.13) kept undefined elements in array comprehensions instead of skipping them.
access_factor_of := {"risk-scaling": risk_factor, "sender-constrained": 2, "unmanaged-device": 0.5,
	"managed-device-with-mfa": 1.5, "off-hours": 0.5}

refresh_factor_of := {"risk-scaling": risk_factor, "sender-constrained": 1.5}

access_cap_of := {"unmanaged-device": 1800, "unrecognised-platform": 900, "unexpected-country": 900, "restricted-resource": 300,
	"confidential-resource": 1800}

refresh_cap_of := {"unmanaged-device": 86400, "unrecognised-platform": 28800, "off-hours": 43200, "outside-corporate-network": 86400,
	"unexpected-country": 3600, "restricted-resource": 0, "contractor": 36000}

refresh_floor_of := {"managed-device-with-mfa": 86400}

idle_timeout_of := {"unmanaged-device": 28800}

max_session_of := {"contractor": 604800}

deny_rules := {"compromised-user", "finance-admin-outside-office", "government-unmanaged"}

step_up_rules := {"unexpected-country", "restricted-without-mfa", "stale-authentication"}

rotation_rules := {"public-client-rotation", "unmanaged-device"}

# --- conditions ---------------------------------------------------------------------------

matched contains "compromised-user" if input.user.risk >= 0.9

matched contains "risk-scaling" if input.user.risk > 0

matched contains "sender-constrained" if input.client.binding in {"mtls", "dpop"}

matched contains "public-client-rotation" if input.client.type == "public"

matched contains "unmanaged-device" if input.device.trust == "unmanaged"

matched contains "unrecognised-platform" if input.device.platform == "other"

matched contains "managed-device-with-mfa" if {
	input.device.trust in {"managed", "compliant"}
	input.user.mfa
}

matched contains "off-hours" if input.time.hour >= 22

matched contains "off-hours" if input.time.hour < 6

matched contains "off-hours" if input.time.weekday in {"sat", "sun"}

in_office_network if input.location.zone in {"corporate", "vpn"}

matched contains "outside-corporate-network" if not in_office_network

matched contains "unexpected-country" if {
	input.location.country
	count(input.location.expected_countries) > 0
	not expected_country
}

expected_country if input.location.country in input.location.expected_countries

matched contains "restricted-resource" if input.resource.sensitivity == "restricted"

matched contains "restricted-without-mfa" if {
	input.resource.sensitivity == "restricted"
	not input.user.mfa
}

matched contains "confidential-resource" if input.resource.sensitivity == "confidential"

matched contains "contractor" if input.user.department == "contractor"

matched contains "contractor" if "contractors" in input.user.groups

matched contains "stale-authentication" if {
	input.grant.type == "refresh_token"
	input.time.now - input.user.auth_time > 259200
}

matched contains "finance-admin-outside-office" if {
	input.tier == "finance"
	"finance-admins" in input.user.groups
	input.location.zone == "none"
}

matched contains "government-unmanaged" if {
	input.tier == "government"
	input.device.trust == "unmanaged"
}

# --- combination ----------------------------------------------------------------------------

tier := tiers[input.tier]

access_factors := [f | some r, f in access_factor_of; r in matched]

refresh_factors := [f | some r, f in refresh_factor_of; r in matched]

access_raw := floor((tier.access * product(access_factors)) + 0.000001)

refresh_raw := floor((tier.refresh * product(refresh_factors)) + 0.000001)

refresh_floored := max({refresh_raw} | {f | some r, f in refresh_floor_of; r in matched})

access_capped := min({access_raw} | {c | some r, c in access_cap_of; r in matched})

refresh_capped := min({refresh_floored} | {c | some r, c in refresh_cap_of; r in matched})

idle_timeout := min({604800} | {s | some r, s in idle_timeout_of; r in matched})

max_session := min({2592000} | {s | some r, s in max_session_of; r in matched})

refresh_idle := min([refresh_capped, tier.max_refresh, idle_timeout])

# object.get rather than `if t := input.user.auth_time`: regorus' RVM (0.13) returned undefined
# for the latter's else branch.
auth_time := object.get(input.user, "auth_time", null)

remaining := max_session - (input.time.now - auth_time) if auth_time != null
else := max_session

access_session := min([access_capped, tier.max_access, remaining]) if remaining >= 0
else := min([access_capped, tier.max_access])

refresh_session := min([refresh_idle, remaining]) if remaining >= 0
else := refresh_idle

access_limited := max([min([access_session, 43200]), 60])

refresh_limited := max([min([refresh_session, 7776000]), 300]) if refresh_session > 0
else := 0

denied if {
	some r in deny_rules
	r in matched
}

denied if remaining <= 0

default allow := false

allow if not denied

default step_up := false

step_up if {
	some r in step_up_rules
	r in matched
}

default rotation := false

rotation if {
	some r in rotation_rules
	r in matched
}

decision := {
	"allow": allow,
	"access_ttl": access_limited,
	"refresh_ttl": refresh_limited,
	"step_up": step_up,
	"rotation": rotation,
	"idle_timeout": idle_timeout,
	"max_session": max_session,
} if allow
else := {
	"allow": false,
	"access_ttl": 0,
	"refresh_ttl": 0,
	"step_up": step_up,
	"rotation": rotation,
	"idle_timeout": idle_timeout,
	"max_session": max_session,
}
