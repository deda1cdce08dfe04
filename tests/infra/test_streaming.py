"""The streaming AEAD: Tink's AES-GCM-HKDF format, checked against Tink itself, and tamper-proof."""

from __future__ import annotations

import io
import os

import pytest
import tink
from tink import cleartext_keyset_handle, streaming_aead
from tink.proto import aes_gcm_hkdf_streaming_pb2, common_pb2, tink_pb2

from infra.crypto.streaming import (
    FORMAT_VERSION,
    MAGIC,
    PREAMBLE,
    PREAMBLE_SIZE,
    DataKey,
    SegmentReader,
    decrypt_bytes,
    encrypt_bytes,
)
from infra.errors import IntegrityError

SEGMENT = 4096
# Sizes around the segment edges: the first segment holds 4096 - 40 - 16 = 4040 bytes.
SIZES = [0, 1, 4039, 4040, 4041, 4080 + 4040, 4080 + 4041, 100_000]


@pytest.fixture(scope="module")
def tink_pair():
    streaming_aead.register()
    templates = streaming_aead.streaming_aead_key_templates
    template = templates.create_aes_gcm_hkdf_streaming_key_template(32, common_pb2.SHA256, 32,
                                                                   SEGMENT)
    handle = tink.new_keyset_handle(template)
    buffer = io.BytesIO()
    cleartext_keyset_handle.write(tink.BinaryKeysetWriter(buffer), handle)
    keyset = tink_pb2.Keyset.FromString(buffer.getvalue())
    key = aes_gcm_hkdf_streaming_pb2.AesGcmHkdfStreamingKey.FromString(
        keyset.key[0].key_data.value)
    return handle.primitive(streaming_aead.StreamingAead), DataKey(key.key_value, 3)


class _Sink(io.BytesIO):
    def close(self) -> None:  # Tink closes its destination; keep the bytes readable
        pass


@pytest.mark.parametrize("size", SIZES)
def test_tink_decrypts_what_we_write(tink_pair, size):
    primitive, key = tink_pair
    plaintext = os.urandom(size)
    ciphertext = encrypt_bytes(plaintext, key, segment_size=SEGMENT)
    preamble, stream = ciphertext[:PREAMBLE_SIZE], ciphertext[PREAMBLE_SIZE:]
    decrypted = b""
    with primitive.new_decrypting_stream(io.BytesIO(stream), preamble) as reader:
        while chunk := reader.read(1 << 16):
            decrypted += chunk
    assert decrypted == plaintext


@pytest.mark.parametrize("size", SIZES)
def test_we_decrypt_what_tink_writes(tink_pair, size):
    primitive, key = tink_pair
    plaintext = os.urandom(size)
    preamble = PREAMBLE.pack(MAGIC, FORMAT_VERSION, key.version, SEGMENT)
    sink = _Sink()
    with primitive.new_encrypting_stream(sink, preamble) as writer:
        writer.write(plaintext)
    ciphertext = preamble + sink.getvalue()
    assert decrypt_bytes(ciphertext, lambda version: key) == plaintext


def test_random_access_reads_match_slices():
    key = DataKey(os.urandom(32), 1)
    plaintext = os.urandom(50_000)
    ciphertext = encrypt_bytes(plaintext, key, segment_size=SEGMENT)
    reader = SegmentReader(io.BytesIO(ciphertext), len(ciphertext), lambda version: key)
    assert reader.size == 50_000
    for start, length in [(0, 10), (4035, 10), (4040, 4080), (49_990, 100), (12_345, 20_000)]:
        assert reader.read(start, length) == plaintext[start:start + length]


def _sample():
    key = DataKey(os.urandom(32), 1)
    return key, encrypt_bytes(os.urandom(20_000), key, segment_size=SEGMENT)


def test_flipped_byte_fails():
    key, ciphertext = _sample()
    damaged = bytearray(ciphertext)
    damaged[6000] ^= 0x01
    with pytest.raises(IntegrityError, match="segment 1"):
        decrypt_bytes(bytes(damaged), lambda version: key)


def test_truncation_fails():
    key, ciphertext = _sample()
    with pytest.raises(IntegrityError):
        decrypt_bytes(ciphertext[: PREAMBLE_SIZE + 2 * SEGMENT], lambda version: key)
    with pytest.raises(IntegrityError):
        decrypt_bytes(ciphertext[:-1], lambda version: key)


def test_swapped_segments_fail():
    key, ciphertext = _sample()
    start = PREAMBLE_SIZE + SEGMENT
    one, two = ciphertext[start:start + SEGMENT], ciphertext[start + SEGMENT:start + 2 * SEGMENT]
    swapped = ciphertext[:start] + two + one + ciphertext[start + 2 * SEGMENT:]
    with pytest.raises(IntegrityError):
        decrypt_bytes(swapped, lambda version: key)


def test_altered_preamble_and_wrong_key_fail():
    key, ciphertext = _sample()
    with pytest.raises(IntegrityError, match="not a carelake encrypted file"):
        decrypt_bytes(b"XXXX" + ciphertext[4:], lambda version: key)
    relabelled = PREAMBLE.pack(MAGIC, FORMAT_VERSION, 2, SEGMENT) + ciphertext[PREAMBLE_SIZE:]
    with pytest.raises(IntegrityError):
        decrypt_bytes(relabelled, lambda version: key)
    with pytest.raises(IntegrityError, match="another key"):
        decrypt_bytes(ciphertext, lambda version: DataKey(os.urandom(32), 1))
    newer = PREAMBLE.pack(MAGIC, 9, 1, SEGMENT) + ciphertext[PREAMBLE_SIZE:]
    with pytest.raises(IntegrityError, match="format version 9"):
        decrypt_bytes(newer, lambda version: key)
