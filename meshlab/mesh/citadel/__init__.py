"""Citadel: the mesh CA issuing SPIFFE workload certificates, and the certificate client of the proxies."""
