"""The drivers' one small exception hierarchy.

Messages are for the person who has to act on them (an engineer at the station or in the
journal); they never carry patient data or image bytes.
"""


class DriverError(Exception):
    """Base of every error a driver raises."""


class CameraError(DriverError):
    """The camera cannot do what was asked: not started, closed, or the hardware failed."""


class BackendUnavailable(DriverError):
    """The configured backend name is unknown, or its backend cannot run on this machine."""
