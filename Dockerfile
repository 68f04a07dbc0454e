# syntax=docker/dockerfile:1
# Multi-stage: dependencies are built into a virtualenv in the first stage; the runtime stage has only the venv,
# the app and its data files, and runs as a non-root user.
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
COPY requirements/runtime.lock /tmp/runtime.lock
RUN /opt/venv/bin/pip install --require-virtualenv -r /tmp/runtime.lock

FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOST=0.0.0.0 PORT=8000
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin app
COPY --from=build /opt/venv /opt/venv
WORKDIR /srv
COPY app ./app
COPY presets ./presets
COPY profiles ./profiles
USER app
EXPOSE 8000
# Never through HTTP_PROXY, which Docker's client `proxies` setting puts in every container (found by a review).
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["python", "-c", "import os,sys,urllib.request; h=os.environ.get('HOST', '127.0.0.1'); h={'0.0.0.0': '127.0.0.1', '::': '::1'}.get(h, h); h='[%s]' % h if ':' in h else h; sys.exit(0 if urllib.request.build_opener(urllib.request.ProxyHandler({})).open('http://%s:%s/healthz' % (h, os.environ.get('PORT', '8000')), timeout=2).status == 200 else 1)"]
CMD ["python", "-m", "app"]
