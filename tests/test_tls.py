"""TLS to a server with a private CA: refused by default, trusted through
`verify = "CA bundle"`, or unchecked with `verify = false`."""

from __future__ import annotations

import datetime
import ipaddress
import json
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from harness import server_config, wait_state
from real_peers import python_server


def _certificate(subject: str, key, issuer_name, issuer_key, *, ca: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def make_pki(directory: Path) -> tuple[Path, Path, Path]:
    """A private CA and a server certificate for 127.0.0.1: (ca, cert, key) PEM files."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mcpd test CA")])
    ca = _certificate("mcpd test CA", ca_key, ca_name, ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _certificate("127.0.0.1", server_key, ca_name, ca_key, ca=False)
    paths = directory / "ca.pem", directory / "server.pem", directory / "server-key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


def test_verify_setting(mcpd_env, run_daemon, tmp_path):
    ca, cert, key = make_pki(tmp_path)
    with python_server(tmp_path, tls=(cert, key)) as peer:
        assert peer.url.startswith("https://")
        mcpd_env.write_config(
            server_config("strict", peer.url)
            + server_config("bundle", peer.url, f'verify = "{ca}"\n')
            + server_config("unchecked", peer.url, "verify = false\n")
        )
        daemon = run_daemon()
        refused = wait_state(daemon, "strict", "failed")
        assert "CERTIFICATE_VERIFY_FAILED" in refused["error"] or "certificate" in refused["error"]
        for name in ("bundle", "unchecked"):
            wait_state(daemon, name, "connected")
            result = daemon.mcpctl("call", name, "echo", json.dumps({"text": "over TLS"}))
            assert result.stdout == "over TLS\n"
