"""Hostile tokens over HTTP: each one is answered 200 with `valid: false` and the finding that names the attack.

Every token here is minted by tests/mint.py (cryptography directly), never by the code under test, and the
hostile shapes (alg none, key confusion, embedded keys, psychic ECDSA, DER signatures, bad JSON) are built by hand.
"""

from __future__ import annotations

import base64
import datetime
import json
import re
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import NameOID

from app.findings import CHECK_ORDER
from app.settings import Settings
from tests.conftest import AUDIENCE, ISSUER, claims, rs256_policy, rs256_token
from tests.mint import SigningKey, b64, jwks, key_for, mint, segment

URL = "/v1/validate/jwt"
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def verdict(client: Any, token: str, policy: dict[str, Any] | None = None) -> dict[str, Any]:
    response = client.post(URL, json={"token": token, "policy": policy or rs256_policy()})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["valid"] is False
    assert set(body["statuses"]) == set(CHECK_ORDER)
    return body


def codes(body: dict[str, Any]) -> list[str]:
    return [item["code"] for item in body["findings"]]


def only(body: dict[str, Any], code: str) -> dict[str, Any]:
    matches = [item for item in body["findings"] if item["code"] == code]
    assert len(matches) == 1, codes(body)
    return matches[0]


def assert_malformed(body: dict[str, Any]) -> dict[str, Any]:
    assert codes(body) == ["MALFORMED_TOKEN"]
    assert body["statuses"]["format"] == "fail"
    assert all(body["statuses"][name] == "skip" for name in CHECK_ORDER[1:])
    return body["findings"][0]


def signed_raw(header_json: bytes, payload_json: bytes, key: SigningKey | None = None) -> str:
    """A token over exact header and payload bytes (for shapes json.dumps cannot produce), properly signed."""
    key = key or key_for("RS256")
    signing_input = f"{b64(header_json)}.{b64(payload_json)}"
    return f"{signing_input}.{b64(key.sign(signing_input.encode()))}"


def es256_policy() -> dict[str, Any]:
    return rs256_policy(allowed_algs=["ES256"], public_key=key_for("ES256").public_pem)


# --- alg none -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
@pytest.mark.parametrize("with_signature", [False, True], ids=["unsigned", "with-signature"])
def test_alg_none_in_any_case_is_refused_before_any_key_work(client, alg, with_signature):
    signing_input = f"{segment({'alg': alg, 'typ': 'JWT'})}.{segment(claims())}"
    signature = b64(key_for("RS256").sign(signing_input.encode())) if with_signature else ""
    body = verdict(client, f"{signing_input}.{signature}")
    finding = only(body, "ALGORITHM_INVALID")
    assert finding["evidence"]["actual"] == alg
    # Told as an unsigned token in any case, not as an algorithm missing from allowed_algs
    assert "never accepted" in finding["message"] and "Unsigned tokens" in finding["remediation"]
    assert body["statuses"]["algorithm"] == "fail"
    assert body["statuses"]["key"] == "skip" and body["statuses"]["signature"] == "skip"
    assert "key" not in body


@pytest.mark.parametrize("header, says", [
    ({"typ": "JWT"}, "no 'alg' string"), ({"alg": ["RS256"]}, "no 'alg' string"), ({"alg": 256}, "no 'alg' string"),
    ({"alg": None}, "no 'alg' string"), ({"alg": ""}, "no 'alg' string"), ({"alg": "rs256"}, "not in allowed_algs"),
    ({"alg": "RS257"}, "not in allowed_algs"),
], ids=["missing", "array", "number", "null", "empty", "wrong-case", "unknown"])
def test_alg_missing_or_not_an_allowed_name_is_algorithm_invalid(client, header, says):
    signing_input = f"{segment(header)}.{segment(claims())}"
    token = f"{signing_input}.{b64(key_for('RS256').sign(signing_input.encode()))}"
    body = verdict(client, token)
    finding = only(body, "ALGORITHM_INVALID")
    assert finding["evidence"]["actual"] == header.get("alg")
    assert says in finding["message"]  # an empty 'alg' names no algorithm (found by mutation testing)
    assert body["statuses"]["key"] == "skip"


@pytest.mark.parametrize("alg, hint", [("ES256", "If the issuer really signs with ES256, add it to allowed_algs"),
                                       ("RS257", None)], ids=["registered-algorithm", "unknown-name"])
def test_only_a_registered_algorithm_outside_allowed_algs_is_told_to_be_added(client, alg, hint):
    """Found by mutation testing: nothing told an algorithm of the registry (hinted) from a made-up name (not)."""
    signing_input = f"{segment({'alg': alg, 'typ': 'JWT'})}.{segment(claims())}"
    token = f"{signing_input}.{b64(key_for('RS256').sign(signing_input.encode()))}"
    remediation = only(verdict(client, token), "ALGORITHM_INVALID")["remediation"]
    assert remediation == hint if hint is None else remediation.startswith(hint)


@pytest.mark.parametrize("use, kid, hint", [
    ("sig", "rs256-2", "The policy's own key set has no key with this kid"),
    ("enc", "rs256-1", "No key with this kid fits RS256: check the key's `alg`, `use` (sig)"),
], ids=["unknown-kid", "encryption-key"])
def test_kid_not_found_in_a_policys_own_key_set_says_what_to_fix(client, use, kid, hint):
    """Found by a spec audit: with an inline set the finding had no remediation (there is nothing to refetch)."""
    token = mint(claims(), key_for("RS256"), kid=False, header={"kid": kid})
    keys = [{**jwks(key_for("RS256"))["keys"][0], "use": use}, jwks(key_for("RS256", "rs256-other"))["keys"][0]]
    body = verdict(client, token, rs256_policy(public_key=None, jwks={"keys": keys}))
    assert only(body, "KID_NOT_FOUND")["remediation"].startswith(hint)


@pytest.mark.parametrize("kid", [["rs256-1"], 1, {"kid": "rs256-1"}, "rs256-2"], ids=["array", "number", "object", "unknown"])
def test_kid_that_is_not_a_known_string_is_kid_not_found_against_a_key_set(client, kid):
    token = mint(claims(), key_for("RS256"), kid=False, header={"kid": kid})
    body = verdict(client, token, rs256_policy(public_key=None, jwks=jwks(key_for("RS256"))))
    assert codes(body) == ["KID_NOT_FOUND"]
    assert body["statuses"]["signature"] == "skip"


def test_case_mismatched_alg_remediation_says_names_are_case_sensitive(client):
    token = mint(claims(), key_for("RS256"), alg="rs256")
    assert "case-sensitive" in only(verdict(client, token), "ALGORITHM_INVALID")["remediation"]


def test_the_case_hint_names_the_tokens_algorithm_and_the_policys_spelling(client):
    """Found by a review: the hint said "'RS256', not 'rs256'" whatever the algorithm."""
    secret = "a-shared-secret-of-at-least-32-bytes!"
    token = mint(claims(), SigningKey("HS256", secret.encode(), "k"), alg="hs256")
    policy = rs256_policy(public_key=None, secret=secret, allowed_algs=["HS256"])
    remediation = only(verdict(client, token, policy), "ALGORITHM_INVALID")["remediation"]
    assert remediation == "Algorithm names are case-sensitive (RFC 7518): 'HS256', not 'hs256'."


def test_a_kid_against_an_inline_key_without_one_says_to_give_the_key_its_kid(client):
    """Found by a review: the issuer's key pasted without its kid got "add the issuer's current key to it"."""
    key = jwks(key_for("RS256"))["keys"][0]
    del key["kid"]
    body = verdict(client, mint(claims(), key_for("RS256"), kid=False, header={"kid": "r1"}),
                   rs256_policy(public_key=None, jwks={"keys": [key]}))
    remediation = only(body, "KID_NOT_FOUND")["remediation"]
    assert "a key without a kid that fits RS256" in remediation and "Give that key its 'kid'" in remediation


