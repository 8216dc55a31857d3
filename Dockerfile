# The published image: the static (musl) release binary and a CA bundle,
# nothing else — no shell, no ssh, no kubectl, no aws. The action talks to
# hosts, registries and APIs itself (russh, bollard, the AWS SDK, octocrab).
#
# Built by `scripts/image` (and by `.github/workflows/release.yml`) from a
# small context directory holding exactly two files:
#   deploy-action        the binary from
#                        `cargo build --release --target <arch>-unknown-linux-musl`
#   ca-certificates.crt  the build machine's /etc/ssl/certs/ca-certificates.crt
# so no base image is pulled and nothing runs at build time. To build from
# source inside Docker instead, see Dockerfile.source.
#
# GitHub's rules for Docker container actions: no USER (the runner needs root
# to write the mounted file-commands folder), no reliance on WORKDIR (the
# runner passes --workdir /github/workspace), the binary is the ENTRYPOINT and
# runs as PID 1 (it handles SIGINT/SIGTERM itself and starts no child
# processes, so there is nothing to reap).
FROM scratch

ARG VERSION=dev
ARG SOURCE=https://github.com/deploy-action/deploy-action
LABEL org.opencontainers.image.title="deploy-action" \
      org.opencontainers.image.description="Ship a container image to EC2 or plain hosts safely (GitHub Action)" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="MIT"

COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY deploy-action /deploy-action

ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
ENTRYPOINT ["/deploy-action"]
