"""Client assertions (RFC 7523, `private_key_jwt`): the private key and the
signed JWT, for mcpd/oauth/machine.py.

A module of its own so that the daemon loads PyJWT and cryptography's key
types only when a server is configured with a key.
"""

from __future__ import annotations

import os
import secrets
import stat
from typing import Final

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from .machine import KeyFileError, Unacceptable

# A client assertion is good for one token request: a minute covers a slow
# network and a little clock skew.
ASSERTION_LIFETIME_SECONDS: Final = 60
MIN_RSA_BITS: Final = 2048
MAX_KEY_FILE_BYTES: Final = 64 * 1024
_CURVES: Final = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
_RSA_ALGORITHMS: Final = ("RS256", "PS256", "RS384", "PS384", "RS512", "PS512")

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def load_private_key(path: str) -> PrivateKey:
    """The PEM private key at `path`, if it is this user's alone (KeyFileError if not)."""
    try:
        with open(path, "rb") as file:
            info = os.fstat(file.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise KeyFileError(f"{path} is not a regular file")
            if info.st_uid != os.getuid():
                raise KeyFileError(
                    f"{path} belongs to another user; a private key must be yours alone "
                    f"(chown it, then chmod 600 {path})"
                )
            if info.st_mode & 0o077:
                raise KeyFileError(
                    f"{path} can be read or written by group or others (mode "
                    f"{stat.S_IMODE(info.st_mode):04o}); a private key must be yours "
                    f"alone: chmod 600 {path}"
                )
            data = file.read(MAX_KEY_FILE_BYTES + 1)
    except FileNotFoundError:
        raise KeyFileError(f"there is no file at {path}") from None
    except OSError as exc:
        raise KeyFileError(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise KeyFileError(f"{path} is larger than any private key ({MAX_KEY_FILE_BYTES} bytes)")
    # cryptography's messages are not repeated: they could quote the file.
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise KeyFileError(
            f"{path} is encrypted with a passphrase, which mcpd cannot ask for; store it "
            "unencrypted (`openssl pkey -in OLD -out NEW`), protected by its mode 0600"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise KeyFileError(
            f"{path} is not a PEM private key (-----BEGIN PRIVATE KEY-----, or the RSA or EC forms)"
        ) from None
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise KeyFileError(
                f"{path} is a {key.key_size}-bit RSA key; use one of at least "
                f"{MIN_RSA_BITS} bits (or an EC P-256 key)"
            )
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if key.curve.name not in _CURVES:
            raise KeyFileError(
                f"{path} is an EC key on the {key.curve.name} curve; use P-256, P-384 or P-521"
            )
        return key
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    raise KeyFileError(
        f"{path} holds a {type(key).__name__.removeprefix('_')} key; use an RSA, EC "
        "(P-256, P-384, P-521) or Ed25519 key"
    )


def key_algorithms(key: PrivateKey) -> tuple[str, ...]:
    """The JWS algorithms this key can sign with, the preferred first."""
    if isinstance(key, rsa.RSAPrivateKey):
        return _RSA_ALGORITHMS
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return (_CURVES[key.curve.name],)
    return ("EdDSA",)


def signing_algorithm(key: PrivateKey, supported: list[str] | None) -> str:
    """The algorithm to sign assertions with: the key's preferred one, or the first
    of its that the server lists (`token_endpoint_auth_signing_alg_values_supported`)."""
    possible = key_algorithms(key)
    if not supported:
        return possible[0]
    usable = [algorithm for algorithm in possible if algorithm in supported]
    if not usable:
        raise Unacceptable(
            "the authorization server accepts client assertions signed with "
            + ", ".join(supported)
            + " (token_endpoint_auth_signing_alg_values_supported), and the key in "
            "oauth.private_key_file signs with "
            + " or ".join(possible[:2])
            + "; use a key of a type it accepts"
        )
    return usable[0]


def client_assertion(
    client_id: str, audience: str, key: PrivateKey, algorithm: str, now: float
) -> str:
    """An RFC 7523 client assertion, good for ASSERTION_LIFETIME_SECONDS."""
    issued = int(now)
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "iat": issued,
        "exp": issued + ASSERTION_LIFETIME_SECONDS,
        "jti": secrets.token_urlsafe(32),
    }
    return jwt.encode(claims, key, algorithm=algorithm)