# --- key confusion --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("policy_kind", ["public_key", "jwks"])
def test_hs256_macd_with_the_rsa_public_key_is_refused_as_key_confusion(client, policy_kind):
    rsa_key = key_for("RS256")
    forger = SigningKey("HS256", rsa_key.public_pem.encode(), rsa_key.kid)
    token = mint(claims(), forger)
    policy = rs256_policy() if policy_kind == "public_key" else rs256_policy(public_key=None, jwks=jwks(rsa_key))
    body = verdict(client, token, policy)
    finding = only(body, "ALGORITHM_INVALID")
    assert finding["evidence"] == {"expected": ["RS256"], "actual": "HS256"}
    assert "key-confusion" in finding["remediation"] and "switch its signing algorithm to RS256" in finding["remediation"]
    assert body["statuses"]["signature"] == "skip"


def test_the_key_confusion_hint_names_the_policys_own_algorithms(client):
    """Found by a review: against an ES256 policy the hint said to switch to RS256."""
    forger = SigningKey("HS256", key_for("ES256").public_pem.encode(), "k")
    finding = only(verdict(client, mint(claims(), forger), es256_policy()), "ALGORITHM_INVALID")
    assert "switch its signing algorithm to ES256 and" in finding["remediation"]


def test_an_hs256_token_naming_a_public_key_of_a_mixed_set_is_called_key_confusion(client):
    """A set with an HMAC key and an RSA key allows both families; a token claiming HS256 with the RSA key's kid
    got the generic "check the key's alg, use, key_ops" hint. Found by a review."""
    rsa_key, hmac_key = key_for("RS256"), key_for("HS256", "hmac-1")
    policy = rs256_policy(public_key=None, allowed_algs=["RS256", "HS256"],
                          jwks={"keys": [*jwks(rsa_key)["keys"], *jwks(hmac_key)["keys"]]})
    forged = mint(claims(), SigningKey("HS256", rsa_key.public_pem.encode(), rsa_key.kid))
    finding = only(verdict(client, forged, policy), "KID_NOT_FOUND")
    assert "is an RSA public key, and the token claims HS256" in finding["remediation"]
    assert "key-confusion" in finding["remediation"]
    wrong_kid = mint(claims(), SigningKey("HS256", hmac_key.private, "no-such-kid"))
    assert "key-confusion" not in (only(verdict(client, wrong_kid, policy), "KID_NOT_FOUND")["remediation"] or "")


@pytest.mark.parametrize("placement", ["secret-pem", "secret-jwk", "secret-certificate", "secret-ssh",
                                       "secret-ssh-ecdsa", "secret-der-wrapped", "oct-jwk-pem"])
def test_a_public_key_given_as_the_hmac_secret_is_refused(client, placement):
    """With the IdP's public key pasted as `secret`, anyone holding that public key could mint HS256 tokens that
    validate (the key-confusion attack, by configuration): the policy is refused, naming the field. An ECDSA SSH
    key, and a PEM body copied without its header lines but with its line breaks, too (found by mutation testing)."""
    rsa_key = key_for("RS256")
    public_jwk = jwks(rsa_key)["keys"][0]
    body = "".join(rsa_key.public_pem.strip().splitlines()[1:-1])
    material = {"secret-pem": rsa_key.public_pem, "secret-jwk": json.dumps(public_jwk),
                "secret-certificate": _self_signed_certificate(rsa_key),
                "secret-ssh": "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 user@host",
                "secret-ssh-ecdsa": "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTY= ops@idp",
                "secret-der-wrapped": "\n".join(body[i:i + 64] for i in range(0, len(body), 64)),
                "oct-jwk-pem": rsa_key.public_pem}[placement]
    if placement == "oct-jwk-pem":
        policy = rs256_policy(public_key=None, allowed_algs=["HS256"], jwks={"keys": [
            {"kty": "oct", "kid": "k", "k": base64.urlsafe_b64encode(material.encode()).rstrip(b"=").decode()}]})
    else:
        policy = rs256_policy(public_key=None, allowed_algs=["HS256"], secret=material)
    forged = mint(claims(), SigningKey("HS256", material.encode(), "k"))
    response = client.post(URL, json={"token": forged, "policy": policy})
    assert response.status_code == 422, response.text
    problem = response.json()
    if placement == "oct-jwk-pem":  # joserfc refuses a PEM in an oct key's 'k' already
        assert problem["errors"][0]["loc"] == ["body", "policy", "jwks", "keys", 0]
    else:
        assert problem["errors"][0]["loc"] == ["body", "policy", "secret"]
        assert "anyone holding a public key could sign tokens" in problem["errors"][0]["msg"]
    assert material not in response.text


def test_policy_cannot_allow_hs256_next_to_an_rsa_jwk(client):
    policy = rs256_policy(public_key=None, jwks=jwks(key_for("RS256")), allowed_algs=["RS256", "HS256"])
    response = client.post(URL, json={"token": rs256_token(), "policy": policy})
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "policy", "allowed_algs", 1]


# --- keys named by the token ----------------------------------------------------------------------------------

def _self_signed_certificate(key: SigningKey) -> str:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "attacker")])
    start = datetime.datetime(2023, 1, 1, tzinfo=datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                   .public_key(key.private.public_key()).serial_number(1)
                   .not_valid_before(start).not_valid_after(start + datetime.timedelta(days=3650))
                   .sign(key.private, hashes.SHA256()))
    return base64.b64encode(certificate.public_bytes(serialization.Encoding.DER)).decode()


def test_a_jwk_whose_certificate_holds_another_key_is_refused_and_a_matching_or_unreadable_one_is_kept():
    """RFC 7517 4.7: the key in x5c's first certificate "MUST match" the JWK's other members. A mismatch was
    accepted silently (found by a review); the key is always taken from `n`/`e`, never from the certificate."""
    from app.keys import jwk_set

    own, other = key_for("RS256"), key_for("RS256", "attacker")
    # A v2 certificate: cryptography raises InvalidVersion, no ValueError (found by a review: the whole set failed)
    der = bytearray(base64.b64decode(_self_signed_certificate(own)))
    der[der.index(b"\xa0\x03\x02\x01\x02") + 4] = 1
    for x5c, kept in (([_self_signed_certificate(other)], False), ([_self_signed_certificate(own)], True),
                      (["not base64 DER"], True), ([], True), ([base64.b64encode(bytes(der)).decode()], True)):
        entries, problems = jwk_set({"keys": [{**own.jwk, "x5c": x5c}]}, allow_oct=False)
        assert (len(entries), bool(problems)) == ((1, False) if kept else (0, True)), (x5c[:1], problems)
        if not kept:
            assert "holds another key" in problems[0][1]


@pytest.mark.parametrize("member, fits", [
    ({"use": "sig"}, True), ({"use": "signing"}, False), ({"use": "enc"}, False),
    ({"key_ops": ["verify"]}, True), ({"key_ops": ["sign", "verify"]}, True), ({"key_ops": ["encrypt"]}, False),
    ({"key_ops": []}, False),
], ids=lambda value: json.dumps(value) if isinstance(value, dict) else str(value))
def test_a_key_verifies_only_when_its_use_is_sig_and_its_key_ops_allow_verify(client, member, fits):
    """RFC 7517 4.2 and 4.3: `use` other than "sig" (a misspelling included) and `key_ops` without "verify" keep a
    key from verifying (found by mutation testing: any non-"enc" use, any non-empty key_ops, verified)."""
    from app.keys import ALGORITHMS, jwk_key

    key = {**jwks(key_for("RS256"))["keys"][0], **member}
    assert jwk_key(key, allow_oct=False).fits(ALGORITHMS["RS256"]) is fits
    response = client.post(URL, json={"token": rs256_token(), "policy": rs256_policy(public_key=None,
                                                                                   jwks={"keys": [key]})})
    if fits:
        assert response.status_code == 200 and response.json()["valid"], response.text
    else:  # an inline set whose keys all fit nothing is refused with the policy
        assert response.status_code == 422 and "RS256 fits none of the configured keys" in response.text


@pytest.mark.parametrize("member, problem", [
    ({"use": ["sig"]}, "'use' must be a string"), ({"key_ops": ["verify", 1]}, "'key_ops' must be an array of strings"),
])
def test_a_jwk_whose_use_or_key_ops_is_of_the_wrong_type_is_skipped_in_a_set_and_refused_inline(client, member,
                                                                                                problem):
    from app.keys import jwk_set

    key = {**jwks(key_for("RS256"))["keys"][0], **member}
    entries, problems = jwk_set({"keys": [key]}, allow_oct=False)
    assert entries == [] and problem in problems[0][1]
    response = client.post(URL, json={"token": rs256_token(), "policy": rs256_policy(public_key=None,
                                                                                   jwks={"keys": [key]})})
    assert response.status_code == 422 and problem in response.text


