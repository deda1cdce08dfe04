"""A key-encryption key held by a PKCS#11 token: SoftHSM2 for development, a hardware HSM in use.

The KEK is an AES-256 secret key object on the token, found by its label. It is created on the
token (``create_key``) as sensitive and non-extractable, usable for encryption and decryption
only, so its value never leaves the token. Wrapping a data key is AES-256-GCM done by the token
(``CKM_AES_GCM``) with a 96-bit nonce drawn from the token's generator; the wrapped blob's header
and the caller's context are the GCM additional data, so a blob unwraps only under the same key
and the same context. SoftHSM2 2.6 supports ``CKM_AES_GCM`` with caller-supplied additional data;
a token without it is refused at start-up rather than served by a weaker fallback.

A wrapped blob (version 1)::

    b"clk11"  version (1 byte, 1)  id length (1 byte)  CKA_ID of the KEK  nonce (12)  ciphertext+tag

The blob names the KEK that wrapped it by its ``CKA_ID``, so after a rotation (a new key under a
new label) old blobs still unwrap while the old key stays on the token, and a blob from another
token's key is refused with a message that says so.

The token PIN comes from the environment variable named by ``keys.pkcs11_pin_env``. Every
operation opens a session, logs in, works and closes it: a PKCS#11 library keeps one login state
per process and token, so sessions held across calls would collide between providers.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11 import exceptions as p11
from pkcs11.mechanisms import GCMParams

from infra.errors import ConfigError, KeyError_
from infra.keys.provider import KekProvider
from infra.settings import Settings, load_settings

logger = logging.getLogger(__name__)

MAGIC = b"clk11"
FORMAT_VERSION = 1
NONCE_BYTES = 12
TAG_BYTES = 16
KEY_ID_BYTES = 16
KEY_BITS = 256
SOFTHSM_UTIL = "softhsm2-util"

# Without locking arguments to C_Initialize a PKCS#11 library may not be entered from two
# threads at once; one lock for every token keeps that promise.
_LOCK = threading.Lock()
# Failures a token reports when GCM authentication fails. SoftHSM2 answers CKR_GENERAL_ERROR;
# the standard answer is CKR_ENCRYPTED_DATA_INVALID.
_AUTH_FAILURES = (
    p11.GeneralError,
    p11.EncryptedDataInvalid,
    p11.EncryptedDataLenRange,
    p11.DataInvalid,
    p11.DataLenRange,
)

T = TypeVar("T")


class Pkcs11Provider(KekProvider):
    """Wraps data keys with an AES-256 key that never leaves a PKCS#11 token."""

    name = "pkcs11"

    def __init__(
        self, *, module: str | os.PathLike[str], token_label: str, key_label: str, pin: str,
        pin_source: str = "the PIN argument",
    ) -> None:
        self._module = Path(module)
        self._token_label = token_label
        self._key_label = key_label
        self._pin = pin
        self._pin_source = pin_source
        self._pid = os.getpid()
        self._key_id: bytes | None = None

        if not str(module):
            raise ConfigError(
                "keys.pkcs11_module is empty: set it to the token's PKCS#11 library "
                "(/usr/lib/softhsm/libsofthsm2.so after apt-get install -y softhsm2)"
            )
        if not key_label:
            raise ConfigError("keys.pkcs11_key_label is empty: name the KEK's label on the token")
        self._lib = _load_module(self._module)
        self._token = self._find_token()
        self._check_mechanism()
        with self._session():
            pass
        logger.info(
            "PKCS#11 token opened: token %r (serial %s), key label %r, AES-256-GCM on the token",
            token_label, self.token_serial, key_label,
        )

    @classmethod
    def from_settings(
        cls, settings: Settings, *, environ: Mapping[str, str] | None = None
    ) -> Pkcs11Provider:
        """The provider that ``keys.pkcs11_*`` settings name, with the PIN from the environment."""
        environ = os.environ if environ is None else environ
        pin_env = settings.get("keys.pkcs11_pin_env") or ""
        if not pin_env:
            raise ConfigError("keys.pkcs11_pin_env is empty: name the variable that holds the PIN")
        pin = environ.get(pin_env, "")
        if not pin:
            raise ConfigError(
                f"the PKCS#11 token PIN is not set: export {pin_env}=<the token's user PIN> "
                "(keys.pkcs11_pin_env names this variable)"
            )
        return cls(
            module=settings.get("keys.pkcs11_module") or "",
            token_label=settings.get("keys.pkcs11_token_label") or "",
            key_label=settings.get("keys.pkcs11_key_label") or "",
            pin=pin,
            pin_source=f"the PIN in {pin_env}",
        )

    @property
    def token_serial(self) -> str:
        return self._token.serial.decode("ascii", "replace").strip()

    @property
    def token_label(self) -> str:
        return self._token_label

    @property
    def key_label(self) -> str:
        return self._key_label

    @property
    def key_id(self) -> str:
        """The hex ``CKA_ID`` of the current KEK: stable, and says nothing about its value."""
        return self._current_key_id().hex()

    def create_key(self) -> str:
        """Generate the KEK on the token (sensitive, non-extractable); returns its ``key_id``."""
        with self._session(rw=True) as session:
            existing = list(session.get_objects(
                {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: self._key_label}
            ))
            if existing:
                raise KeyError_(
                    f"token {self._token_label!r} already holds a key labelled "
                    f"{self._key_label!r}: use it, or choose another keys.pkcs11_key_label"
                )
            key_id = session.generate_random(KEY_ID_BYTES * 8)
            session.generate_key(
                KeyType.AES, KEY_BITS, id=key_id, label=self._key_label, store=True,
                capabilities=MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT,
                template={
                    Attribute.PRIVATE: True,
                    Attribute.SENSITIVE: True,
                    Attribute.EXTRACTABLE: False,
                    Attribute.MODIFIABLE: False,
                },
            )

        self._key_id = key_id
        logger.info(
            "created KEK %s on PKCS#11 token %r under label %r",
            key_id.hex(), self._token_label, self._key_label,
        )
        return key_id.hex()

    def wrap(self, data_key: bytes, *, context: bytes) -> bytes:
        _check_bytes(data_key, what="data_key")
        _check_bytes(context, what="context", allow_empty=True)

        with self._session() as session:
            key = self._current_key(session)
            key_id = key[Attribute.ID]
            header = _header(key_id)
            nonce = session.generate_random(NONCE_BYTES * 8)
            sealed = key.encrypt(
                data_key, mechanism=Mechanism.AES_GCM,
                mechanism_param=GCMParams(nonce, header + context, TAG_BYTES * 8),
            )

        logger.debug("wrapped a %d-byte data key under KEK %s", len(data_key), key_id.hex())
        return header + nonce + sealed

    def unwrap(self, wrapped: bytes, *, context: bytes) -> bytes:
        _check_bytes(wrapped, what="wrapped")
        _check_bytes(context, what="context", allow_empty=True)
        key_id, nonce, sealed = _parse(wrapped)
        header = _header(key_id)

        with self._session() as session:
            key = self._key_by_id(session, key_id)
            try:
                data_key = key.decrypt(
                    sealed, mechanism=Mechanism.AES_GCM,
                    mechanism_param=GCMParams(nonce, header + context, TAG_BYTES * 8),
                )
            except _AUTH_FAILURES:
                raise KeyError_(
                    f"wrapped key does not authenticate under KEK {key_id.hex()} on token "
                    f"{self._token_label!r}: it was wrapped for another context (key name or "
                    "version) or altered; restore keyring.json from a backup"
                ) from None

        logger.debug("unwrapped a %d-byte data key under KEK %s", len(data_key), key_id.hex())
        return bytes(data_key)

    @contextmanager
    def _session(self, *, rw: bool = False) -> Iterator[Any]:
        if os.getpid() != self._pid:
            raise KeyError_(
                "this PKCS#11 provider was opened in another process (before a fork): create "
                "a provider in each process that uses the token"
            )
        with _LOCK:
            try:
                session = self._token.open(rw=rw, user_pin=self._pin)
            except (p11.PinIncorrect, p11.PinInvalid, p11.PinLenRange):
                raise KeyError_(
                    f"PKCS#11 token {self._token_label!r} refused {self._pin_source}: set the "
                    "token's user PIN there"
                ) from None
            except p11.PinLocked:
                raise KeyError_(
                    f"the user PIN of PKCS#11 token {self._token_label!r} is locked: the security "
                    "officer must reset it (softhsm2-util cannot; re-initialize a SoftHSM2 token)"
                ) from None
            except p11.UserAlreadyLoggedIn:
                raise KeyError_(
                    f"PKCS#11 token {self._token_label!r} already has a session logged in from "
                    "this process outside carelake: close it before using the provider"
                ) from None
            try:
                yield session
            finally:
                session.close()

    def _check_mechanism(self) -> None:
        if Mechanism.AES_GCM not in _call(self._token.slot.get_mechanisms, what="list mechanisms"):
            raise ConfigError(
                f"PKCS#11 token {self._token_label!r} does not offer CKM_AES_GCM, which carelake "
                "wraps keys with: use a token that does (SoftHSM2 2.6 does) or keys.provider = "
                "'file'"
            )

    def _find_token(self) -> Any:
        try:
            with _LOCK:
                return self._lib.get_token(token_label=self._token_label)
        except p11.NoSuchToken:
            raise ConfigError(
                f"no PKCS#11 token labelled {self._token_label!r} in {self._module}: initialize "
                f"one (softhsm2-util --init-token --free --label {self._token_label}) or set "
                "keys.pkcs11_token_label"
            ) from None
        except p11.MultipleTokensReturned:
            raise ConfigError(
                f"more than one PKCS#11 token is labelled {self._token_label!r} in "
                f"{self._module}: give each token its own label"
            ) from None

    def _current_key_id(self) -> bytes:
        if self._key_id is None:
            with self._session() as session:
                self._key_id = bytes(self._current_key(session)[Attribute.ID])
        return self._key_id

    def _current_key(self, session: Any) -> Any:
        try:
            key = session.get_key(object_class=ObjectClass.SECRET_KEY, label=self._key_label)
        except p11.NoSuchKey:
            raise KeyError_(
                f"PKCS#11 token {self._token_label!r} holds no key labelled {self._key_label!r}: "
                "create it with Pkcs11Provider.create_key() (docs/keys-pkcs11.md), or set "
                "keys.pkcs11_key_label to the KEK's label"
            ) from None
        except p11.MultipleObjectsReturned:
            raise KeyError_(
                f"PKCS#11 token {self._token_label!r} holds several keys labelled "
                f"{self._key_label!r}: labels of KEKs must be unique"
            ) from None
        _check_key(key, where=f"key {self._key_label!r} on token {self._token_label!r}")
        return key

    def _key_by_id(self, session: Any, key_id: bytes) -> Any:
        keys = list(session.get_objects(
            {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.ID: key_id}
        ))
        if not keys:
            current = self._current_key(session)[Attribute.ID].hex()
            raise KeyError_(
                f"wrapped key was made by KEK {key_id.hex()}, which PKCS#11 token "
                f"{self._token_label!r} does not hold (its current KEK is {current}): point "
                "keys.pkcs11_token_label at the token that wrapped it"
            )
        if len(keys) > 1:
            raise KeyError_(
                f"PKCS#11 token {self._token_label!r} holds several keys with CKA_ID "
                f"{key_id.hex()}: key ids of KEKs must be unique"
            )
        _check_key(keys[0], where=f"KEK {key_id.hex()} on token {self._token_label!r}")
        return keys[0]


