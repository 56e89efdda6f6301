"""Bearer tokens of the feature server, stored hashed.

A tokens file (or `FEATURESTORE_SERVE_TOKENS`) lists one token per line (in the variable, lines
may also be separated by `;`):

    # name          sha256 of the token                                                limits (optional)
    fraud-service   9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08   fraud_model
    payments-feed   sha256:60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752   push:transactions
    ops             sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae

The name shows in access logs; the token itself is never stored, only its SHA-256 (`printf %s
"$TOKEN" | sha256sum`). Without limits (or `*` alone) a token may do everything: read every
retrieval spec and ad-hoc feature lists (`POST /features`), and push to every source (`POST
/push/{source}`). With a comma-separated list, only what it names: retrieval specs by name (`*`:
every spec and ad-hoc lists), push sources as `push:<source>` (`push:*`: every source). A token
that lists no `push:` entry pushes nothing; one that lists only `push:` entries reads nothing.

Checking a token hashes it and compares the digest with every stored one in constant time,
without stopping at a match: how long a check takes says nothing about which tokens exist.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from feature_pipelines.errors import ServeConfigError

_HEX = re.compile(r"^[0-9a-f]{64}$")


def hash_token(token: str) -> str:
    """The hex SHA-256 of a token, as the tokens file stores it."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Token:
    name: str
    digest: bytes
    specs: frozenset[str] | None = None  # None: every retrieval spec, and ad-hoc feature lists
    sources: frozenset[str] | None = None  # None: every push source

    def allows(self, spec: str | None) -> bool:
        """Whether this token may read retrieval spec `spec` (None: an ad-hoc feature list)."""
        return self.specs is None or (spec is not None and spec in self.specs)

    def may_push(self, source: str) -> bool:
        """Whether this token may push events to `source`."""
        return self.sources is None or source in self.sources


class TokenTable:
    """The configured tokens; empty when the server runs without authentication."""

    def __init__(self, tokens: Sequence[Token] = ()):
        self._tokens = tuple(tokens)

    def __len__(self) -> int:
        return len(self._tokens)

    def authenticate(self, authorization: str | None) -> Token | None:
        """The token an `Authorization: Bearer ...` header carries, or None when it carries none
        of the configured ones."""
        if not authorization:
            return None
        scheme, _, presented = authorization.partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            return None
        digest = hashlib.sha256(presented.strip().encode()).digest()
        found = None
        for token in self._tokens:  # every comparison runs, whichever matches
            if hmac.compare_digest(token.digest, digest):
                found = token
        return found


def parse_tokens(text: str, where: str) -> list[Token]:
    """The tokens listed in `text` (format: the module docstring); `where` names it in errors."""
    tokens: list[Token] = []
    for number, line in enumerate(text.replace(";", "\n").splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        if len(fields) not in (2, 3):
            raise ServeConfigError(f"{where}, line {number}: expected `NAME SHA256 [SPEC,push:SOURCE,...]`, got {len(fields)} "
                                   "field(s); store the token's SHA-256 (`printf %s \"$TOKEN\" | sha256sum`), never the token.")
        name, hashed = fields[0], fields[1].lower().removeprefix("sha256:")
        if not _HEX.match(hashed):
            raise ServeConfigError(f"{where}, line {number}: token {name!r} has no SHA-256 (64 hex digits); store "
                                   "`printf %s \"$TOKEN\" | sha256sum`, never the token itself.")
        if any(t.name == name for t in tokens):
            raise ServeConfigError(f"{where}, line {number}: token name {name!r} is used twice; give each token its own name.")
        if len(fields) == 2 or fields[2] == "*":
            tokens.append(Token(name, bytes.fromhex(hashed)))
            continue
        entries = [entry for entry in fields[2].split(",") if entry]
        pushes = [entry.removeprefix("push:") for entry in entries if entry.startswith("push:")]
        specs = [entry for entry in entries if not entry.startswith("push:")]
        tokens.append(Token(name, bytes.fromhex(hashed), None if "*" in specs else frozenset(specs),
                            None if "*" in pushes else frozenset(pushes)))
    return tokens


def load_tokens(file: Path | None, entries: str | None) -> TokenTable:
    """The tokens of a tokens file and of `FEATURESTORE_SERVE_TOKENS` together."""
    tokens: list[Token] = []
    if file is not None:
        try:
            text = Path(file).read_text()
        except OSError as exc:
            raise ServeConfigError(f"tokens file {file} cannot be read ({exc.strerror}); check --tokens-file.") from exc
        tokens += parse_tokens(text, f"tokens file {file}")
        if not tokens:
            raise ServeConfigError(f"tokens file {file} lists no token; add lines `NAME SHA256 [SPEC,push:SOURCE,...]`.")
    if entries:
        more = parse_tokens(entries, "FEATURESTORE_SERVE_TOKENS")
        clash = sorted({t.name for t in more} & {t.name for t in tokens})
        if clash:
            raise ServeConfigError(f"token name(s) {clash} are in both the tokens file and FEATURESTORE_SERVE_TOKENS; "
                                   "rename one.")
        tokens += more
    return TokenTable(tokens)