def test_two_pem_blocks_as_the_public_key_are_refused():
    from app.keys import KeyError_, pem_key

    first, second = key_for("RS256").public_pem, key_for("RS256", "rs256-other").public_pem
    with pytest.raises(KeyError_, match="2 PEM blocks"):
        pem_key(first + second)
    assert pem_key(first).kty == "RSA"


def test_kids_are_shown_cut_to_128_characters_from_the_129th():
    base = jwks(key_for("RS256"))["keys"][0]
    keys = [{**base, "kid": "a" * 128}, {**base, "kid": "b" * 129}, {**base, "kid": "c" * 200}]
    from app.keys import KeySet, jwk_set

    keyset = KeySet(tuple(jwk_set({"keys": keys}, allow_oct=False)[0]), "v")
    assert keyset.shown_kids == ["a" * 128, "b" * 128 + "...", "c" * 128 + "..."]


def test_a_set_of_101_keys_uses_the_first_100_and_says_so():
    from app.keys import MAX_KEYS_PER_SET, jwk_set

    key = jwks(key_for("RS256"))["keys"][0]
    for count, problems in ((MAX_KEYS_PER_SET, []),
                            (MAX_KEYS_PER_SET + 1, [(100, "only the first 100 keys are used")])):
        entries, found = jwk_set({"keys": [{**key, "kid": str(number)} for number in range(count)]}, allow_oct=False)
        assert (len(entries), found) == (MAX_KEYS_PER_SET, problems)


def test_kids_no_key_carries_are_not_remembered_by_the_key_set():
    """The candidates memo keeps only answers with keys: an attacker's random kids add nothing to it."""
    from app.keys import ALGORITHMS, KeySet, jwk_set

    keyset = KeySet(tuple(jwk_set(jwks(key_for("RS256")), allow_oct=False)[0]), "v")
    for number in range(100):
        assert keyset.candidates(ALGORITHMS["RS256"], f"random-{number}") == []
    assert keyset.candidates(ALGORITHMS["RS256"], "rs256-1") != []
    assert list(keyset._candidates) == [("RS256", "rs256-1")]


def _embedded(parameter: str, attacker: SigningKey) -> dict[str, Any]:
    return {
        "jwk": {"jwk": attacker.jwk},
        "jku": {"jku": "https://attacker.example/jwks.json"},
        "x5u": {"x5u": "https://attacker.example/cert.pem"},
        "x5c": {"x5c": [_self_signed_certificate(attacker)]},
    }[parameter]


@pytest.mark.parametrize("parameter", ["jwk", "jku", "x5u", "x5c"])
@pytest.mark.parametrize("policy_kind, kid, expected", [
    ("public_key", "attacker", "SIGNATURE_INVALID"),
    ("jwks", "attacker", "KID_NOT_FOUND"),
    ("jwks", "rs256-1", "SIGNATURE_INVALID"),
], ids=["public-key", "jwks-attacker-kid", "jwks-legit-kid"])
def test_token_naming_its_own_key_is_never_valid(client, parameter, policy_kind, kid, expected):
    attacker = key_for("RS256", "attacker")
    token = mint(claims(), attacker, kid=kid, header=_embedded(parameter, attacker))
    policy = rs256_policy() if policy_kind == "public_key" else rs256_policy(public_key=None,
                                                                                jwks=jwks(key_for("RS256")))
    body = verdict(client, token, policy)
    assert expected in codes(body)
    ignored = only(body, "HEADER_KEY_IGNORED")
    assert ignored["severity"] == "warning"
    assert ignored["evidence"] == {"parameters": [parameter]}
    assert body["statuses"]["signature"] in ("fail", "skip")
    if expected == "SIGNATURE_INVALID":
        assert "never trusted" in only(body, "SIGNATURE_INVALID")["remediation"]


# --- ECDSA signature shapes -----------------------------------------------------------------------------------

def _es256_signing_input() -> str:
    return f"{segment({'alg': 'ES256', 'typ': 'JWT'})}.{segment(claims())}"


def _der_signature(signing_input: str) -> bytes:
    private = key_for("ES256").private
    return private.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))


@pytest.mark.parametrize("make_signature", [
    lambda _: b"\x00" * 64,
    lambda si: b"\x00" * 32 + key_for("ES256").sign(si.encode())[32:],
    lambda si: key_for("ES256").sign(si.encode())[:32] + b"\x00" * 32,
    lambda _: P256_ORDER.to_bytes(32, "big") * 2,
    _der_signature,
    lambda si: encode_dss_signature(0, 0),
    lambda si: key_for("ES256").sign(si.encode())[:63],
], ids=["r-and-s-zero", "r-zero", "s-zero", "r-and-s-equal-order", "der-encoded", "der-zero", "one-byte-short"])
def test_malformed_ecdsa_signature_is_invalid(client, make_signature):
    signing_input = _es256_signing_input()
    body = verdict(client, f"{signing_input}.{b64(make_signature(signing_input))}", es256_policy())
    assert codes(body) == ["SIGNATURE_INVALID"]
    assert body["statuses"]["signature"] == "fail"


def test_raw_r_s_ecdsa_signature_of_the_same_input_is_valid(client):
    # The control for the table above: the same input, signed properly, validates.
    signing_input = _es256_signing_input()
    token = f"{signing_input}.{b64(key_for('ES256').sign(signing_input.encode()))}"
    body = client.post(URL, json={"token": token, "policy": es256_policy()}).json()
    assert body["valid"] is True, body["findings"]


# --- signature and integrity ----------------------------------------------------------------------------------

def test_stripped_signature_is_invalid(client):
    token = rs256_token().rsplit(".", 1)[0] + "."
    body = verdict(client, token)
    finding = only(body, "SIGNATURE_INVALID")
    assert "stripped" in finding["message"] and "removed" in finding["remediation"]
    assert body["statuses"]["signature"] == "fail"


@pytest.mark.parametrize("alg", ["PS256", "RS256"])
def test_an_rsa_signature_with_its_leading_zero_byte_dropped_is_invalid(client, alg):
    """RFC 8017 8.1.2 step 1: a signature is exactly as long as the modulus. OpenSSL pads a short PSS signature, so
    a token whose signature starts with 0x00 (1 in 256) validated in a second spelling too, under another token_id
    (found by a review)."""
    key = key_for(alg)
    for attempt in range(4000):  # PSS signatures are randomised; PKCS#1 v1.5 ones vary with the claims
        token = mint(claims(jti=str(attempt)), key)
        signature = base64.urlsafe_b64decode(token.rsplit(".", 1)[1] + "==")
        if signature[0] == 0:
            break
    else:
        pytest.fail("no signature starting with a zero byte in 4,000 tries")
    policy = rs256_policy(allowed_algs=[alg], public_key=key.public_pem)
    assert client.post(URL, json={"token": token, "policy": policy}).json()["valid"] is True
    short = token.rsplit(".", 1)[0] + "." + b64(signature[1:])
    body = client.post(URL, json={"token": short, "policy": policy}).json()
    assert body["valid"] is False and "SIGNATURE_INVALID" in [item["code"] for item in body["findings"]]


def test_tampered_header_is_invalid(client):
    _, payload_b64, signature_b64 = rs256_token().split(".")
    header_b64 = segment({"alg": "RS256", "typ": "JWT", "kid": "rs256-1", "x": "tampered"})
    body = verdict(client, f"{header_b64}.{payload_b64}.{signature_b64}")
    assert codes(body) == ["SIGNATURE_INVALID"]


def test_tampered_payload_is_invalid_and_its_claims_are_still_reported(client):
    header_b64, _, signature_b64 = rs256_token().split(".")
    payload_b64 = segment(claims(sub="admin"))
    body = verdict(client, f"{header_b64}.{payload_b64}.{signature_b64}")
    assert codes(body) == ["SIGNATURE_INVALID"]
    assert body["claims"]["sub"] == "admin"
    assert body["statuses"]["issuer"] == "pass"  # claim checks still run; valid is false regardless


