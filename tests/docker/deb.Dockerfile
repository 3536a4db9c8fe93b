# Builds popbridge's .deb with CPack (the install and CPack rules in
# CMakeLists.txt) and installs it, through apt, on Debian with systemd as the
# command: test_docker.py's PackageTest boots it and runs the unit.
# Build context: the repository root.
ARG BASE_IMAGE=debian:bookworm-slim

FROM ${BASE_IMAGE} AS build
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      build-essential cmake pkg-config file \
      libuv1-dev libssl-dev libetpan-dev libtomlplusplus-dev \
 && rm -rf /var/lib/apt/lists/*
COPY . /src
RUN cmake -S /src -B /build -DCMAKE_BUILD_TYPE=Release -DPOPBRIDGE_TESTS=OFF -DPOPBRIDGE_BENCH=OFF \
 && cmake --build /build -j"$(nproc)" \
 && cd /build && cpack -G DEB \
 && mkdir /deb && cp /build/*.deb /deb/

FROM ${BASE_IMAGE}
ARG DEBIAN_FRONTEND=noninteractive
COPY --from=build /deb/ /tmp/deb/
RUN apt-get update \
 && apt-get install -y --no-install-recommends systemd systemd-sysv /tmp/deb/*.deb \
 && rm -rf /var/lib/apt/lists/*
STOPSIGNAL SIGRTMIN+3
CMD ["/lib/systemd/systemd"]
