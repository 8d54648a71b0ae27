"""Kubernetes-facing helpers: the upstream CRD schemas this chart targets, and an offline validator."""
