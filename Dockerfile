FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY service ./service
# Development-only code (the demo and the embedded broker) stays out of the image.
RUN rm -rf service/dev && pip install --no-cache-dir .
USER nobody
EXPOSE 8080
ENTRYPOINT ["fallback-service"]
CMD ["run"]
