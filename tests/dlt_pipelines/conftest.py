"""Fixtures of the source tests: requests never leave this machine; sealing made repeatable."""

import base64
import hashlib

import pytest


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy from the environment may carry a test's requests off this machine."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                 "all_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def deterministic_seal(monkeypatch):
    """Sealing with a nonce derived from the plaintext, so that two ways of transforming the
    same resource give equal tokens and can be compared byte for byte."""
    from infra.keys import vault

    def seal_json(self, encoded: bytes) -> str:
        nonce = hashlib.sha256(self._aad + encoded).digest()[:12]
        sealed = self._aead.encrypt(nonce, encoded, self._aad)
        return vault.TOKEN_PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()

    monkeypatch.setattr(vault.TokenSealer, "seal_json", seal_json)