@pytest.mark.parametrize("crit, evidence, says", [
    (["exp"], ["exp"], "No JWS extension is implemented here"),
    (["b64"], ["b64"], "RFC 7797 unencoded payloads"),
    (["kid", "exp"], ["kid", "exp"], "kid is defined by RFC 7515 itself"),
    ("exp", '"exp"', "malformed"),
    ([], "[]", "malformed"),
    (None, "null", "malformed"),
    ({"a": 1}, '{"a":1}', "malformed"),
    (["exp", 1], '["exp",1]', "malformed"),
], ids=["unknown-name", "b64-not-implemented", "registered-name", "not-a-list", "empty", "null", "object",
        "not-all-strings"])
def test_any_crit_is_refused_and_the_finding_says_which_rule_it_breaks(client, crit, evidence, says):
    """Found by a review: an empty list was said to list extensions, and the evidence was Python's repr of the
    header (`['None']`, `["{'a': 1}"]`) with no hint."""
    token = mint(claims(), key_for("RS256"), header={"crit": crit, "exp": 1})
    body = verdict(client, token)
    (found,) = [item for item in body["findings"] if item["code"] == "CRIT_UNSUPPORTED"]
    assert body["statuses"]["key"] == "fail" and not body["valid"]
    assert found["evidence"] == {"crit": evidence}
    assert says in found["message"] + (found["remediation"] or "")


# --- format -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("header, payload", [
    (b'{"alg":"RS256","kid":"rs256-1","alg":"none"}', json.dumps(claims()).encode()),
    (b'{"alg":"RS256","kid":"rs256-1"}', json.dumps(claims()).encode()[:-1] + b',"sub":"admin"}'),
    (b'{"alg":"RS256","kid":"rs256-1"}', json.dumps(claims()).encode()[:-1] + b',"\\u0073ub":"admin"}'),
    (b'{"alg":"RS256","kid":"rs256-1"}', json.dumps(claims(ctx={"a": 1})).encode().replace(b'"a": 1', b'"a": 1, "a": 2')),
], ids=["header", "payload", "payload-escaped-name", "payload-nested"])
def test_duplicate_member_names_are_malformed(client, header, payload):
    finding = assert_malformed(verdict(client, signed_raw(header, payload)))
    assert "duplicate" in finding["message"]


@pytest.mark.parametrize("part", ["header", "payload"])
@pytest.mark.parametrize("json_text", [b"[1,2]", b'"text"', b"42", b"null", b"true"],
                         ids=["array", "string", "number", "null", "bool"])
def test_json_that_is_not_an_object_is_malformed(client, part, json_text):
    header = json_text if part == "header" else b'{"alg":"RS256","kid":"rs256-1"}'
    payload = json_text if part == "payload" else json.dumps(claims()).encode()
    finding = assert_malformed(verdict(client, signed_raw(header, payload)))
    assert finding["evidence"]["segment"] == part
    assert "not an object" in finding["message"]


@pytest.mark.parametrize("part", ["header", "payload"])
@pytest.mark.parametrize("bad", [b"\xff", b"\xc3\x28", b"\xed\xa0\x80"], ids=["ff", "bad-continuation", "surrogate"])
def test_non_utf8_bytes_are_malformed(client, part, bad):
    header = b'{"alg":"RS256","kid":"' + bad + b'"}' if part == "header" else b'{"alg":"RS256","kid":"rs256-1"}'
    payload = (json.dumps(claims()).encode()[:-1] + b',"x":"' + bad + b'"}') if part == "payload" \
        else json.dumps(claims()).encode()
    finding = assert_malformed(verdict(client, signed_raw(header, payload)))
    assert finding["evidence"]["segment"] == part


def _standard_b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def _payload_whose_standard_base64_has(char: str) -> bytes:
    for n in range(1000):
        payload = json.dumps(claims(n=f"{n}~~~???>>>")).encode()
        if char in _standard_b64(payload):
            return payload
    raise AssertionError(char)  # pragma: no cover


@pytest.mark.parametrize("char", ["+", "/"])
def test_standard_base64_alphabet_is_malformed(client, char):
    payload = _payload_whose_standard_base64_has(char)
    header_b64 = segment({"alg": "RS256", "kid": "rs256-1"})
    signing_input = f"{header_b64}.{_standard_b64(payload)}"
    token = f"{signing_input}.{b64(key_for('RS256').sign(signing_input.encode()))}"
    finding = assert_malformed(verdict(client, token))
    assert finding["evidence"]["segment"] == "payload"
    assert "base64url" in finding["message"]


@pytest.mark.parametrize("where", ["header", "payload", "signature"])
def test_base64_padding_is_malformed(client, where):
    parts = rs256_token().split(".")
    index = ["header", "payload", "signature"].index(where)
    parts[index] += "=" * (-len(parts[index]) % 4 or 2)
    finding = assert_malformed(verdict(client, ".".join(parts)))
    assert finding["evidence"]["segment"] == where


@pytest.mark.parametrize("bit", [0x01, 0x02, 0x04, 0x08])
@pytest.mark.parametrize("pad", range(4))
def test_non_canonical_trailing_bits_are_malformed(client, bit, pad):
    """Each of the four unused bits of a 256-byte signature's last character, whatever the payload's length (the
    fast path's own check reads segments whose lengths are whole groups of four; found by mutation testing: bits
    0x04 and 0x08 were untested, and a mutant returned valid:true for them)."""
    header_b64, payload_b64, signature_b64 = rs256_token(pad="x" * pad).split(".")
    assert len(signature_b64) % 4 == 2  # 256 bytes: the last character carries 4 unused bits
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet[alphabet.index(signature_b64[-1]) | bit]
    assert last != signature_b64[-1]  # canonical: the unused bits are zero
    finding = assert_malformed(verdict(client, f"{header_b64}.{payload_b64}.{signature_b64[:-1]}{last}"))
    assert finding["evidence"]["segment"] == "signature"


def test_the_header_memo_is_bounded_however_many_distinct_headers_are_sent():
    """Parsed headers are remembered for speed: a stream of distinct ones (a kid each) must not grow the memo."""
    from app import token as token_module

    for index in range(token_module._HEADERS_MAX + 50):
        header = b64(b'{"alg":"RS256","kid":"k%d"}' % index)
        token_module.parse(f"{header}.{b64(b'{}')}.AAAA", 16384)
        assert len(token_module._HEADERS) <= token_module._HEADERS_MAX


def test_a_jws_json_serialization_is_named_as_such():
    from app.token import MalformedToken, parse

    with pytest.raises(MalformedToken, match="JWS JSON serialization"):
        parse('{"payload":"e30","signatures":[{"protected":"e30","signature":"AAAA"}]}', 16384)


@pytest.mark.parametrize("count", [2, 4, 5])
def test_wrong_segment_count_is_malformed(client, count):
    parts = rs256_token().split(".")
    token = ".".join((parts + [parts[1], parts[2]])[:count])
    finding = assert_malformed(verdict(client, token))
    assert finding["evidence"]["segments"] == count
    if count == 5:
        assert "JWE" in finding["message"]


@pytest.mark.parametrize("settings", [Settings(max_body_bytes=4 << 20)], ids=["body-cap-4MiB"])
def test_one_mebibyte_token_is_malformed_with_its_size_and_not_decoded(client):
    token = mint(claims(blob="A" * (1 << 20)), key_for("RS256"))
    finding = assert_malformed(verdict(client, token))
    assert finding["evidence"] == {"size_bytes": len(token), "max_bytes": 16 * 1024}
    body = client.post(URL, json={"token": token, "policy": rs256_policy()}).json()
    assert "claims" not in body and "header" not in body


@pytest.mark.parametrize("settings", [Settings(max_token_bytes=1 << 20, max_body_bytes=4 << 20)], ids=["token-cap-1MiB"])
@pytest.mark.parametrize("part", ["header", "payload"])
@pytest.mark.parametrize("opening", [b"[", b'{"a":'], ids=["arrays", "objects"])
def test_ten_thousand_level_nesting_is_malformed_not_a_server_error(client, part, opening):
    closing = b"]" if opening == b"[" else b"}"
    nested = b'{"n":' + opening * 10_000 + b"1" + closing * 10_000 + b"}"
    header = nested if part == "header" else b'{"alg":"RS256","kid":"rs256-1"}'
    payload = nested if part == "payload" else json.dumps(claims()).encode()
    finding = assert_malformed(verdict(client, signed_raw(header, payload)))
    assert finding["evidence"]["segment"] == part
    assert "nested" in finding["message"]


