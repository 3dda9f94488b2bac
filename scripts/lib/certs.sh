# Test certificates made with openssl (installed from Debian when missing). Sourced; the
# caller defines `log MESSAGE`.
#
#   certs_make DIR [full]   in DIR: ca.pem (a test CA) and server-cert.pem / server-key.pem
#                           (for DNS name `localhost` only, not 127.0.0.1, signed by it);
#                           with `full` also client-cert.pem / client-key.pem (signed by the
#                           same CA, for mutual TLS) and other-ca.pem (a CA that signed
#                           nothing). The caller decides whether they exist already.

certs_make() {
  local dir="$1" full="${2:-}"
  command -v openssl >/dev/null 2>&1 || {
    local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    log "installing openssl"; $sudo apt-get install -y -qq openssl >/dev/null
  }
  mkdir -p "$dir"
  (
    cd "$dir"
    q() { "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; exit 1; }; }
    q openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=binferry test CA" \
      -keyout ca-key.pem -out ca.pem
    q openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout server-key.pem -out server.csr
    printf 'subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n' >server.ext
    q openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 3650 \
      -extfile server.ext -out server-cert.pem
    if [ "$full" = full ]; then
      q openssl req -newkey rsa:2048 -nodes -subj "/CN=binferry client" -keyout client-key.pem -out client.csr
      printf 'extendedKeyUsage=clientAuth\n' >client.ext
      q openssl x509 -req -in client.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 3650 \
        -extfile client.ext -out client-cert.pem
      q openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=some other CA" \
        -keyout other-ca-key.pem -out other-ca.pem
    fi
    chmod 600 ./*-key.pem
  )
}
