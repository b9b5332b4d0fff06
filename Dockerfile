# syntax=docker/dockerfile:1
# A static loadmesh binary on a distroless base, running as non-root.
#   docker build -t loadmesh --build-arg VERSION=$(git describe --tags --always) .
#   docker run --rm -p 8080:8080 -p 7950:7950 loadmesh agent --dev --api 0.0.0.0:7950
FROM golang:1.26-bookworm AS build
ARG VERSION=dev
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/loadmesh ./cmd/loadmesh

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/loadmesh /usr/local/bin/loadmesh
USER 65532:65532
VOLUME /var/lib/loadmesh
# gossip (tcp+udp), QUIC peer channel (udp), Raft (tcp), ingress (tcp, and
# udp for HTTP/3 with --http-tls-*), API (tcp)
EXPOSE 7946/tcp 7946/udp 7947/udp 7948/tcp 8080/tcp 8080/udp 7950/tcp
ENTRYPOINT ["/usr/local/bin/loadmesh"]
CMD ["agent", "--config", "/etc/loadmesh/agent.yaml"]