@pytest.mark.parametrize("levels, malformed", [(63, False), (64, True)], ids=["64-deep", "65-deep"])
def test_nesting_limit_is_64_levels(client, levels, malformed):
    payload = json.dumps(claims()).encode()[:-1] + b',"n":' + b"[" * levels + b"]" * levels + b"}"
    response = client.post(URL, json={"token": signed_raw(b'{"alg":"RS256","kid":"rs256-1"}', payload),
                                      "policy": rs256_policy()})
    assert response.status_code == 200
    assert (codes(response.json()) == ["MALFORMED_TOKEN"]) is malformed
    assert response.json()["valid"] is not malformed


def test_brackets_inside_strings_are_neither_nesting_nor_containers(client):
    payload = json.dumps({**claims(), "note": "[{" * 2000, "deep": [[[["]]]]"]]]]}).encode()
    response = client.post(URL, json={"token": signed_raw(b'{"alg":"RS256","kid":"rs256-1"}', payload),
                                      "policy": rs256_policy()})
    assert response.json()["valid"] is True


def test_an_unclosed_string_is_read_to_its_end_once_not_rescanned_from_each_quote():
    """Found by a review: the shape check's string pattern required a closing quote, so each `"` of an unclosed
    run rescanned the rest of the text (quadratic: 1.4 s per forged 16 KB token). Now one match takes it all."""
    from app.token import _JSON_STRING

    text = b"[" * 65 + b'"' + b'\\"' * 4000
    assert [match.span() for match in _JSON_STRING.finditer(text)] == [(65, len(text))]
    assert [match.group() for match in _JSON_STRING.finditer(b'{"a\\"b":"c\\\\",  "d"}')] == [
        b'"a\\"b"', b'"c\\\\"', b'"d"']


@pytest.mark.parametrize("count, malformed", [(1024, False), (1025, True)])
def test_more_than_1024_objects_and_arrays_is_malformed(client, count, malformed):
    many = json.dumps({**claims(), "roles": [["r"]] * (count - 2)}).encode()  # the payload and its array: 2 more
    response = client.post(URL, json={"token": signed_raw(b'{"alg":"RS256","kid":"rs256-1"}', many),
                                      "policy": rs256_policy()})
    assert response.json()["valid"] is not malformed
    if malformed:
        finding = assert_malformed(response.json())
        assert finding["evidence"] == {"segment": "payload", "containers": count, "max_containers": 1024}


def test_a_payload_too_deep_or_too_full_is_refused_without_decoding_it(client, monkeypatch):
    """Decoding costs a Python object per container: a forged token of thousands of nested arrays cost 10-25x a
    valid one. Such a payload is refused from its bytes, and a clean one is decoded once."""
    import app.token

    decoded: list[bytes] = []
    real = app.token._DECODE
    monkeypatch.setattr(app.token, "_DECODE", lambda data: decoded.append(data) or real(data))
    header = b'{"alg":"RS256","kid":"rs256-1"}'
    for payload in (b'{"p":[' + b",".join([b"[" * 60 + b"]" * 60] * 90) + b"]}",
                    b'{"p":[' + b",".join([b"[[]]"] * 2000) + b"]}"):
        decoded.clear()
        assert_malformed(verdict(client, signed_raw(header, payload)))
        assert payload not in decoded
    decoded.clear()
    clean = json.dumps({**claims(), "groups": [[str(index)] for index in range(100)]}, separators=(",", ":")).encode()
    assert client.post(URL, json={"token": signed_raw(header, clean), "policy": rs256_policy()}).json()["valid"]
    assert decoded.count(clean) == 1


@pytest.mark.parametrize("prefix", ["Bearer ", "bearer ", "BEARER "])
def test_bearer_prefix_left_in_is_malformed_with_a_remediation(client, prefix):
    finding = assert_malformed(verdict(client, prefix + rs256_token()))
    assert "Bearer" in finding["remediation"] and "strip" in finding["remediation"]


