"""One small exception hierarchy for everything the protocol refuses.

Messages are written for the person who has to act on them, and never carry patient data.
"""


class ProtocolError(Exception):
    """Base of every error this package raises on outside input."""


class EnvelopeError(ProtocolError):
    """A sealed capture could not be opened or verified."""


class MalformedEnvelope(EnvelopeError):
    """The bytes are not a well-formed sealed capture (framing, header or inner layout)."""


class UnknownRecipientKey(EnvelopeError):
    """The capture was sealed to a gateway key this gateway does not hold."""


class DecryptionFailed(EnvelopeError):
    """HPKE refused the ciphertext: wrong key, altered ciphertext, or a header that was changed."""


class UntrustedCertificate(EnvelopeError):
    """The device certificate does not chain to the device CA."""


class CertificateExpired(EnvelopeError):
    """The device certificate is outside its validity period."""


class CertificateRevoked(EnvelopeError):
    """The device certificate is on the revocation list."""


class DeviceMismatch(EnvelopeError):
    """The certificate's identity is not the device named in the header."""


class BadSignature(EnvelopeError):
    """The device signature over header and manifest does not verify."""


class ManifestInvalid(EnvelopeError):
    """The manifest inside is not a valid manifest, or disagrees with the header."""


class DigestMismatch(EnvelopeError):
    """The image does not match the size or SHA-256 digest its manifest records."""


class AckError(ProtocolError):
    """A gateway receipt was malformed, forged or not meant for this device."""


class ConfigRejected(ProtocolError):
    """A setting handed to the protocol layer is unusable."""
