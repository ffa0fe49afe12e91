"""The capture station: config, workflow, outbox, MQTT link, hardening, CLI."""
