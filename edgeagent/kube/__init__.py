"""The Kubernetes API side: client, credentials, TLS, node name."""
