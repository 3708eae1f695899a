"""What lets a CI trust a bundle: its digest, and an optional ed25519 signature.

A bundle's manifest lists the checksums of the other files, but nothing inside a bundle can vouch for the
bundle: whoever rewrites the manifest can rewrite its checksums too. Trust comes from outside: the sha256 of the
whole .tar.gz, printed when it is packaged and given to ``edgekd verify --sha256``, or a signature made with the
publisher's private key (``edgekd export --sign-key``) and checked with the public key (``verify --public-key``).
Keys are ed25519 in PEM (``edgekd keygen``, or ``openssl genpkey -algorithm ed25519``), through ``cryptography``.
"""

from __future__ import annotations

import base64
import hmac
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edgekd.core.errors import BundleError, ConfigError
from edgekd.pipeline.package import sha256

SIGNATURE_SUFFIX = ".sig"


def check_digest(bundle: Path, expected: str) -> None:
    """BundleError unless ``bundle``'s sha256 is ``expected`` (hex, any case)."""
    expected = expected.strip().lower()
    if len(expected) != 64 or any(c not in "0123456789abcdef" for c in expected):
        raise ConfigError(f"--sha256 takes the 64 hex digits of a sha256, got {expected!r}")
    actual = sha256(bundle)
    if not hmac.compare_digest(actual, expected):
        raise BundleError(f"{bundle.name} has sha256 {actual}, not the expected {expected}: it is not the bundle "
                          "that was packaged")


def _read_key(path: Path, private: bool) -> Ed25519PrivateKey | Ed25519PublicKey:
    kind = "private" if private else "public"
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the {kind} key {path}: {exc.strerror}") from None
    try:
        key = (serialization.load_pem_private_key(data, password=None) if private
               else serialization.load_pem_public_key(data))
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ConfigError(f"{path} is not an unencrypted PEM {kind} key: {exc}") from None
    wanted = Ed25519PrivateKey if private else Ed25519PublicKey
    if not isinstance(key, wanted):
        raise ConfigError(f"{path} is a {type(key).__name__.removesuffix('Key').removeprefix('_')} key; bundles are "
                          "signed with ed25519 (edgekd keygen, or openssl genpkey -algorithm ed25519)")
    return key


def private_key(path: Path) -> Ed25519PrivateKey:
    """The ed25519 private key at ``path`` (a clear ConfigError for anything else)."""
    return _read_key(path, private=True)  # type: ignore[return-value]


def sign(bundle: Path, key: Ed25519PrivateKey) -> Path:
    """Sign the bytes of ``bundle`` with ``key``; writes BUNDLE.sig (base64, one line) and returns it."""
    signature = bundle.with_name(bundle.name + SIGNATURE_SUFFIX)
    signature.write_text(base64.b64encode(key.sign(bundle.read_bytes())).decode() + "\n")
    return signature


def check_signature(bundle: Path, public_key: Path, signature: Path | None = None) -> None:
    """BundleError unless ``signature`` (default BUNDLE.sig) is ``public_key``'s signature of ``bundle``."""
    key = _read_key(public_key, private=False)
    signature = signature or bundle.with_name(bundle.name + SIGNATURE_SUFFIX)
    if not signature.is_file():
        raise BundleError(f"no signature at {signature}: the bundle is not signed (edgekd export --sign-key), or "
                          "give --signature PATH")
    try:
        raw = base64.b64decode(signature.read_text().strip(), validate=True)
        key.verify(raw, bundle.read_bytes())  # type: ignore[union-attr]
    except (InvalidSignature, ValueError) as exc:
        raise BundleError(f"{signature.name} is not a valid signature of {bundle.name} by the key {public_key}: "
                          "the bundle was altered or signed by another key") from exc


def generate_keypair(stem: Path) -> tuple[Path, Path]:
    """A new ed25519 key pair: STEM.pem (private, readable by its owner only) and STEM.pub.pem."""
    if stem.is_dir() or not stem.name or stem.name == "..":
        raise ConfigError(f"{str(stem)!r} is a folder: a key pair needs a file name, such as release-key or "
                          "keys/release-key")
    if not stem.parent.is_dir():
        raise ConfigError(f"no folder {stem.parent} to write the key pair {stem.name}.pem / {stem.name}.pub.pem into")
    private, public = stem.with_name(stem.name + ".pem"), stem.with_name(stem.name + ".pub.pem")
    existing = [str(p) for p in (private, public) if p.exists()]
    if existing:
        raise ConfigError(f"{', '.join(existing)} exist already; choose another name (keys are never overwritten)")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public