def _cut_to_non_canonical(token: str) -> str:
    """The token cut short by 4, 8, ... characters until its last character has bits a canonical encoding leaves
    at zero (cutting 4 once left a canonical one in 1 run of 16: the test was flaky)."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    cut = token[:-4]
    while alphabet.index(cut[-1]) & (0x0F if len(cut.rpartition(".")[2]) % 4 == 2 else 0x03) == 0:
        cut = cut[:-4]
    return cut


@pytest.mark.parametrize("wrap, says, hint", [
    (lambda t: f'"{t}"', "wrapped in quotes", "without its quotes"),
    (lambda t: f'\\"{t}\\"', "wrapped in quotes", "without its quotes"),
    (lambda t: f'"Bearer {t}"', "wrapped in quotes", "without the 'Bearer ' scheme"),
    (lambda t: f"Bearer: {t}", "an Authorization header's text", "what follows 'Bearer '"),
    (lambda t: f"Authorization: Bearer {t}", "an Authorization header's text", "what follows 'Bearer '"),
    (lambda t: t.replace(".", "%2E"), "URL-encoded", "URL-decode it first"),
    (lambda t: t[:80] + "...", "cut short", "Send the whole token"),
    (lambda t: t[:80] + "\u2026", "cut short", "Send the whole token"),
    (lambda t: t[:-1], "a length no base64url encoding has", "cut short"),
    (lambda t: _cut_to_non_canonical(t), "non-canonical base64url trailing bits", "cut short"),
    (lambda t: json.dumps(dict(zip(("protected", "payload", "signature"), t.split(".")))),
     "JWS JSON serialization", "Send the compact serialization"),
    (lambda t: json.dumps({"sub": "1234", "exp": 1}), "a JSON object (claims, a key or a response?)",
     "Send the token itself"),
    (lambda t: json.dumps({"access_token": t, "token_type": "Bearer"}), "a JSON object", "Send the token itself"),
], ids=["quoted", "escaped-quotes", "quoted-bearer", "bearer-colon", "header-line", "url-encoded", "dots",
        "ellipsis", "signature-one-short", "signature-four-short", "json-serialization", "json-claims",
        "token-response"])
def test_a_token_wrapped_or_cut_short_is_told_what_happened(client, wrap, says, hint):
    """Found by a review: these got the base64url alphabet's hint ("strip '=' padding"), an opaque token's, or a
    JWE's ("it is an encrypted JWE": a log line's `...` makes five segments)."""
    finding = assert_malformed(verdict(client, wrap(rs256_token())))
    assert says in finding["message"] and hint in finding["remediation"], finding
    assert "eyJ" not in json.dumps(finding)


def test_a_signature_longer_than_the_key_makes_is_named_for_what_it_is(client):
    """Found by a review: these were called cut short. A larger RSA key (another tenant) and a DER-encoded ECDSA
    signature make longer signatures than the configured key."""
    larger = SigningKey("RS256", rsa.generate_private_key(public_exponent=65537, key_size=3072), None)
    finding = only(verdict(client, mint(claims(), larger, kid=None)), "SIGNATURE_INVALID")
    assert (finding["evidence"]["signature_bytes"], finding["evidence"]["expected_bytes"]) == (384, 256)
    assert "another, larger key" in finding["remediation"]
    signer = key_for("ES256")
    head = mint(claims(), signer).rpartition(".")[0]
    der = signer.private.sign(head.encode(), ec.ECDSA(hashes.SHA256()))
    finding = only(verdict(client, head + "." + b64(der), es256_policy()), "SIGNATURE_INVALID")
    assert "DER-encoded" in finding["remediation"] and finding["evidence"]["expected_bytes"] == 64


def test_a_der_signature_with_a_long_form_length_is_still_named_der_encoded(client):
    """Found by mutation testing: the bound (up to 9 bytes over the raw length) was untested. A P-256 signature's
    DER is at most 72 bytes; an encoder writing its SEQUENCE length in the long form (0x81 0x46) makes 73."""
    signer = key_for("ES256")
    head = mint(claims(), signer).rpartition(".")[0]
    signatures = (signer.private.sign(head.encode(), ec.ECDSA(hashes.SHA256())) for _ in range(400))
    der = next(der for der in signatures if len(der) == 72)  # r and s both with their high bit set: 1 in 4
    long_form = b"\x30\x81" + der[1:]
    finding = only(verdict(client, head + "." + b64(long_form), es256_policy()), "SIGNATURE_INVALID")
    assert finding["evidence"]["signature_bytes"] == 73 and "DER-encoded" in finding["remediation"]


def test_a_set_of_rsa_keys_of_two_sizes_names_no_expected_signature_length(client):
    """Found by mutation testing: with keys of two sizes no one length is the one the key makes, so a signature of a
    third length is said not to verify, without an expected length picked from either key."""
    larger = SigningKey("RS256", rsa.generate_private_key(public_exponent=65537, key_size=3072), "larger")
    policy = rs256_policy(public_key=None, jwks=jwks(key_for("RS256"), larger))
    token = mint(claims(), key_for("RS256"), kid=None).rpartition(".")[0] + "." + b64(b"\x01" * 300)
    finding = only(verdict(client, token, policy), "SIGNATURE_INVALID")
    assert finding["message"] == "the signature does not verify with the configured key"
    assert finding["evidence"] == {"alg": "RS256", "kid": "rs256-1", "keys_tried": 2, "signature_bytes": 300}


def test_a_signature_of_another_algorithms_length_names_that_algorithm(client):
    """Found by a review: an HS512 MAC under an HS256 header was blamed on "a larger key" (an HMAC's length depends
    on its hash alone), and a raw ES384 signature under ES256 on DER."""
    secret = b"a-shared-secret-of-at-least-64-bytes-so-that-HS512-is-not-weak!!"
    head = mint(claims(), SigningKey("HS256", secret, "k")).rpartition(".")[0]
    hs512 = head + "." + b64(SigningKey("HS512", secret, "k").sign(head.encode()))
    policy = rs256_policy(public_key=None, secret=secret.decode(), allowed_algs=["HS256"])
    finding = only(verdict(client, hs512, policy), "SIGNATURE_INVALID")
    assert (finding["evidence"]["signature_bytes"], finding["evidence"]["expected_bytes"]) == (64, 32)
    assert finding["remediation"].startswith("The signature has the length HS512 makes: the issuer signs with HS512")
    head = mint(claims(), key_for("ES256")).rpartition(".")[0]
    es384 = head + "." + b64(key_for("ES384").sign(head.encode()))
    finding = only(verdict(client, es384, es256_policy()), "SIGNATURE_INVALID")
    assert finding["remediation"].startswith("The signature has the length ES384 makes")


def test_a_short_inline_hmac_secret_is_weak_whether_or_not_the_mac_matches(client):
    """validation.md: "HMAC secrets under 32 bytes give a WEAK_KEY warning"; a MAC that did not match hid it."""
    policy = rs256_policy(public_key=None, secret="only-24-bytes-of-secret!", allowed_algs=["HS256"])
    for other in (b"another-24-bytes-secret!", b"x" * 40):
        body = verdict(client, mint(claims(), SigningKey("HS256", other, "k")), policy)
        assert codes(body) == ["SIGNATURE_INVALID", "WEAK_KEY"]
        assert only(body, "WEAK_KEY")["severity"] == "warning"


def test_a_profiles_secret_length_is_told_only_to_a_token_it_made(clock):
    """A forgery against a profile learnt the length of its secret from WEAK_KEY's evidence (found by a review):
    the caller did not send that secret. A token the secret made still gets the warning, and an inline policy
    with the same document keeps verdicts of its own."""
    import json as json_module

    from litestar.testing import TestClient

    from app.server import create_app

    secret = "only-24-bytes-of-secret!"
    policy = rs256_policy(public_key=None, secret=secret, allowed_algs=["HS256"])
    forged = mint(claims(), SigningKey("HS256", b"another-24-bytes-secret!", "k"))
    made = mint(claims(), SigningKey("HS256", secret.encode(), "k"))
    settings = Settings(issuer_profiles_json=json_module.dumps({"internal": policy}))
    with TestClient(create_app(settings, clock=clock)) as fresh:
        def profile_codes(token: str) -> list[str]:
            return codes(fresh.post("/v1/validate/jwt", json={"token": token, "issuer_profile_id": "internal"}).json())

        assert codes(fresh.post("/v1/validate/jwt", json={"token": forged, "policy": policy}).json()) == [
            "SIGNATURE_INVALID", "WEAK_KEY"]
        assert profile_codes(forged) == ["SIGNATURE_INVALID"]
        assert profile_codes(made) == ["WEAK_KEY"]


@pytest.mark.parametrize("signer, size", [("RS256", 256), ("RSA-2052", 257), ("ES256", 64), ("EdDSA", 64),
                                          ("Ed448", 114)])
def test_a_signature_of_the_wrong_length_is_named_as_cut_short(client, signer, size):
    """An EdDSA key's length is read from its curve, an RSA key's rounded up to whole bytes (found by mutation
    testing: nothing checked them)."""
    if signer == "RSA-2052":
        key = SigningKey("RS256", rsa.generate_private_key(public_exponent=65537, key_size=2052), "k")
    elif signer == "Ed448":
        key = SigningKey("EdDSA", ed448.Ed448PrivateKey.generate(), "k")
    else:
        key = key_for(signer)
    head, _, signature = mint(claims(), key).rpartition(".")
    cut = head + "." + b64(base64.urlsafe_b64decode(signature + "==")[:-2])  # two bytes short
    policy = rs256_policy(allowed_algs=[key.alg], public_key=key.public_pem)
    finding = only(verdict(client, cut, policy), "SIGNATURE_INVALID")
    assert finding["evidence"]["signature_bytes"] == size - 2 and finding["evidence"]["expected_bytes"] == size
    assert "cut short" in finding["remediation"]


@pytest.mark.parametrize("token, says", [("", "the token is empty"), ("  ", "the token is empty"),
                                          ("Bearer ", "'Bearer ' scheme"), ("bearer", "'Bearer ' scheme")],
                         ids=["empty", "blank", "scheme-alone", "scheme-word"])
def test_an_empty_token_or_the_scheme_alone_is_not_called_an_opaque_token(client, token, says):
    finding = assert_malformed(verdict(client, token))
    assert says in finding["message"] and "opaque" not in finding["message"] + (finding["remediation"] or "")


@pytest.mark.parametrize("part", ["header", "payload"])
@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999"])
def test_non_finite_numbers_are_malformed(client, part, number):
    header = b'{"alg":"RS256","kid":"rs256-1","x":' + number + b"}" if part == "header" \
        else b'{"alg":"RS256","kid":"rs256-1"}'
    payload = b'{"iss":"' + ISSUER.encode() + b'","aud":"' + AUDIENCE.encode() + b'","exp":' + number + b"}" \
        if part == "payload" else json.dumps(claims()).encode()
    finding = assert_malformed(verdict(client, signed_raw(header, payload)))
    assert finding["evidence"]["segment"] == part


# --- weak keys --------------------------------------------------------------------------------------------------

_WEAK: list[Any] = []


def _weak_rsa() -> Any:
    if not _WEAK:
        _WEAK.append(rsa.generate_private_key(public_exponent=65537, key_size=1024))
    return _WEAK[0]


@pytest.mark.filterwarnings("ignore:Key size should be:UserWarning")
def test_rsa_key_under_2048_bits_is_a_weak_key_error(client):
    weak = SigningKey("RS256", rsa.generate_private_key(public_exponent=65537, key_size=1024), "weak")
    body = verdict(client, mint(claims(), weak), rs256_policy(public_key=weak.public_pem))
    finding = only(body, "WEAK_KEY")
    assert finding["severity"] == "error"
    assert finding["evidence"]["bits"] == 1024 and finding["evidence"]["minimum_bits"] == 2048
    assert body["statuses"]["signature"] == "fail"
    assert "SIGNATURE_INVALID" not in codes(body)


@pytest.mark.filterwarnings("ignore:Key size should be:UserWarning")
@pytest.mark.parametrize("signer, expected", [("strong", []), ("weak", ["WEAK_KEY"]), ("other", ["SIGNATURE_INVALID"])])
def test_a_weak_key_beside_a_strong_one_is_reported_only_when_the_token_is_checked_against_it(client, signer,
                                                                                               expected):
    """A set with a legacy 1024-bit key and a 2048-bit one, tokens without a kid: the strong key's signatures
    verify, the weak key's are refused as WEAK_KEY, anybody else's are SIGNATURE_INVALID."""
    weak = SigningKey("RS256", _weak_rsa(), "legacy")
    strong = key_for("RS256")
    key = {"strong": strong, "weak": weak, "other": key_for("RS256", "elsewhere")}[signer]
    policy = rs256_policy(public_key=None, jwks=jwks(weak, strong))
    body = client.post(URL, json={"token": mint(claims(), key, kid=None), "policy": policy}).json()
    assert codes(body) == expected and body["valid"] is (signer == "strong")
    if signer == "strong":
        assert body["key"]["kid"] == strong.kid


@pytest.mark.filterwarnings("ignore:Key size should be:UserWarning")
@pytest.mark.parametrize("signer, verifies", [("strong-3", 3), ("weak", 4), ("other", 4)])
def test_a_forged_token_costs_each_key_one_verify_even_beside_a_weak_key(client, signer, verifies, monkeypatch):
    """Found by a review: with a weak key in the set, the straight line's failed verifies were not passed on, and
    the explaining pipeline verified every strong key again (7 verifies for a forgery, 3 for a valid token)."""
    from app import keys as keys_module

    strong = [key_for("RS256", f"strong-{index}") for index in (1, 2, 3)]
    weak = SigningKey("RS256", _weak_rsa(), "legacy")
    key = {"strong-3": strong[2], "weak": weak, "other": key_for("RS256", "elsewhere")}[signer]
    calls = []
    rs256 = keys_module.ALGORITHMS["RS256"]
    monkeypatch.setitem(keys_module.ALGORITHMS, "RS256", type(rs256)(**{
        **{name: getattr(rs256, name) for name in rs256.__dataclass_fields__},
        "verify": lambda *args: calls.append(1) or rs256.verify(*args)}))
    policy = rs256_policy(public_key=None, jwks=jwks(*strong, weak))
    body = client.post(URL, json={"token": mint(claims(jti=signer), key, kid=None), "policy": policy}).json()
    assert len(calls) == verifies
    assert codes(body) == {"strong-3": [], "weak": ["WEAK_KEY"], "other": ["SIGNATURE_INVALID"]}[signer]


@pytest.mark.parametrize("keys, expected", [(4, []), (5, ["KID_NOT_FOUND"])])
def test_a_token_without_kid_is_tried_against_at_most_4_keys(client, keys, expected):
    """A hostile token costs no more than a valid one: a kid-less forgery would otherwise cost a verify per key."""
    signer = key_for("RS256", "k-last")
    others = [key_for("RS256", f"k{index}") for index in range(keys - 1)]
    body = client.post(URL, json={"token": mint(claims(), signer, kid=None),
                                  "policy": rs256_policy(public_key=None, jwks=jwks(*others, signer))}).json()
    assert codes(body) == expected
    if expected:
        assert body["findings"][0]["evidence"]["fitting_keys"] == 5
        assert "no 'kid'" in body["findings"][0]["message"]


@pytest.mark.parametrize("keys, expected", [(4, []), (5, ["KID_NOT_FOUND"])])
def test_a_kid_shared_by_more_than_4_keys_is_not_tried_against_each(client, keys, expected, monkeypatch):
    """The cap is on the keys tried, kid or not: 84 keys sharing one kid cost a forged token 84 verifies."""
    from app import keys as keys_module

    pool = [SigningKey("RS256", key_for("RS256", f"pool-{index}").private, "shared") for index in range(keys + 1)]
    others, signer, forger = pool[:keys - 1], pool[keys - 1], pool[keys]
    calls = []
    rs256 = keys_module.ALGORITHMS["RS256"]
    monkeypatch.setitem(keys_module.ALGORITHMS, "RS256", type(rs256)(**{
        **{name: getattr(rs256, name) for name in rs256.__dataclass_fields__},
        "verify": lambda *args: calls.append(1) or rs256.verify(*args)}))
    body = client.post(URL, json={"token": mint(claims(), forger),  # signed by none of them
                                  "policy": rs256_policy(public_key=None, jwks=jwks(*others, signer))}).json()
    assert codes(body) == (["SIGNATURE_INVALID"] if not expected else expected)
    assert len(calls) <= 4
    if expected:
        evidence = body["findings"][0]["evidence"]
        assert evidence["fitting_keys"] == 5 and evidence["kid"] == "shared" and evidence["max_tried"] == 4
        assert "share kid 'shared'" in body["findings"][0]["message"]


def _integer(value: int) -> str:
    return b64(value.to_bytes((value.bit_length() + 7) // 8, "big"))


@pytest.mark.parametrize("form", ["jwk", "pem"])
@pytest.mark.parametrize("modulus_bits, exponent, says", [
    (3072, (1 << 3069) + 1, "exponent"), (8192, (1 << 32) - 1, "exponent"), (2048, 65539, "exponent"),
    (8200, 65537, "8200 bits"),
], ids=["3070-bit-exponent", "32-bit-exponent", "just-above-65537", "8200-bit-modulus"])
def test_an_rsa_key_that_makes_each_verification_slow_is_refused(client, form, modulus_bits, exponent, says):
    """Found by a review: with a 3,070-bit exponent each verify took ~7.5 ms (a 2048-bit key with e = 65537:
    ~0.02), so a caller's own key made every forged token cost 30x a valid one, blocking the event loop."""
    import secrets

    modulus = secrets.randbits(modulus_bits) | (1 << (modulus_bits - 1)) | 1  # a key's shape: never verified with
    public = rsa.RSAPublicNumbers(exponent, modulus).public_key()
    key_source = ({"jwks": {"keys": [{"kty": "RSA", "kid": "k", "n": _integer(modulus), "e": _integer(exponent)}]}}
                  if form == "jwk" else {"public_key": public.public_bytes(
                      serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()})
    response = client.post(URL, json={"token": rs256_token(), "policy": rs256_policy(**{"public_key": None,
                                                                                        **key_source})})
    assert response.status_code == 422
    assert says in response.json()["detail"], response.json()


def test_an_rsa_key_of_4096_bits_with_exponent_3_is_still_accepted(client):
    signer = SigningKey("RS256", rsa.generate_private_key(public_exponent=3, key_size=4096), "big")
    body = client.post(URL, json={"token": mint(claims(), signer),
                                  "policy": rs256_policy(public_key=signer.public_pem)})
    assert body.json()["valid"] is True


def test_hmac_secret_shorter_than_32_bytes_is_a_warning_and_still_valid(client):
    secret = "only-24-bytes-of-secret!"
    token = mint(claims(), SigningKey("HS256", secret.encode(), "k"))
    response = client.post(URL, json={"token": token, "policy": rs256_policy(public_key=None, secret=secret,
                                                                              allowed_algs=["HS256"])})
    assert response.status_code == 200
    body = response.json()
    assert body["valid"] is True
    finding = only(body, "WEAK_KEY")
    assert finding["severity"] == "warning"
    assert finding["evidence"] == {"bytes": 24, "minimum_bytes": 32}
    assert body["statuses"]["signature"] == "pass"
    assert secret not in response.text


# --- evidence hygiene -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("make_token", [
    lambda: rs256_token().rsplit(".", 1)[0] + ".AAAA",
    lambda: rs256_token() + "=",
    lambda: "Bearer " + rs256_token(),
    lambda: rs256_token(exp=1, aud="x", iss="y"),
    lambda: mint(claims(), key_for("RS256", "attacker"), header={"jwk": key_for("RS256", "attacker").jwk}),
], ids=["bad-signature", "padding", "bearer", "every-claim-wrong", "embedded-jwk"])
def test_findings_never_carry_the_token_its_signature_or_key_material(client, make_token):
    token = make_token()
    body = verdict(client, token)
    evidence = json.dumps([item["evidence"] for item in body["findings"]])
    signature = token.rsplit(".", 1)[1].rstrip("=")
    assert token not in evidence
    assert signature not in evidence
    assert key_for("RS256", "attacker").jwk["n"] not in evidence
    assert key_for("RS256").public_pem.splitlines()[1] not in json.dumps(body)


