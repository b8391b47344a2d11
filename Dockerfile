FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY tagger tagger
COPY schemas schemas
COPY exporters exporters
RUN pip install --no-cache-dir .
RUN useradd --system tagger && mkdir /data && chown tagger /data
USER tagger
ENTRYPOINT ["tagger"]
CMD ["run"]
