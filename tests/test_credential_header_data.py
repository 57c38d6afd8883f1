"""Personal data in a request's credential headers: read with the PII rules and handled as in any other
header; the credentials agents send every day (bearer JWTs, SigV4, framework cookies, provider keys to
their own host) pass unflagged."""

from __future__ import annotations

import base64
import json
import textwrap

import pytest

from proxy.config.policy import Policy, parse_policy
from proxy.inspection import Detectors, TurnInspector
from proxy.state import SqliteStateStore
from proxy.turn import Turn, TurnContext

ANTHROPIC = (
    "sk-ant-api03-TOt9aL0Mk6OCVJ3iWHwF2dylxG5C1YLDa2iqN1Zv7SScN1TeqLcC5FJp5jjEMXiE09JQkk6aMnAlo9yYo6MJWjIX"
    "OjznMAA"
)
OPENAI = (
    "sk-proj-F056SrJlbzK0Fr5eu_8enJPV7DPeWHtmzqGq6vfX82s2T0d3FYeklV2hSBf17e_q-GVD8H9_PkT3BlbkFJYcELnFdYprur"
    "GjvxnGNZ_RN-UvgyCIXCwnLiZveqMrgxAbbkEUEGAeZpMQJPYsB5DyaJ2qN_l8"
)
EMAIL = "jane.roe@example.com"
SSN = "078-05-1120"
CARD = "4184 2785 3494 4592"
POLICY = """\
    mode: {mode}
    agents: {{bot: {{token: t, role: r}}}}
    roles: {{r: {{egress: {{allow: ["*"]}}}}}}
    redaction: {{requests: {redacts}}}
    """


def b64url(document: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(document).encode()).decode().rstrip("=")


# An OpenID Connect ID token carries the user's email among its claims: it is the user's own credential.
ID_TOKEN = ".".join(
    [
        b64url({"alg": "RS256", "kid": "1e9gdk7", "typ": "JWT"}),
        b64url({"iss": "https://idp.internal", "sub": "248289761001", "email": EMAIL, "exp": 1800003600}),
        "NHVaYe26MbtOYhSKkoKYdFVomg4i8ZJd8_-RU8VNbftc4TSMb4bXP3l3YlNWACwyXPGffz5aXHc6lty1Y2t4SWRqGteragsVdZufDn5B",
    ]
)
SIGV4 = (
    "AWS4-HMAC-SHA256 Credential=AKIAQWERTY234567ABCD/20261206/us-east-1/s3/aws4_request, "
    "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
    "Signature=fe5f80f77d5fa3beca038a248ff027d0445342fe2855ddc963176630326f1024"
)

HS256_JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiI3ODkwMTIzNCIsIm5hbWUiOiJKb2huIiwiaWF0IjoxNzAwMDAwMDAwfQ"
    ".dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
)
EVERYDAY = {
    "oidc-id-token": ("api.internal", "Authorization", f"Bearer {ID_TOKEN}"),
    "hs256-jwt": ("api.internal", "Authorization", f"Bearer {HS256_JWT}"),
    "aws-sigv4": ("bucket.s3.amazonaws.com", "Authorization", SIGV4),
    "django-cookies": (
        "app.internal",
        "Cookie",
        "csrftoken=ZXbXAeEVeCX4KuE8yxL4b4B1k3Nvps4T; sessionid=k2q3l8rvl1m7b3e0x1gh0yq6mpx7",
    ),
    "rails-session": (
        "app.internal",
        "Cookie",
        "_myapp_session=BAh7B0kiD3Nlc3Npb25faWQGOgZFVEkiJTQ4Y2Y5NjM3ZmM3MjI4NmI0OGE1ZmQ3N2Y4ZjE3ZTQ5"
        "BjsAVA%3D%3D--4b8f5e3a2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f",
    ),
    "laravel-cookies": (
        "app.internal",
        "Cookie",
        "XSRF-TOKEN=eyJpdiI6IjFhMmIzYzRkNWU2ZjdnOGgiLCJ2YWx1ZSI6IkFCQ0RFRkdISUpLTE1OIiwibWFjIjoiMTIz"
        "NDU2Nzg5MGFiY2RlZiJ9; "
        "laravel_session=eyJpdiI6IjlpOGg3ZzZmNWU0ZDNjMmIiLCJ2YWx1ZSI6Ik9QUVJTVFVWV1hZWiIsIm1hYyI6ImZlZGNi"
        "YTA5ODc2NTQzMjEifQ%3D%3D",
    ),
    "php-java-express-sessions": (
        "app.internal",
        "Cookie",
        "PHPSESSID=298zf09hf012fh2; JSESSIONID=E2E6D1F5A9B7C3D0F1E2A3B4C5D6E7F8; "
        "connect.sid=s%3AaBcDeF123456.Qx9yZ8wV7uT6sR5qP4oN3mL2kJ1iH0gF9eD8cB7aA6",
    ),
    "google-analytics-cookies": (
        "www.example.com",
        "Cookie",
        "_ga=GA1.2.1234567890.1700000000; _gid=GA1.2.987654321.1700086400; "
        "_ga_ABC123XYZ=GS1.1.1700000000.3.1.1700003600.0.0.0; _gat=1",
    ),
    "sticky-session-addresses": (
        "app.internal",
        "Cookie",
        "BIGipServerpool_web=10.1.2.3:443; lb_backend=192.168.10.24; route=2001:db8::8a2e:370:7334",
    ),
    "anthropic-key-to-anthropic": ("api.anthropic.com", "x-api-key", ANTHROPIC),
    "openai-key-to-openai": ("api.openai.com", "Authorization", f"Bearer {OPENAI}"),
    "uuid-session": ("tool.internal", "X-Session-Token", "3f2504e0-4f89-11d3-9a0c-0305e82c3301"),
}

