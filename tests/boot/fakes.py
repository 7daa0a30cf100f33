"""AWS and Let's Encrypt for a booted host, without the internet.

moto (S3, SSM, Route53) and Debian's pebble (an ACME server; it skips the
challenge check with ``PEBBLE_VA_ALWAYS_VALID=1``) run in the network
namespace around the host, behind one TLS front at the real service names
(``bucket.s3.eu-west-1.amazonaws.com``, ``acme-v02.api.letsencrypt.org``...).
The host resolves those names to the front through /etc/hosts and trusts
the front's test CA: its code and its certbot talk to AWS and Let's Encrypt
exactly as on EC2. The front can play faults: S3 down, ACME failing.
"""

from __future__ import annotations

import datetime
import http.client
import http.server
import json
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ACME_NAME = "acme-v02.api.letsencrypt.org"
ACME_DIRECTORY = "/directory"  # certbot's default server is https://acme-v02.api.letsencrypt.org/directory
PEBBLE_PORT, PEBBLE_MANAGEMENT_PORT = 14000, 15000


def _pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_ca(directory: Path, names: list[str]) -> tuple[Path, Path, Path]:
    """A test CA and a server certificate for ``names`` signed by it: (ca.pem, cert.pem, key.pem)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mailstack boot test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    sans = [x509.DNSName(n) for n in names] + [x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mailstack boot test front")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = directory / "ca.pem", directory / "front.pem", directory / "front.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(_pem(key))
    return paths


@dataclass
class Faults:
    """What the front plays now: S3 (every AWS name) down, and how many ACME directory requests fail."""

    aws_down: bool = False
    acme_failures: int = 0
    acme_requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def acme_should_fail(self) -> bool:
        with self.lock:
            self.acme_requests += 1
            if self.acme_failures > 0:
                self.acme_failures -= 1
                return True
            return False


class _Front(http.server.BaseHTTPRequestHandler):
    """Forwards each request by its Host: ACME to pebble, everything else to moto."""

    protocol_version = "HTTP/1.1"
    server: "_FrontServer"

    def log_message(self, *args):
        pass

    def _forward(self):
        host = (self.headers.get("Host") or "").split(":")[0]
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        faults = self.server.faults
        path = self.path
        if host == ACME_NAME:
            if path == ACME_DIRECTORY and faults.acme_should_fail():
                return self._answer(503, b'{"type":"urn:ietf:params:acme:error:serverInternal"}')
            path = "/dir" if path == ACME_DIRECTORY else path
            upstream = http.client.HTTPSConnection("127.0.0.1", PEBBLE_PORT, timeout=60,
                                                   context=ssl._create_unverified_context())
        else:
            if faults.aws_down:
                return self._answer(503, b"<Error><Code>ServiceUnavailable</Code></Error>")
            upstream = http.client.HTTPConnection("127.0.0.1", self.server.moto_port, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "keep-alive")}
        try:
            upstream.request(self.command, path, body=body, headers=headers)
            response = upstream.getresponse()
            data = response.read()
            self.send_response(response.status, response.reason)
            for key, value in response.getheaders():
                if key.lower() not in ("transfer-encoding", "connection", "content-length", "keep-alive"):
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
        finally:
            upstream.close()

    def _answer(self, status: int, body: bytes):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _forward


class _FrontServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    faults: Faults
    moto_port: int


@dataclass
class Fakes:
    """The running fakes; every address is inside the outside namespace."""

    directory: Path
    ca: Path
    faults: Faults
    moto: object
    front: _FrontServer
    pebble: subprocess.Popen

    @property
    def moto_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.front.moto_port}"

    def pebble_root(self) -> str:
        """PEM of the root CA pebble issues under (fetched from its management port)."""
        context = ssl._create_unverified_context()
        conn = http.client.HTTPSConnection("127.0.0.1", PEBBLE_MANAGEMENT_PORT, context=context, timeout=10)
        conn.request("GET", "/roots/0")
        return conn.getresponse().read().decode()

    def stop(self) -> None:
        self.front.shutdown()
        self.front.server_close()
        self.pebble.terminate()
        try:
            self.pebble.wait(10)
        except subprocess.TimeoutExpired:
            self.pebble.kill()
        self.moto.stop()


def _wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def start(directory: Path, names: list[str], address: str, netns: str) -> Fakes:
    """Start moto, pebble and the TLS front; call in a thread of the outside namespace."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    directory.mkdir(parents=True, exist_ok=True)
    ca, cert, key = make_ca(directory, [*names, ACME_NAME, "localhost"])
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    moto_port = moto.get_host_and_port()[1]
    config = directory / "pebble.json"
    config.write_text(json.dumps({"pebble": {
        "listenAddress": f"127.0.0.1:{PEBBLE_PORT}", "managementListenAddress": f"127.0.0.1:{PEBBLE_MANAGEMENT_PORT}",
        "certificate": str(cert), "privateKey": str(key), "httpPort": 5002, "tlsPort": 5001,
        "ocspResponderURL": "", "externalAccountBindingRequired": False}}))
    env = dict(os.environ, PEBBLE_VA_ALWAYS_VALID="1", PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0",
               PEBBLE_AUTHZREUSE="0")
    log = open(directory / "pebble.log", "wb")
    pebble = subprocess.Popen(["ip", "netns", "exec", netns, shutil.which("pebble") or "pebble", "-config",
                               str(config)], stdout=log, stderr=subprocess.STDOUT, env=env)
    _wait_port(PEBBLE_PORT)
    _wait_port(PEBBLE_MANAGEMENT_PORT)
    front = _FrontServer((address, 443), _Front)
    front.faults, front.moto_port = Faults(), moto_port
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    front.socket = context.wrap_socket(front.socket, server_side=True)
    threading.Thread(target=front.serve_forever, daemon=True).start()
    return Fakes(directory, ca, front.faults, moto, front, pebble)
