FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY service ./service
RUN pip install --no-cache-dir .
USER nobody
EXPOSE 8080
ENTRYPOINT ["fallback-service"]
CMD ["run"]