def initialize_token(
    directory: str | os.PathLike[str], *, label: str, pin: str, so_pin: str
) -> Path:
    """Initialize a SoftHSM2 token in ``directory``; returns the softhsm2.conf to point at.

    For tests and development: the token store lives in ``directory/tokens`` and the returned
    configuration must be in ``SOFTHSM2_CONF`` before the library is loaded. Several tokens may
    share one directory. The PINs pass on softhsm2-util's command line, visible to local users
    while it runs; initialize a production token with your HSM's own tooling.
    """
    util = shutil.which(SOFTHSM_UTIL)
    if util is None:
        raise ConfigError(f"{SOFTHSM_UTIL} is not installed: apt-get install -y softhsm2")

    directory = Path(directory)
    tokens = directory / "tokens"
    tokens.mkdir(mode=0o700, parents=True, exist_ok=True)
    conf = directory / "softhsm2.conf"
    if not conf.exists():
        conf.write_text(
            f"directories.tokendir = {tokens}\nobjectstore.backend = file\n"
            "log.level = ERROR\nslots.removable = false\n",
            encoding="utf-8",
        )

    command = [util, "--init-token", "--free", "--label", label, "--so-pin", so_pin, "--pin", pin]
    done = subprocess.run(
        command, env={**os.environ, "SOFTHSM2_CONF": str(conf)}, capture_output=True, text=True,
        check=False,
    )
    if done.returncode != 0:
        raise ConfigError(
            f"{SOFTHSM_UTIL} could not initialize token {label!r} in {tokens} "
            f"(exit {done.returncode}): {done.stderr.strip() or done.stdout.strip()}"
        )
    logger.info("initialized SoftHSM2 token %r in %s", label, tokens)
    return conf


