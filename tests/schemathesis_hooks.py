"""Hooks for scripts/api-conformance: how schemathesis sends the bodies Kho's document describes."""

import schemathesis

# A signed document's body is the file's bytes, sent as they are (`POST /v1/signed-documents`).
schemathesis.serializer.alias("application/pdf", "application/octet-stream")
