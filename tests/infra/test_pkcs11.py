"""The PKCS#11 key provider against real SoftHSM2 tokens created for this module."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pkcs11
import pytest
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11

from infra.errors import ConfigError, KeyError_
from infra.keys import pkcs11 as provider_module
from infra.keys.pkcs11 import Pkcs11Provider, initialize_token
from infra.settings import Settings, load_settings

MODULE = Path("/usr/lib/softhsm/libsofthsm2.so")
TOKEN = "carelake-test"
OTHER_TOKEN = "carelake-other"
KEY_LABEL = "carelake-kek"
PIN = "4711-test-pin"
SO_PIN = "so-test-pin-0815"
PIN_ENV = "CARELAKE_PKCS11_PIN"
CONTEXT = b"keyring:lake/v1"
SHARED_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"

pytestmark = pytest.mark.skipif(
    shutil.which("softhsm2-util") is None or not MODULE.is_file(),
    reason="Debian package softhsm2 is not installed: apt-get install -y softhsm2",
)


@pytest.fixture(scope="module")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Two fresh tokens in a private token store; the library is loaded after they exist."""
    directory = tmp_path_factory.mktemp("softhsm")
    conf = initialize_token(directory, label=TOKEN, pin=PIN, so_pin=SO_PIN)
    assert initialize_token(directory, label=OTHER_TOKEN, pin=PIN, so_pin=SO_PIN) == conf

    pkcs11.unload(str(MODULE))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SOFTHSM2_CONF", str(conf))
        yield conf
        pkcs11.unload(str(MODULE))


def _settings(**overrides: str) -> Settings:
    values = {
        "keys.pkcs11_module": str(MODULE),
        "keys.pkcs11_token_label": TOKEN,
        "keys.pkcs11_key_label": KEY_LABEL,
        **overrides,
    }
    return load_settings(environ={}).with_overrides(**values)


@pytest.fixture(scope="module")
def provider(softhsm: Path) -> Pkcs11Provider:
    made = Pkcs11Provider.from_settings(_settings(), environ={PIN_ENV: PIN})
    made.create_key()
    return made


@pytest.fixture(scope="module")
def other_provider(softhsm: Path) -> Pkcs11Provider:
    made = Pkcs11Provider.from_settings(
        _settings(**{"keys.pkcs11_token_label": OTHER_TOKEN}), environ={PIN_ENV: PIN}
    )
    made.create_key()
    return made


def _token_key_id(token_label: str, key_label: str) -> str:
    token = pkcs11.lib(str(MODULE)).get_token(token_label=token_label)
    with token.open(user_pin=PIN) as session:
        key = session.get_key(object_class=ObjectClass.SECRET_KEY, label=key_label)
        return bytes(key[Attribute.ID]).hex()


def test_wrap_unwrap_round_trip_on_the_token(provider: Pkcs11Provider) -> None:
    data_key = secrets.token_bytes(32)

    wrapped = provider.wrap(data_key, context=CONTEXT)
    again = provider.wrap(data_key, context=CONTEXT)

    assert provider.unwrap(wrapped, context=CONTEXT) == data_key
    assert provider.unwrap(again, context=CONTEXT) == data_key
    # magic 5 + version 1 + id length 1 + CKA_ID 16 + nonce 12 + ciphertext 32 + tag 16
    assert len(wrapped) == 83
    assert wrapped[:7] == b"clk11\x01\x10"
    assert wrapped[7:23].hex() == provider.key_id
    assert wrapped[23:35] != again[23:35]
    assert data_key not in wrapped


def test_key_id_is_the_tokens_cka_id(provider: Pkcs11Provider) -> None:
    assert provider.name == "pkcs11"
    assert provider.key_id == _token_key_id(TOKEN, KEY_LABEL)
    assert len(provider.key_id) == 32
    reopened = Pkcs11Provider.from_settings(_settings(), environ={PIN_ENV: PIN})
    assert reopened.key_id == provider.key_id


def test_wrong_context_fails(provider: Pkcs11Provider) -> None:
    wrapped = provider.wrap(secrets.token_bytes(32), context=CONTEXT)

    with pytest.raises(KeyError_, match="wrapped for another context"):
        provider.unwrap(wrapped, context=b"keyring:lake/v2")
    with pytest.raises(KeyError_, match="wrapped for another context"):
        provider.unwrap(wrapped, context=b"")


