"""amqps:// against a TLS terminator in front of the real RabbitMQ.

The test makes its own CA and server certificate, listens with TLS on a free
port and forwards the plain bytes to the broker: the client's TLS handshake,
certificate verification and host name check are the real ones.
"""

from __future__ import annotations

import datetime

import pytest
import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import defer, endpoints, reactor, ssl
from twisted.protocols import portforward

from connector.amqp.bus import AMQPBus
from connector.settings import load_settings
from tests.integration.support import declare_check_queue, drain, perf, seq_of, sleep, wait_until

pytestmark = pytest.mark.integration


def _cert(subject: str, issuer_key, issuer_name, key, ca: bool, san: str | None = None):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(issuer_name)
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(san)]),
                                        critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_pki(tmp_path, name: str):
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} test CA")])
    ca = _cert(f"{name} test CA", ca_key, ca_name, ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _cert("localhost", ca_key, ca_name, key, ca=False, san="localhost")
    pem = lambda c: c.public_bytes(serialization.Encoding.PEM)  # noqa: E731
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    (tmp_path / f"{name}-ca.pem").write_bytes(pem(ca))
    return str(tmp_path / f"{name}-ca.pem"), pem(cert) + key_pem


async def tls_terminator(server_pem: bytes):
    options = ssl.PrivateCertificate.loadPEM(server_pem).options()
    endpoint = endpoints.SSL4ServerEndpoint(reactor, 0, options, interface="127.0.0.1")
    return await endpoint.listen(portforward.ProxyFactory("127.0.0.1", 5672))


async def start(write_settings, port: int, ca: str):
    s = load_settings(write_settings(bus={"url": f"amqps://guest:guest@localhost:{port}/%2F",
                                          "tls_ca": ca, "connect_timeout": "3s"}))
    bus = AMQPBus(reactor, s.bus, s.buffer, "tls")
    await bus.startService()
    return bus


@pytest_twisted.ensureDeferred
async def test_amqps_with_the_right_ca_publishes(tmp_path, write_settings, prefix):
    ca, server_pem = make_pki(tmp_path, "good")
    listening = await tls_terminator(server_pem)
    queue = declare_check_queue(prefix)
    bus = await start(write_settings, listening.getHost().port, ca)
    try:
        await wait_until(lambda: bus.connected, 20, "the TLS connection")
        assert str(bus.connection.broker).startswith("amqps://guest@localhost:")
        await defer.gatherResults([bus.publisher("tls").publish(perf(i)) for i in range(100)])
        await wait_until(lambda: bus.publisher("tls").in_flight == 0, 30, "confirms")
    finally:
        await bus.stopService()
        await listening.stopListening()
    assert sorted(seq_of(b) for b, _ in drain(queue)) == list(range(100))


@pytest_twisted.ensureDeferred
async def test_amqps_refuses_a_broker_signed_by_another_ca(tmp_path, write_settings, prefix):
    _good_ca, server_pem = make_pki(tmp_path, "good")
    other_ca, _ = make_pki(tmp_path, "other")
    listening = await tls_terminator(server_pem)
    bus = await start(write_settings, listening.getHost().port, other_ca)
    try:
        d = bus.publisher("tls").publish(perf(1))
        await sleep(3)
        assert not bus.connected, "connected to a broker whose certificate is not trusted"
        # Accepted once written to the on-disk buffer (on its thread).
        await wait_until(lambda: d.called, 30, "the message kept safe in the buffer")
        assert bus.publisher("tls").backlog == 1
    finally:
        await bus.stopService()
        await listening.stopListening()
