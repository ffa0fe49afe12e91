"""The language the station and the record gateway share.

Pure code: no sockets, no files, no threads. Everything that crosses the wire is defined here
once, and specified byte for byte in docs/protocol.md.
"""

PROTOCOL_VERSION = 1