def test_altered_or_truncated_blob_fails(provider: Pkcs11Provider) -> None:
    wrapped = provider.wrap(secrets.token_bytes(32), context=CONTEXT)
    flipped = bytearray(wrapped)
    flipped[40] ^= 0x01

    with pytest.raises(KeyError_, match="or altered"):
        provider.unwrap(bytes(flipped), context=CONTEXT)
    with pytest.raises(KeyError_, match="or altered"):
        provider.unwrap(wrapped[:-1], context=CONTEXT)
    with pytest.raises(KeyError_, match="truncated"):
        provider.unwrap(wrapped[:40], context=CONTEXT)
    with pytest.raises(KeyError_, match="made by another provider"):
        provider.unwrap(b"clf01" + wrapped[5:], context=CONTEXT)


def test_wrong_pin_fails_clearly(provider: Pkcs11Provider) -> None:
    with pytest.raises(KeyError_, match=f"refused the PIN in {PIN_ENV}") as raised:
        Pkcs11Provider.from_settings(_settings(), environ={PIN_ENV: "0000-wrong"})
    assert "0000-wrong" not in str(raised.value)

    with pytest.raises(ConfigError, match=f"export {PIN_ENV}="):
        Pkcs11Provider.from_settings(_settings(), environ={})


def test_another_tokens_key_cannot_unwrap(
    provider: Pkcs11Provider, other_provider: Pkcs11Provider
) -> None:
    data_key = secrets.token_bytes(32)
    wrapped = provider.wrap(data_key, context=CONTEXT)
    assert other_provider.key_id != provider.key_id

    with pytest.raises(KeyError_, match=f"made by KEK {provider.key_id}, which PKCS#11 token"):
        other_provider.unwrap(wrapped, context=CONTEXT)

    # Relabel the blob with the other key's id: the other token's AES-GCM refuses it.
    other_id = bytes.fromhex(other_provider.key_id)
    forged = wrapped[:7] + other_id + wrapped[23:]
    with pytest.raises(KeyError_, match=f"does not authenticate under KEK {other_id.hex()}"):
        other_provider.unwrap(forged, context=CONTEXT)
    assert provider.unwrap(wrapped, context=CONTEXT) == data_key


def test_the_key_is_not_extractable(provider: Pkcs11Provider) -> None:
    token = pkcs11.lib(str(MODULE)).get_token(token_label=TOKEN)
    with token.open(rw=True, user_pin=PIN) as session:
        key = session.get_key(object_class=ObjectClass.SECRET_KEY, label=KEY_LABEL)

        assert key[Attribute.KEY_TYPE] == KeyType.AES
        assert key[Attribute.VALUE_LEN] == 32
        assert key[Attribute.SENSITIVE] is True
        assert key[Attribute.EXTRACTABLE] is False
        assert key[Attribute.ALWAYS_SENSITIVE] is True
        assert key[Attribute.NEVER_EXTRACTABLE] is True
        assert key[Attribute.WRAP] is False
        assert key[Attribute.UNWRAP] is False
        with pytest.raises(p11.AttributeSensitive):
            key[Attribute.VALUE]

        wrapping_key = session.generate_key(KeyType.AES, 256, store=False)
        with pytest.raises(p11.KeyUnextractable):
            wrapping_key.wrap_key(key, mechanism=Mechanism.AES_KEY_WRAP_PAD)


def test_missing_module_token_and_key_say_how_to_fix(provider: Pkcs11Provider) -> None:
    with pytest.raises(ConfigError, match="apt-get install -y softhsm2, or set keys.pkcs11_module"):
        Pkcs11Provider.from_settings(
            _settings(**{"keys.pkcs11_module": "/usr/lib/absent/libabsent.so"}),
            environ={PIN_ENV: PIN},
        )
    with pytest.raises(ConfigError, match="keys.pkcs11_module is empty"):
        Pkcs11Provider.from_settings(
            _settings(**{"keys.pkcs11_module": ""}), environ={PIN_ENV: PIN}
        )
    with pytest.raises(ConfigError, match="softhsm2-util --init-token --free --label nowhere"):
        Pkcs11Provider.from_settings(
            _settings(**{"keys.pkcs11_token_label": "nowhere"}), environ={PIN_ENV: PIN}
        )

    keyless = Pkcs11Provider.from_settings(
        _settings(**{"keys.pkcs11_key_label": "never-created"}), environ={PIN_ENV: PIN}
    )
    with pytest.raises(KeyError_, match=r"no key labelled 'never-created': create it"):
        keyless.key_id
    with pytest.raises(KeyError_, match=r"no key labelled 'never-created': create it"):
        keyless.wrap(secrets.token_bytes(32), context=CONTEXT)
    with pytest.raises(KeyError_, match="already holds a key labelled 'carelake-kek'"):
        provider.create_key()


