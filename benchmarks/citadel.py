"""Citadel benchmarks: how fast the CA signs, and what mutual TLS with its certificates costs per connection.

* certificates issued per second by the CA core (``sign_csr``: parse the CSR, verify its signature, build
  and sign the leaf) with an ECDSA P-256 CA and an RSA 2048 CA, for leaf keys of the same type;
* ``CreateCertificate`` round trips per second through the TLS gRPC server (token review faked, so this is
  Citadel's own cost: gRPC, TLS record layer, signing);
* the cost of one mutual-TLS handshake (TLS 1.3, client certificate required and verified against the root,
  as between two sidecars) over loopback, median of many, with each key type.

``python -m benchmarks.citadel`` prints the rows; ``run()`` returns (measure, result, target) rows.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import ssl
import statistics
import tempfile
import threading
import time
from pathlib import Path

from meshlab.mesh.citadel.ca import (
    CertificateAuthority,
    KeyAlgorithm,
    build_csr,
    certificates_pem,
    generate_key,
    private_key_pem,
)
from meshlab.mesh.citadel.identity import WorkloadIdentity

Row = tuple[str, str, str]
WEB = WorkloadIdentity("cluster.local", "bench", "web")
REPORT = "(reported)"


def issue_rate(algorithm: KeyAlgorithm, *, seconds: float = 1.0) -> float:
    """Certificates per second ``sign_csr`` issues, CSRs prepared in advance (the proxies make them)."""
    authority = CertificateAuthority.create_self_signed("cluster.local", algorithm=algorithm)
    csrs = [build_csr(generate_key(algorithm)) for _ in range(16)]
    ttl = dt.timedelta(hours=24)
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        authority.sign_csr(csrs[count % len(csrs)], WEB, ttl)
        count += 1
    return count / elapsed


def grpc_rate(*, calls: int = 200) -> float:
    """CreateCertificate calls per second over one TLS channel (ECDSA P-256 CA; the token review is faked)."""
    import grpc

    from meshlab.mesh.citadel import ca_pb2
    from meshlab.mesh.citadel.client import METHOD
    from meshlab.mesh.citadel.server import CertificateService, Policy, serve, server_credentials

    class Reviewer:
        async def authenticate(self, token: str, *, trust_domain: str) -> WorkloadIdentity:
            return WEB

    authority = CertificateAuthority.create_self_signed("cluster.local")
    csr = build_csr(generate_key()).decode()

    async def main() -> float:
        service = CertificateService(Policy(authority), Reviewer())
        server, port = await serve(service, credentials=server_credentials(authority, ["citadel"], ["127.0.0.1"]))
        try:
            options = [("grpc.ssl_target_name_override", "citadel"), ("grpc.enable_http_proxy", 0)]
            async with grpc.aio.secure_channel(f"127.0.0.1:{port}", grpc.ssl_channel_credentials(authority.roots_pem),
                                               options=options) as channel:
                call = channel.unary_unary(METHOD, request_serializer=ca_pb2.IstioCertificateRequest.SerializeToString,
                                           response_deserializer=ca_pb2.IstioCertificateResponse.FromString)
                request = ca_pb2.IstioCertificateRequest(csr=csr, validity_duration=3600)
                metadata = (("authorization", "Bearer bench"),)
                await call(request, metadata=metadata)  # connect and warm up
                start = time.perf_counter()
                for _ in range(calls):
                    await call(request, metadata=metadata)
                return calls / (time.perf_counter() - start)
        finally:
            await server.stop(grace=None)

    return asyncio.run(main())


def _context(purpose: ssl.Purpose, authority: CertificateAuthority, algorithm: KeyAlgorithm,
             directory: Path, name: str) -> ssl.SSLContext:
    key = generate_key(algorithm)
    issued = authority.sign_csr(build_csr(key), WorkloadIdentity("cluster.local", "bench", name))
    cert, key_file = directory / f"{name}.crt", directory / f"{name}.key"
    cert.write_bytes(certificates_pem(issued.chain[:-1]))
    key_file.touch(mode=0o600)
    key_file.write_bytes(private_key_pem(key))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if purpose is ssl.Purpose.CLIENT_AUTH else ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(cert, key_file)
    context.load_verify_locations(cadata=authority.roots_pem.decode())
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = False  # sidecars check the SPIFFE URI SAN, not a host name
    return context


def handshake_ms(algorithm: KeyAlgorithm, *, handshakes: int = 200) -> float:
    """Median milliseconds for connect + mutual TLS 1.3 handshake over loopback, both sides' certificates from
    a CA of ``algorithm``."""
    authority = CertificateAuthority.create_self_signed("cluster.local", algorithm=algorithm)
    with tempfile.TemporaryDirectory() as tmp:
        server_ctx = _context(ssl.Purpose.CLIENT_AUTH, authority, algorithm, Path(tmp), "server")
        client_ctx = _context(ssl.Purpose.SERVER_AUTH, authority, algorithm, Path(tmp), "client")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def accept() -> None:
        for _ in range(handshakes + 5):
            conn, _ = listener.accept()
            try:
                with server_ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)  # the client's one byte: the handshake is complete on both sides
            except (OSError, ssl.SSLError):
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    times = []
    for i in range(handshakes + 5):
        start = time.perf_counter()
        with socket.create_connection(("127.0.0.1", port)) as raw, client_ctx.wrap_socket(raw) as tls:
            tls.sendall(b"x")
            elapsed = time.perf_counter() - start
        if i >= 5:  # warm-up
            times.append(elapsed * 1000)
    thread.join(timeout=5)
    listener.close()
    return statistics.median(times)


def run() -> list[Row]:
    ecdsa, rsa_ = issue_rate(KeyAlgorithm.ECDSA_P256), issue_rate(KeyAlgorithm.RSA_2048)
    library = " ".join(ssl.OPENSSL_VERSION.split()[:2])  # OpenSSL 3.0's handshakes are notably slower than 1.1/3.2+
    return [
        ("certificates issued/s, ECDSA P-256 CA + leaf (sign_csr)", f"{ecdsa:,.0f}/s", REPORT),
        ("certificates issued/s, RSA 2048 CA + leaf (sign_csr)", f"{rsa_:,.0f}/s", REPORT),
        ("CreateCertificate over TLS gRPC, one channel (ECDSA)", f"{grpc_rate():,.0f}/s", REPORT),
        (f"mutual TLS 1.3 handshake over loopback, ECDSA P-256 ({library}, median)",
         f"{handshake_ms(KeyAlgorithm.ECDSA_P256):.2f} ms", REPORT),
        (f"mutual TLS 1.3 handshake over loopback, RSA 2048 ({library}, median)",
         f"{handshake_ms(KeyAlgorithm.RSA_2048):.2f} ms", REPORT),
    ]


if __name__ == "__main__":
    for measure, result, target in run():
        print(f"{measure:<72} {result:>10}   {target}")
