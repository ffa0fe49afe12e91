"""Hardware behind small Protocols, each with a real and a simulated backend.

One module per protocol (`camera`, `scanner`, `indicator`, `button`), its backends beside it
(`camera_simulated`, `scanner_simulated`, `indicator_console`, `indicator_simulated`), the choice
between them in `backends`, and `secret.SecretBuffer` for the plaintext image. Real Pi backends
import their hardware library inside themselves, so this package imports anywhere.
"""
