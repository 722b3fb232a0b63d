#!/usr/bin/env python3
"""A test certificate authority and a server certificate it signs, for the fixtures that speak HTTPS.

    test_ca.py DIR [--name NAME]

Writes, in DIR (created 0700):
  ca.pem                the CA certificate (what clients are told to trust: CLOUD_BACKUP_CA_FILE)
  ca-key.pem            its private key (0600)
  NAME.pem, NAME-key.pem  a server certificate for 127.0.0.1, ::1 and localhost, signed by the CA,
                        and its key (0600); NAME defaults to "server"
  NAME-chain.pem        the server certificate followed by the CA certificate
  other-ca.pem          a second, unrelated CA certificate (for "wrong CA" tests)

Idempotent: an existing CA is reused, so certificates of several servers share one CA. Everything is
valid from one day ago for 30 days. Only loopback names: these certificates are for tests.
"""
import argparse
import datetime
import ipaddress
import os
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def write(path, data, private=False):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def pem_key(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def make_ca(common_name):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return key, cert


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("directory")
    parser.add_argument("--name", default="server")
    args = parser.parse_args()
    os.makedirs(args.directory, mode=0o700, exist_ok=True)
    ca_path = os.path.join(args.directory, "ca.pem")
    ca_key_path = os.path.join(args.directory, "ca-key.pem")
    if os.path.exists(ca_path) and os.path.exists(ca_key_path):
        ca_cert = x509.load_pem_x509_certificate(open(ca_path, "rb").read())
        ca_key = serialization.load_pem_private_key(open(ca_key_path, "rb").read(), password=None)
    else:
        ca_key, ca_cert = make_ca("cloud-backup test CA")
        write(ca_key_path, pem_key(ca_key), private=True)
        write(ca_path, ca_cert.public_bytes(serialization.Encoding.PEM))
        _, other = make_ca("an unrelated CA")
        write(os.path.join(args.directory, "other-ca.pem"), other.public_bytes(serialization.Encoding.PEM))

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.IPAddress(ipaddress.ip_address("::1"))]
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    write(os.path.join(args.directory, f"{args.name}.pem"), cert_pem)
    write(os.path.join(args.directory, f"{args.name}-key.pem"), pem_key(key), private=True)
    write(os.path.join(args.directory, f"{args.name}-chain.pem"), cert_pem + ca_cert.public_bytes(serialization.Encoding.PEM))
    print(ca_path)


if __name__ == "__main__":
    sys.exit(main())
