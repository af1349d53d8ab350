# fraudflight service image: a release build of the binary, the ONNX Runtime
# library from the onnxruntime wheel (the same one the project's .venv uses),
# and the shipped models. Used by compose.yaml.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin fraudflight

FROM python:3.11-slim-bookworm AS onnxruntime
RUN pip install --no-cache-dir onnxruntime==1.32.0 \
 && cp /usr/local/lib/python3.11/site-packages/onnxruntime/capi/libonnxruntime.so.1.* /libonnxruntime.so

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=onnxruntime /libonnxruntime.so /usr/local/lib/libonnxruntime.so
COPY --from=build /src/target/release/fraudflight /usr/local/bin/fraudflight
COPY models /opt/fraudflight/models
WORKDIR /opt/fraudflight
ENV FRAUDFLIGHT_ORT_DYLIB=/usr/local/lib/libonnxruntime.so \
    FRAUDFLIGHT_FLIGHT_ADDR=0.0.0.0:50051 \
    FRAUDFLIGHT_HTTP_ADDR=0.0.0.0:8080
EXPOSE 50051 8080
USER nobody
ENTRYPOINT ["fraudflight"]
CMD ["demo"]