@pytest.mark.parametrize("kty, says", [
    (None, "'kty' is missing"), (5, "'kty' must be a string: RSA, EC, OKP or oct"),
    (["RSA"], "'kty' must be a string"), ("XYZ", "unsupported kty 'XYZ'"),
])
def test_a_jwk_without_a_usable_kty_says_which_way_it_is_wrong(kty, says):
    """Found by a review: a `kty` of another type was told as missing."""
    from app.keys import KeyError_, jwk_key

    jwk = {"n": "AQAB", "e": "AQAB", **({} if kty is None else {"kty": kty})}
    with pytest.raises(KeyError_, match=re.escape(says)):
        jwk_key(jwk, allow_oct=False)


# --- found by mutation testing: behaviour no test pinned ---------------------------------------------------------

def test_a_token_naming_one_kid_of_the_set_but_signed_by_another_key_is_invalid(client):
    """A kid chooses the key: a token signed by A that names B is checked against B only (the key lookup ignoring
    the kid survived every test)."""
    a, b = key_for("RS256", "kid-a"), key_for("RS256", "kid-b")
    policy = rs256_policy(public_key=None, jwks=jwks(a, b))
    for signer in (a, b):  # both orders, so a lookup remembered from the first cannot decide the second
        assert client.post(URL, json={"token": mint(claims(), signer), "policy": policy}).json()["valid"]
    body = verdict(client, mint(claims(), a, kid="kid-b"), policy)
    assert codes(body) == ["SIGNATURE_INVALID"]
    assert verdict(client, mint(claims(), b, kid="kid-a"), policy)["statuses"]["signature"] == "fail"


