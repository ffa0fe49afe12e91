"""What estates teams run: device CA, enrolment, fleet bundles, sandbox sites, command cards."""