PERSONAL = [
    pytest.param("X-Customer-Secret", f"{EMAIL} {SSN}", {"email-address", "us-ssn"}, id="secret-named"),
    pytest.param("Cookie", f"theme=dark; note={SSN}", {"us-ssn"}, id="cookie-ssn"),
    pytest.param("X-Session-Token", f"card {CARD}", {"payment-card"}, id="token-named-card"),
    pytest.param("Authorization", f"Bearer {EMAIL}", {"email-address"}, id="bearer-email"),
    pytest.param("x-api-key", f"{ANTHROPIC} {SSN}", {"us-ssn"}, id="own-key-with-ssn"),
]


def policy_for(mode: str = "enforce", *, redacts: bool = True) -> Policy:
    text = textwrap.dedent(POLICY.format(mode=mode, redacts=str(redacts).lower()))
    return parse_policy(text, "policy.yaml", environ={})


@pytest.fixture(scope="module")
def detectors() -> Detectors:
    return Detectors(policy_for(), b"k" * 32)


def inspector(detectors: Detectors, policy: Policy, host: str) -> TurnInspector:
    turn = Turn(TurnContext(agent_id="bot", role="r", user_id="u", purpose="p", consent_id="c"))
    turn.egress_host = host
    return TurnInspector(detectors, policy, SqliteStateStore(None), turn)


@pytest.mark.parametrize(("host", "name", "value"), EVERYDAY.values(), ids=EVERYDAY.keys())
def test_everyday_credentials_are_not_flagged(detectors: Detectors, host: str, name: str, value: str) -> None:
    scanned = inspector(detectors, policy_for(), host)
    assert scanned.scan_headers([(name, value)], sent_by_agent=True) is None
    assert scanned.turn.findings == []


@pytest.mark.parametrize(("name", "value", "rules"), PERSONAL)
def test_personal_data_in_a_credential_header_is_redacted_where_requests_are(
    detectors: Detectors, name: str, value: str, rules: set[str]
) -> None:
    host = "api.anthropic.com"
    scanned = inspector(detectors, policy_for(), host)
    sent = scanned.scan_headers([("Accept", "*/*"), (name, value)], sent_by_agent=True)
    assert sent is not None and sent[0] == ("Accept", "*/*") and sent[1][0] == name
    assert not any(piece in sent[1][1] for piece in (EMAIL, SSN, CARD))
    assert ANTHROPIC in sent[1][1] or ANTHROPIC not in value
    assert {finding.rule for finding in scanned.turn.findings} == rules
    assert all(finding.enforced for finding in scanned.turn.findings)
    assert scanned.request_block() is None


@pytest.mark.parametrize("mode", ["enforce", "observe"])
@pytest.mark.parametrize("redacts", [True, False])
@pytest.mark.parametrize(("name", "value", "rules"), PERSONAL)
def test_a_credential_header_holding_personal_data_is_handled_as_any_other_header(
    detectors: Detectors, mode: str, redacts: bool, name: str, value: str, rules: set[str]
) -> None:
    """Whatever the policy does with personal data in ``X-Note`` (redact, refuse, record), it does in a
    header named as a credential."""
    outcomes = []
    for header in (name, "X-Note"):
        scanned = inspector(detectors, policy_for(mode, redacts=redacts), "api.anthropic.com")
        sent = scanned.scan_headers([(header, value)], sent_by_agent=True)
        block = scanned.request_block()
        outcomes.append(
            (
                sent is None,
                sorted((f.rule, f.action, f.enforced) for f in scanned.turn.findings if f.rule in rules),
                block.rule if block else None,
            )
        )
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][1]
