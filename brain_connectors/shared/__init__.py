"""Cross-app glue every app may import: the error family, API plumbing, signing, the outbound-URL guard, log redaction."""
