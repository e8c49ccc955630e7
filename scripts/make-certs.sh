#!/usr/bin/env bash
# make-certs.sh DIR — a throwaway CA and certificates for local TLS (tests, the demo),
# with the openssl CLI; ECDSA P-256, valid 2 days. Writes into DIR:
#   ca.crt ca.key               the CA everything below is signed by
#   server.crt server.key       subjectAltName DNS:localhost, IP:127.0.0.1 (servers)
#   server-rsa.crt .key         the same names with an RSA-2048 key (a second key type)
#   client.crt client.key       a client certificate (CN=idemproxy), for tls-auth-clients
#   client2.crt client2.key     another client (CN=idemproxy-2), another certificate
#   wrong-name.crt .key         signed by the CA, but for DNS:elsewhere.example only
#   other-ca.crt other-ca.key   a second CA (a wrong trust for everything above)
#   other-server.crt .key       localhost and 127.0.0.1 again, signed by other-ca only
#   expired.crt expired.key     localhost and 127.0.0.1, signed by the CA, expired in 2020
# Keys are mode 600. Existing files are replaced.
set -euo pipefail

dir=${1:?usage: make-certs.sh DIR}
mkdir -p "$dir"
cd "$dir"
umask 077

ca() { # name CN
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj "/CN=$2" -keyout "$1.key" -out "$1.crt" 2>/dev/null
}

leaf() { # name CN SAN [extendedKeyUsage [CA [key type]]]
    local ca=${5:-ca}
    if [ "${6:-ec}" = rsa ]; then
        openssl req -newkey rsa:2048 -nodes -subj "/CN=$2" \
            -keyout "$1.key" -out "$1.csr" 2>/dev/null
    else
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$2" \
            -keyout "$1.key" -out "$1.csr" 2>/dev/null
    fi
    printf 'subjectAltName=%s\nextendedKeyUsage=%s\n' "$3" "${4:-serverAuth,clientAuth}" >"$1.ext"
    openssl x509 -req -in "$1.csr" -CA "$ca.crt" -CAkey "$ca.key" -CAcreateserial -days 2 \
        -extfile "$1.ext" -out "$1.crt" 2>/dev/null
    rm -f "$1.csr" "$1.ext"
}

ca ca "idemproxy test CA"
ca other-ca "another CA"
leaf server localhost "DNS:localhost,IP:127.0.0.1"
leaf server-rsa localhost "DNS:localhost,IP:127.0.0.1" serverAuth ca rsa
leaf client idemproxy "DNS:idemproxy" clientAuth
leaf client2 idemproxy-2 "DNS:idemproxy-2" clientAuth
leaf wrong-name elsewhere "DNS:elsewhere.example"
leaf other-server localhost "DNS:localhost,IP:127.0.0.1" serverAuth other-ca
rm -f ca.srl other-ca.srl

# expired: `openssl ca` is the one command of OpenSSL 3.0 that takes explicit dates
db=$(mktemp -d)
: >"$db/index.txt"
echo 01 >"$db/serial"
cat >"$db/ca.cnf" <<CNF
[ca]
default_ca = test
[test]
database = $db/index.txt
serial = $db/serial
new_certs_dir = $db
default_md = sha256
policy = any
copy_extensions = copy
unique_subject = no
[any]
commonName = supplied
CNF
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" -addext "extendedKeyUsage=serverAuth" \
    -keyout expired.key -out "$db/expired.csr" 2>/dev/null
openssl ca -batch -config "$db/ca.cnf" -cert ca.crt -keyfile ca.key -in "$db/expired.csr" \
    -out expired.crt -startdate 20200101000000Z -enddate 20200102000000Z -notext 2>/dev/null
rm -rf "$db"
chmod 644 ./*.crt
