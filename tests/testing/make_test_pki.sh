#!/usr/bin/env bash
# Makes, in DIR, what the client authentication tests of every client (C++,
# Python, Go, Node) start a daemon with and connect with:
#   bash tests/testing/make_test_pki.sh DIR
#
#   ca.pem, ca.key          a CA ("ffid test CA")
#   server.pem, server.key  the daemon's certificate, for 127.0.0.1 and
#                           localhost, signed by the CA
#   client.pem, client.key  a client certificate with common name "alice",
#                           signed by the CA (mutual TLS: principal x509:alice)
#   other-ca.pem            another CA, which signed none of these (the
#                           "wrong CA" a client may be given)
#   tokens                  the daemon's --token-file: SHA-256 of
#                           "alice-secret" named alice, of "bob-secret" bob
#   alice.token             "alice-secret" (a client's token file)
#
# Keys are P-256 (fast to make), certificates valid for two days. Exits 77
# (the tests skip) when openssl is not installed.
set -euo pipefail
dir="${1:?usage: make_test_pki.sh DIR}"
if ! command -v openssl >/dev/null 2>&1; then
  echo "skipped: openssl is not installed (deploy/install-deps.sh installs it)" >&2
  exit 77
fi
mkdir -p "$dir"
cd "$dir"
newkey=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
openssl req -x509 "${newkey[@]}" -keyout ca.key -out ca.pem -days 2 \
  -subj "/CN=ffid test CA" 2>/dev/null
openssl req -x509 "${newkey[@]}" -keyout other-ca.key -out other-ca.pem -days 2 \
  -subj "/CN=some other CA" 2>/dev/null
openssl req "${newkey[@]}" -keyout server.key -out server.csr \
  -subj "/CN=localhost" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >server.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
  -out server.pem -days 2 -extfile server.ext 2>/dev/null
openssl req "${newkey[@]}" -keyout client.key -out client.csr \
  -subj "/CN=alice" 2>/dev/null
openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
  -out client.pem -days 2 2>/dev/null
rm -f server.csr client.csr server.ext
hash() { printf '%s' "$1" | sha256sum | cut -d' ' -f1; }
{
  echo "# hashed bearer tokens of the client authentication tests"
  echo "$(hash alice-secret) alice"
  echo "$(hash bob-secret) bob"
} >tokens
echo "alice-secret" >alice.token
chmod 600 ./*.key alice.token
