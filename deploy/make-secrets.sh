#!/usr/bin/env bash
# Writes a first set of secrets for an overlay: a private CA, the
# scheduler's certificate, the workers' client certificate, and tokens for
# an admin, a user of tenant "team-a" and the workers.
#   deploy/make-secrets.sh deploy/overlays/gpu/secrets
# Prints the admin's and the user's tokens once; only their digests are kept.
# For production, use certificates from your own CA (cert-manager) instead.
set -euo pipefail
DIR=${1:?usage: make-secrets.sh SECRETS_DIR}
NAMESPACE=${NAMESPACE:-tuneforge}
mkdir -p "$DIR"
cd "$DIR"
umask 077

new_token() { echo "tf_$(openssl rand 32 | base64 | tr '+/' '-_' | tr -d '=\n')"; }
digest() { printf '%s' "$1" | sha256sum | cut -c1-64; }

openssl req -x509 -newkey rsa:3072 -nodes -days 825 -subj "/CN=tuneforge-ca" \
  -keyout ca.key -out ca.crt 2>/dev/null
issue() {  # name, subject, extensions
  openssl req -newkey rsa:3072 -nodes -subj "/CN=$2" -keyout "$1.key" -out "$1.csr" 2>/dev/null
  printf '%s\n' "$3" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 825 \
    -extfile "$1.ext" -out "$1.crt" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}
service="tuneforge-scheduler"
issue scheduler "$service" "subjectAltName=DNS:$service,DNS:$service.$NAMESPACE.svc,DNS:$service.$NAMESPACE.svc.cluster.local
extendedKeyUsage=serverAuth"
issue worker "tuneforge-worker" "extendedKeyUsage=clientAuth"

admin=$(new_token)
user=$(new_token)
worker=$(new_token)
printf '%s' "$worker" > worker-token
cat > tokens <<TOKENS
# role name     tenant  digest of the token (tuneforge-server token makes more)
admin  admin    ops     sha256:$(digest "$admin")
user   team-a   team-a  sha256:$(digest "$user")
worker workers  -       sha256:$(digest "$worker")
TOKENS
echo "secrets written to $DIR; keep ca.key out of the cluster."
echo "admin token (tenant ops, sees all):  $admin"
echo "user token (tenant team-a):          $user"
