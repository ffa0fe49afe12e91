"""The reference record gateway: receive, verify, open, de-duplicate, file, acknowledge."""
