"""Bearer tokens: stored hashed, checked in constant time against every stored digest, scoped to specs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from feature_pipelines.errors import ServeConfigError
from feature_pipelines.serving import tokens as tokens_module
from feature_pipelines.serving.tokens import TokenTable, hash_token, load_tokens, parse_tokens

ALICE, BOB, CAROL = "alice-secret", "bob-secret", "carol-secret"
TEXT = f"""
# name   sha256                        specs
alice    {hash_token(ALICE)}
bob      sha256:{hash_token(BOB).upper()}   fraud_model,churn   # scoped
carol    {hash_token(CAROL)}   *
"""


def test_hash_is_the_sha256_of_the_token() -> None:
    assert hash_token("test") == hashlib.sha256(b"test").hexdigest() == \
        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


def test_tokens_authenticate_by_their_hash_and_are_scoped() -> None:
    table = TokenTable(parse_tokens(TEXT, "test"))
    assert len(table) == 3
    alice, bob, carol = (table.authenticate(f"Bearer {t}") for t in (ALICE, BOB, CAROL))
    assert (alice.name, bob.name, carol.name) == ("alice", "bob", "carol")
    assert table.authenticate(f"bearer   {ALICE} ").name == "alice"  # the scheme is case-insensitive
    assert alice.allows("fraud_model") and alice.allows(None) and carol.allows("anything")
    assert bob.allows("fraud_model") and bob.allows("churn")
    assert not bob.allows("other") and not bob.allows(None)  # scoped tokens cannot send ad-hoc feature lists


@pytest.mark.parametrize(("limits", "specs", "pushes"), [
    ("", {"fraud_model": True, None: True}, {"transactions": True, "clicks": True}),  # no limits: everything
    ("*", {"fraud_model": True, None: True}, {"transactions": True, "clicks": True}),
    ("fraud_model", {"fraud_model": True, "churn": False, None: False}, {"transactions": False}),
    ("push:transactions", {"fraud_model": False, None: False}, {"transactions": True, "clicks": False}),
    ("fraud_model,push:transactions", {"fraud_model": True, "churn": False}, {"transactions": True, "clicks": False}),
    ("*,push:clicks", {"fraud_model": True, None: True}, {"transactions": False, "clicks": True}),
    ("push:*", {"fraud_model": False, None: False}, {"transactions": True, "clicks": True}),
])
def test_tokens_may_be_limited_to_push_sources(limits: str, specs: dict, pushes: dict) -> None:
    token = parse_tokens(f"feed {hash_token(ALICE)} {limits}", "test")[0]
    assert {spec: token.allows(spec) for spec in specs} == specs
    assert {source: token.may_push(source) for source in pushes} == pushes


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer ", f"Basic {ALICE}", ALICE, "Bearer nope",
                                    f"Bearer {hash_token(ALICE)}"])  # the stored hash is not the token
def test_anything_but_a_configured_bearer_token_is_refused(header: str | None) -> None:
    assert TokenTable(parse_tokens(TEXT, "test")).authenticate(header) is None


def test_every_stored_digest_is_compared_whichever_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    """No early exit: a check costs the same whether the token is the first, the last or none."""
    table = TokenTable(parse_tokens(TEXT, "test"))
    calls = []
    real = tokens_module.hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append(1)
        return real(a, b)

    monkeypatch.setattr(tokens_module.hmac, "compare_digest", counting)
    for header in (f"Bearer {ALICE}", f"Bearer {CAROL}", "Bearer wrong"):
        calls.clear()
        table.authenticate(header)
        assert len(calls) == 3, header


@pytest.mark.parametrize("text, message", [
    (f"alice {ALICE}", r"line 1: token 'alice' has no SHA-256 .*never the token itself"),
    ("alice", r"line 1: expected `NAME SHA256 \[SPEC,push:SOURCE,...\]`, got 1 field"),
    (f"a {hash_token(ALICE)} x y", r"got 4 field"),
    (f"a {hash_token(ALICE)}\n\na {hash_token(BOB)}", r"line 3: token name 'a' is used twice"),
])
def test_bad_token_lists_name_the_line(text: str, message: str) -> None:
    with pytest.raises(ServeConfigError, match=message):
        parse_tokens(text, "tokens file t")


def test_file_and_variable_together(tmp_path: Path) -> None:
    file = tmp_path / "tokens"
    file.write_text(f"alice {hash_token(ALICE)}\n")
    table = load_tokens(file, f"bob {hash_token(BOB)} fraud_model; carol {hash_token(CAROL)}")
    assert [table.authenticate(f"Bearer {t}").name for t in (ALICE, BOB, CAROL)] == ["alice", "bob", "carol"]
    assert len(load_tokens(None, None)) == 0
    with pytest.raises(ServeConfigError, match=r"in both the tokens file and FEATURESTORE_SERVE_TOKENS"):
        load_tokens(file, f"alice {hash_token(BOB)}")
    with pytest.raises(ServeConfigError, match=r"tokens file .*missing cannot be read"):
        load_tokens(tmp_path / "missing", None)
    (tmp_path / "empty").write_text("# nothing yet\n")
    with pytest.raises(ServeConfigError, match=r"lists no token"):
        load_tokens(tmp_path / "empty", None)