def test_an_ecdsa_signature_longer_than_the_curve_makes_is_invalid(client):
    """JWS ECDSA is raw r||s of exactly twice the curve's size: 65 bytes (a zero byte between r and s) is a second
    spelling of the same signature, which OpenSSL would read."""
    token = mint(claims(), key_for("ES256"))
    head, payload, signature = token.split(".")
    raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    longer = f"{head}.{payload}.{b64(raw[:32] + bytes(1) + raw[32:])}"
    body = verdict(client, longer, es256_policy())
    assert codes(body) == ["SIGNATURE_INVALID"] and "65 bytes" in body["findings"][0]["message"]
    padded = f"{head}.{payload}.{b64(bytes(1) + raw)}"  # as long, but no DER SEQUENCE (0x30): not called DER
    remediation = only(verdict(client, padded, es256_policy()), "SIGNATURE_INVALID")["remediation"]
    assert "DER" not in remediation and remediation.startswith("The signature was mangled")


def test_an_ec_key_is_bound_to_its_curve_not_only_to_its_type(client):
    """A P-256 key never verifies ES384 (SHA-384 over P-256 with 48-byte r and s), though both are `EC`."""
    p256 = key_for("ES256")
    forged = mint(claims(), SigningKey("ES384", p256.private, p256.kid))
    policy = rs256_policy(public_key=None, allowed_algs=["ES256", "ES384"], jwks=jwks(p256, key_for("ES384")))
    body = verdict(client, forged, policy)
    assert codes(body) == ["KID_NOT_FOUND"] and body["statuses"]["key"] == "fail"
    refused = client.post(URL, json={"token": forged, "policy": rs256_policy(allowed_algs=["ES384"],
                                                                               public_key=p256.public_pem)})
    assert refused.status_code == 422 and "ES384 fits none" in refused.text


def test_a_private_jwk_is_refused_even_when_it_is_a_valid_key():
    """The test of private members used `"d": "private-part"`, unreadable anyway: a real private JWK (which also
    verifies) must be refused for what it is."""
    from joserfc.jwk import RSAKey

    from app.keys import KeyError_, jwk_key

    signer = key_for("RS256")
    private = RSAKey.import_key(signer.private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())).as_dict(
        private=True)
    assert {"d", "p", "q"} <= set(private)
    with pytest.raises(KeyError_, match="private key parameters"):
        jwk_key(private, allow_oct=False)
    for member in ("d", "p", "q", "dp", "dq", "qi"):  # any one of them
        with pytest.raises(KeyError_, match="private key parameters"):
            jwk_key({**signer.jwk, member: private[member]}, allow_oct=False)


@pytest.mark.filterwarnings("ignore:Key size should be:UserWarning")
def test_a_token_another_key_signed_against_a_weak_key_alone_is_weak_key_not_a_server_error(client):
    weak = SigningKey("RS256", _weak_rsa(), "legacy")
    response = client.post(URL, json={"token": mint(claims(), key_for("RS256")),
                                      "policy": rs256_policy(public_key=weak.public_pem)})
    assert response.status_code == 200 and codes(response.json()) == ["WEAK_KEY"]


@pytest.mark.filterwarnings("ignore:Key size should be:UserWarning")
def test_a_stripped_signature_against_a_weak_key_alone_is_never_valid(client):
    """Found by mutation testing: with no strong key, an empty signature was judged by the weak key alone, and
    nothing checked that it still fails (an 'alg: none'-style forgery)."""
    weak = SigningKey("RS256", _weak_rsa(), "legacy")
    body = verdict(client, mint(claims(), weak).rsplit(".", 1)[0] + ".", rs256_policy(public_key=weak.public_pem))
    assert codes(body) == ["WEAK_KEY"] and body["statuses"]["signature"] == "fail"


@pytest.mark.parametrize("settings", [Settings(max_token_bytes=2048)], ids=["cap-2048"])
@pytest.mark.parametrize("extra, refused", [(0, False), (1, True)], ids=["exactly-the-cap", "one-byte-over"])
def test_the_token_size_cap_is_exact(client, extra, refused):
    token = next(candidate for pad in range(1200) if len(candidate := mint(claims(pad="x" * pad),
                                                                          key_for("RS256"))) == 2048 + extra)
    body = client.post(URL, json={"token": token, "policy": rs256_policy()}).json()
    if refused:
        assert assert_malformed(body)["evidence"] == {"size_bytes": 2049, "max_bytes": 2048}
    else:
        assert body["valid"], codes(body)


def test_the_size_cap_counts_utf8_bytes_not_characters(client):
    finding = assert_malformed(verdict(client, "\u00e9" * 9000))  # 9,000 characters, 18,000 bytes
    assert finding["evidence"] == {"size_bytes": 18000, "max_bytes": 16 * 1024}
    assert "MAX_TOKEN_BYTES" in finding["message"]


@pytest.mark.parametrize("parameter, value", [("jwk", None), ("jku", "https://evil.example/jwks.json"),
                                              ("x5u", "https://evil.example/c.pem"), ("x5c", ["MIIB"])])
def test_a_valid_token_carrying_a_key_in_its_header_is_valid_with_the_warning(client, parameter, value):
    """The header's key is ignored, and said to be: on a token the policy's key signed too (the tests had only
    forged ones, which leave the fast path for clean tokens anyway)."""
    signer = key_for("RS256")
    token = mint(claims(), signer, header={parameter: signer.jwk if value is None else value})
    body = client.post(URL, json={"token": token, "policy": rs256_policy()}).json()
    assert body["valid"] and codes(body) == ["HEADER_KEY_IGNORED"]
    assert body["findings"][0]["evidence"] == {"parameters": [parameter]}


@pytest.mark.parametrize("part", [0, 1], ids=["header", "payload"])
def test_an_empty_segment_is_named(client, part):
    segments = rs256_token().split(".")
    segments[part] = ""
    finding = assert_malformed(verdict(client, ".".join(segments)))
    assert finding["message"] == f"the {('header', 'payload')[part]} segment is empty"


def test_kid_not_found_is_reported_by_the_key_check(client):
    body = verdict(client, mint(claims(), key_for("RS256"), kid="other"),
                   rs256_policy(public_key=None, jwks=jwks(key_for("RS256"))))
    assert only(body, "KID_NOT_FOUND")["check"] == "key" and body["statuses"]["key"] == "fail"