def register(subparsers: Any) -> None:
    """Add ``pkcs11-key create`` and ``pkcs11-key show`` to carelake's command line."""
    parser = subparsers.add_parser(
        "pkcs11-key", help="create or show the key-encryption key on the PKCS#11 token"
    )
    parser.add_argument("action", choices=["create", "show"])
    parser.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    provider = Pkcs11Provider.from_settings(load_settings())
    key_id = provider.create_key() if args.action == "create" else provider.key_id
    print(
        f"token {provider.token_label!r} (serial {provider.token_serial}), key label "
        f"{provider.key_label!r}, key id {key_id}, AES-256-GCM on the token"
    )
    return 0


def _load_module(module: Path) -> Any:
    if not module.is_file():
        raise ConfigError(
            f"PKCS#11 module {module} does not exist: apt-get install -y "
            "softhsm2, or set keys.pkcs11_module to your HSM's PKCS#11 library"
        )
    try:
        return pkcs11.lib(str(module))
    except p11.PKCS11Error as error:
        reason = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        raise ConfigError(
            f"cannot load PKCS#11 module {module} ({reason}): check that "
            "keys.pkcs11_module is a PKCS#11 library for this machine, and for SoftHSM2 that "
            "SOFTHSM2_CONF names a readable configuration"
        ) from None


