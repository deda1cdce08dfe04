"""Every error carelake raises on purpose, in one tree.

    CarelakeError
    ├── ConfigError            a setting is missing or wrong
    ├── KeyError_              a key is missing, wrong, or not allowed for this role
    ├── IntegrityError         ciphertext was truncated, reordered or altered
    ├── InputError             a source cannot be read at all (a bad record is quarantined)
    ├── SourceError            a FHIR server or Bulk Data export failed
    └── StageUnavailable       a stage cannot run here (for example model weights absent)

Messages say what went wrong, where, and how to fix it. They never carry patient data: no
resource body, no note text, no source id, no file name that may carry a patient's name.
"""


class CarelakeError(Exception):
    """Base of every error carelake raises on purpose."""


class ConfigError(CarelakeError):
    """Raised when a setting is missing or has a value carelake cannot use."""


class KeyError_(CarelakeError):  # noqa: N801 - the builtin KeyError means something else
    """Raised when a key is missing, is the wrong key, or may not be unwrapped by this role."""


class IntegrityError(CarelakeError):
    """Raised when ciphertext fails authentication: truncated, reordered, or altered."""


class InputError(CarelakeError):
    """Raised when a whole source cannot be read (one bad record is quarantined instead)."""


class SourceError(CarelakeError):
    """Raised when a FHIR server or a Bulk Data export answers with an error we cannot retry."""


class StageUnavailable(CarelakeError):
    """Raised when a stage cannot run on this machine; the run summary records the reason."""
