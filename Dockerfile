# idemproxy, demo-bank and retrystorm in one image. Debian packages only.
#   docker build -t idemproxy:local .     (docker-compose.yml does this for you)

FROM debian:bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake pkg-config \
        libevent-dev libhiredis-dev libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY CMakeLists.txt ./
COPY include include
COPY src src
COPY tools tools
RUN cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DIDEMPROXY_TESTS=OFF \
 && cmake --build build -j "$(nproc)"

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libevent-2.1-7 libevent-core-2.1-7 \
        libevent-extra-2.1-7 libevent-pthreads-2.1-7 libevent-openssl-2.1-7 \
        libhiredis0.14 libssl3 curl \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/build/idemproxy /src/build/tools/demo-bank/demo-bank \
     /src/build/tools/retrystorm/retrystorm /usr/local/bin/
COPY conf/idemproxy.conf /etc/idemproxy/idemproxy.conf
COPY conf/error-templates /etc/idemproxy/error-templates
USER nobody
EXPOSE 8080 9000
CMD ["idemproxy", "/etc/idemproxy/idemproxy.conf"]