def test_rotation_keeps_old_blobs_readable(provider: Pkcs11Provider) -> None:
    data_key = secrets.token_bytes(32)
    old_blob = provider.wrap(data_key, context=CONTEXT)

    rotated = Pkcs11Provider.from_settings(
        _settings(**{"keys.pkcs11_key_label": "carelake-kek-2"}), environ={PIN_ENV: PIN}
    )
    new_id = rotated.create_key()
    new_blob = rotated.wrap(data_key, context=CONTEXT)

    assert new_id == _token_key_id(TOKEN, "carelake-kek-2")
    assert new_id != provider.key_id
    assert new_blob[7:23].hex() == new_id
    assert rotated.unwrap(old_blob, context=CONTEXT) == data_key
    assert provider.unwrap(new_blob, context=CONTEXT) == data_key


def test_command_shows_the_key(
    provider: Pkcs11Provider, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser(prog="carelake")
    provider_module.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["pkcs11-key", "show"])
    monkeypatch.setenv("CARELAKE_KEYS__PKCS11_TOKEN_LABEL", TOKEN)
    monkeypatch.setenv("CARELAKE_KEYS__PKCS11_MODULE", str(MODULE))
    monkeypatch.setenv(PIN_ENV, PIN)
    monkeypatch.delenv("CARELAKE_SETTINGS", raising=False)

    assert args.handler(args) == 0

    printed = capsys.readouterr().out
    assert printed == (
        f"token '{TOKEN}' (serial {provider.token_serial}), key label '{KEY_LABEL}', "
        f"key id {provider.key_id}, AES-256-GCM on the token\n"
    )
    assert PIN not in printed


def test_forked_child_is_refused(provider: Pkcs11Provider) -> None:
    read, write = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(read)
        try:
            provider.wrap(b"\x00" * 32, context=CONTEXT)
            outcome = b"wrapped"
        except KeyError_ as error:
            outcome = b"refused" if "before a fork" in str(error) else b"other error"
        os.write(write, outcome)
        os._exit(0)
    os.close(write)
    outcome = os.read(read, 64)
    os.close(read)
    os.waitpid(child, 0)

    assert outcome == b"refused"


def test_unreadable_softhsm_configuration_fails_clearly(tmp_path: Path) -> None:
    # In a child interpreter: this module's library stays loaded with its own configuration.
    script = (
        "from infra.errors import ConfigError\n"
        "from infra.keys.pkcs11 import Pkcs11Provider\n"
        "try:\n"
        f"    Pkcs11Provider(module={str(MODULE)!r}, token_label='t', key_label='k', pin='p')\n"
        "except ConfigError as error:\n"
        "    print(error)\n"
    )
    environment = {**os.environ, "SOFTHSM2_CONF": str(tmp_path / "absent.conf")}

    done = subprocess.run(
        [sys.executable, "-c", script], env=environment, capture_output=True, text=True,
        check=True, cwd=Path(__file__).resolve().parents[2],
    )

    assert done.stdout == (
        f"cannot load PKCS#11 module {MODULE} (GeneralError): check that keys.pkcs11_module is a "
        "PKCS#11 library for this machine, and for SoftHSM2 that SOFTHSM2_CONF names a readable "
        "configuration\n"
    )


def test_a_lake_keeps_its_keys_under_the_token(
    provider: Pkcs11Provider, other_provider: Pkcs11Provider, tmp_path: Path
) -> None:
    from infra.lake import Lake

    example = SHARED_DATA / "fhir-r4-spec-examples" / "condition-example.json"
    plain = example.read_bytes()
    environ = {
        "CARELAKE_KEYS__PROVIDER": "pkcs11", "CARELAKE_KEYS__KEY_DIR": str(tmp_path / "keys"),
    }
    settings = load_settings(data_dir=tmp_path / "data", environ=environ).with_overrides(**{
        "keys.pkcs11_module": str(MODULE), "keys.pkcs11_token_label": TOKEN,
        "keys.pkcs11_key_label": KEY_LABEL,
    })

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(PIN_ENV, PIN)
        lake = Lake.open(settings)
        with lake.fs.open("ml/condition-example.bin", "wb") as handle:
            handle.write(plain)
        reopened = Lake.open(settings, create=False)
        with reopened.fs.open("ml/condition-example.bin", "rb") as handle:
            assert handle.read() == plain

        keyring = json.loads((tmp_path / "keys" / lake.lake_id / "keyring.json").read_text())
        assert keyring["kek_provider"] == "pkcs11"
        assert keyring["kek_id"] == provider.key_id
        stored = (tmp_path / "data" / "ml" / "condition-example.bin").read_bytes()
        assert plain not in stored

        elsewhere = settings.with_overrides(**{"keys.pkcs11_token_label": OTHER_TOKEN})
        with pytest.raises(KeyError_, match=f"made by KEK {provider.key_id}, which PKCS#11"):
            Lake.open(elsewhere, create=False).keys.material("lake")
