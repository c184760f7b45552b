"""What OAuth leaves the daemon holding for a server: tokens, the client it
registered (or was given), and where its authorization server is.

A `CredentialRecord` is what the store keeps, encrypted, one per server. It
names the server and the URL it was issued for, so that it is never used for
another server or a changed URL. Every secret field is left out of `repr`.
"""

from __future__ import annotations

import msgspec

_MASK = "<redacted>"


class TokenSet(msgspec.Struct, kw_only=True):
    access_token: str
    token_type: str = "Bearer"  # noqa: S105 - the scheme's name, not a secret
    refresh_token: str | None = None
    # Absolute Unix times, so a restart knows whether the token is still good.
    expires_at: float | None = None
    obtained_at: float
    scope: str | None = None

    def __repr__(self) -> str:
        return f"TokenSet(token_type={self.token_type!r}, expires_at={self.expires_at!r}, {_MASK})"

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and self.expires_at <= now


class ClientRegistration(msgspec.Struct, kw_only=True):
    client_id: str
    client_secret: str | None = None
    client_secret_expires_at: float | None = None
    redirect_uri: str | None = None
    token_endpoint_auth_method: str | None = None
    issuer: str | None = None
    # private_key_jwt: the JWS algorithm of its client assertions (oauth/machine.py).
    assertion_algorithm: str | None = None

    def __repr__(self) -> str:
        return f"ClientRegistration(client_id={self.client_id!r}, issuer={self.issuer!r}, {_MASK})"


class AuthorizationServer(msgspec.Struct, kw_only=True):
    """What a refresh or a revocation needs, so that neither rediscovers."""

    issuer: str
    token_endpoint: str
    revocation_endpoint: str | None = None
    resource: str
    # Kept so that status can say, after a restart, that a device sign-in is offered.
    device_authorization_endpoint: str | None = None


class CredentialRecord(msgspec.Struct, kw_only=True):
    server: str
    url: str
    tokens: TokenSet | None = None
    client: ClientRegistration | None = None
    authorization: AuthorizationServer | None = None
    last_refresh_at: float | None = None

    @property
    def empty(self) -> bool:
        """Holding nothing worth keeping (after `logout --forget-client`)."""
        return self.tokens is None and self.client is None and self.authorization is None

    def bound_client(self) -> ClientRegistration | None:
        """The client registration, if it belongs to the authorization server the
        tokens came from; None if there is none, or it was registered at (or
        configured for) another issuer. Client credentials are never used at
        another authorization server than their own (MCP 2026-07-28): a client
        registered anew after a migration, while the old server's tokens are
        still held, is not sent to the old server's token or revocation endpoint."""
        client, authorization = self.client, self.authorization
        if client is None or authorization is None or client.issuer != authorization.issuer:
            return None
        return client

    def secrets(self) -> list[str]:
        """Every secret the record holds, for redaction."""
        values = [self.client.client_secret if self.client else None]
        if self.tokens is not None:
            values += [self.tokens.access_token, self.tokens.refresh_token]
        return [value for value in values if value]
