"""Citadel: the mesh CA issuing SPIFFE workload certificates, and the certificate client of the proxies.

Pure: ``identity`` (SPIFFE IDs and the other meshes' names) → ``ca`` (keys, roots, signing CSRs, rotation) →
``verification`` (is a chain acceptable, and if not, why) ; ``settings`` (the mesh config's security fields),
``intentions`` (Consul's table → AuthorizationPolicies). I/O shells: ``server`` (IstioCertificateService over
TLS, TokenReview authentication), ``keeping`` (the CA in Secrets), ``publishing`` (the trust bundle ConfigMap in
every namespace), ``main`` (the ``istio-citadel`` process) and ``client`` (the proxy's ``CertificateProvider``).
"""
