"""Keys: the key-encryption key providers, the keyring of wrapped data keys, the patient vault."""