def _call(function: Callable[[], T], *, what: str) -> T:
    with _LOCK:
        try:
            return function()
        except p11.PKCS11Error as error:
            raise ConfigError(f"PKCS#11 token could not {what}: {type(error).__name__}") from None


def _check_key(key: Any, *, where: str) -> None:
    problems = []
    if key[Attribute.KEY_TYPE] != KeyType.AES or key[Attribute.VALUE_LEN] != KEY_BITS // 8:
        problems.append("is not an AES-256 key")
    if key[Attribute.EXTRACTABLE] or not key[Attribute.SENSITIVE]:
        problems.append("could leave the token (extractable or not sensitive)")
    if not key[Attribute.ENCRYPT] or not key[Attribute.DECRYPT]:
        problems.append("may not encrypt and decrypt")
    if not key[Attribute.ID]:
        problems.append("has no CKA_ID")
    if problems:
        raise KeyError_(
            f"{where} {' and '.join(problems)}: create the KEK with Pkcs11Provider.create_key() "
            "(docs/keys-pkcs11.md)"
        )


def _check_bytes(value: object, *, what: str, allow_empty: bool = False) -> None:
    if not isinstance(value, bytes):
        raise TypeError(f"{what} must be bytes, not {type(value).__name__}")
    if not value and not allow_empty:
        raise KeyError_(f"{what} is empty: nothing to wrap or unwrap")


def _header(key_id: bytes) -> bytes:
    if not 0 < len(key_id) < 256:
        raise KeyError_(f"KEK CKA_ID is {len(key_id)} bytes long: it must be 1 to 255 bytes")
    return MAGIC + bytes([FORMAT_VERSION, len(key_id)]) + key_id


def _parse(wrapped: bytes) -> tuple[bytes, bytes, bytes]:
    fixed = len(MAGIC) + 2
    if len(wrapped) < fixed or not wrapped.startswith(MAGIC):
        raise KeyError_(
            "wrapped key is not in the PKCS#11 provider's format: it was made by another "
            "provider (see keys.provider) or is damaged"
        )
    version, id_length = wrapped[len(MAGIC)], wrapped[len(MAGIC) + 1]
    if version != FORMAT_VERSION:
        raise KeyError_(
            f"wrapped key has PKCS#11 format version {version}; this carelake reads version "
            f"{FORMAT_VERSION}: upgrade carelake"
        )
    key_id = wrapped[fixed:fixed + id_length]
    nonce = wrapped[fixed + id_length:fixed + id_length + NONCE_BYTES]
    sealed = wrapped[fixed + id_length + NONCE_BYTES:]
    if id_length == 0 or len(key_id) != id_length or len(sealed) <= TAG_BYTES:
        raise KeyError_("wrapped key is truncated: restore keyring.json from a backup")
    return key_id, nonce, sealed
