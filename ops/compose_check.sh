#!/usr/bin/env bash
# Run compose.yaml for real and check it: the manual/scripted check of the compose stack (CI has
# no images, so this is not part of `./edge test`; tests/unit/test_ops_files.py checks the file's
# structure). Works offline: on a Debian 12 machine that reaches Debian's mirror and PyPI but no
# image registry, it builds stand-ins for the images compose.yaml names from Debian packages.
#
#   sudo ops/compose_check.sh            # from the repo root; the repo is copied, never changed
#
# Env: WORK (scratch dir, default $TMPDIR/edge-compose-check), PORT (host port of the front,
#      default 18080), KEEP=1 (leave the stack and a dockerd started here running).
#
# What it checks, in order:
#   1. compose commands work without EDGE_MASTER_KEY (`config`, `ps`); only the front refuses;
#   2. `docker compose --profile demo up` with BuildKit and the unmodified ops/Dockerfile:
#      a chat completion per provider through the front, answered by the fake upstream;
#   3. Redis runs with its append-only file; each worker warns about no other provider's key;
#   4. EDGE_FRONT_PROCESSES=2: two front processes answer on the one port, one coherent /metrics;
#   5. `--scale worker-openai=2`: the front sees two openai workers;
#   6. profile "observability": Prometheus (a stand-in built from Debian's `prometheus`
#      package) scrapes the front and every worker replica (3 worker targets up), and loads the
#      alert rules. Grafana has no Debian package: its image is not built here (its provisioning
#      files are checked by tests/unit/test_ops_files.py).
set -euo pipefail
REPO=$(cd "${1:-.}" && pwd)
W=${WORK:-${TMPDIR:-/tmp}/edge-compose-check}
PORT=${PORT:-18080}
export PORT
mkdir -p "$W"
export DEBIAN_FRONTEND=noninteractive
log() { printf '\n=== %s\n' "$*"; }
fail() { echo "FAIL: $*"; exit 1; }

# --- engine, Compose v2, stand-in base images ------------------------------------------------------
if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
  log "apt-get install docker.io debootstrap"
  apt-get update -qq
  apt-get install -y -qq docker.io debootstrap >/dev/null
fi
DOCKERD_PID=
if ! docker info >/dev/null 2>&1; then
  log "starting dockerd"
  setsid dockerd --storage-driver=overlay2 >"$W/dockerd.log" 2>&1 </dev/null &
  DOCKERD_PID=$!
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null || { tail -20 "$W/dockerd.log"; exit 1; }
fi
export DOCKER_CONFIG=$W/docker-config
if ! docker compose version >/dev/null 2>&1; then
  # Debian 12 only packages Compose v1; v2's binary comes out of trixie's docker-compose .deb
  # (private apt state under $W: the system's apt sources are not touched).
  log "fetching Compose v2 from Debian trixie's docker-compose package"
  A=$W/apt-trixie
  mkdir -p "$A/lists/partial" "$A/cache/archives/partial" "$A/debs" "$DOCKER_CONFIG/cli-plugins"
  echo 'deb http://deb.debian.org/debian trixie main' >"$A/sources.list"
  APTO=(-o "Dir::Etc::SourceList=$A/sources.list" -o Dir::Etc::SourceParts=/dev/null
        -o "Dir::State::Lists=$A/lists" -o "Dir::Cache=$A/cache" -o Dir::State::status=/dev/null)
  apt-get "${APTO[@]}" update -qq
  (cd "$A/debs" && apt-get "${APTO[@]}" download docker-compose)
  dpkg-deb -x "$A"/debs/docker-compose_*.deb "$A/x"
  cp "$A/x/usr/libexec/docker/cli-plugins/docker-compose" "$DOCKER_CONFIG/cli-plugins/"
fi
docker compose version

if ! docker image inspect local/debian:bookworm >/dev/null 2>&1; then
  log "debootstrap -> local/debian:bookworm"
  rm -rf "$W/rootfs"
  debootstrap --variant=minbase bookworm "$W/rootfs" http://deb.debian.org/debian >"$W/debootstrap.log"
  rm -rf "$W"/rootfs/var/cache/apt/archives/*.deb "$W"/rootfs/var/lib/apt/lists/*
  tar -C "$W/rootfs" -c . | docker import - local/debian:bookworm
  rm -rf "$W/rootfs"
fi
I=$W/img
mkdir -p "$I/python/extra-ca" "$I/redis" "$I/prometheus"
# Where outbound HTTPS goes through a TLS-intercepting proxy, the image needs the host's extra CAs.
cp /usr/local/share/ca-certificates/*.crt "$I/python/extra-ca/" 2>/dev/null || true
cat >"$I/python/Dockerfile" <<'EOF'
# Stand-in for python:3.11-slim: Debian bookworm's python3 (3.11.2) + venv.
FROM local/debian:bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python-is-python3 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY extra-ca/ /usr/local/share/ca-certificates/
RUN update-ca-certificates
ENV LANG=C.UTF-8 PIP_CERT=/etc/ssl/certs/ca-certificates.crt SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
CMD ["python3"]
EOF
cat >"$I/redis/entrypoint.sh" <<'EOF'
#!/bin/sh
# As the official image's entrypoint: no config file => protected mode off, so other containers connect.
if [ "$1" = "redis-server" ]; then shift; set -- redis-server "$@" --protected-mode no; fi
exec "$@"
EOF
chmod +x "$I/redis/entrypoint.sh"
cat >"$I/redis/Dockerfile" <<'EOF'
# Stand-in for redis:7-alpine: Debian bookworm's redis-server (7.0.x), redis-cli included.
FROM local/debian:bookworm
RUN apt-get update && apt-get install -y --no-install-recommends redis-server && rm -rf /var/lib/apt/lists/*
RUN mkdir -p /data && chown redis:redis /data
COPY entrypoint.sh /usr/local/bin/docker-entrypoint.sh
WORKDIR /data
ENTRYPOINT ["docker-entrypoint.sh"]
EXPOSE 6379
CMD ["redis-server"]
EOF
cat >"$I/prometheus/Dockerfile" <<'EOF'
# Stand-in for prom/prometheus: Debian bookworm's prometheus (2.42), laid out as the official
# image is (config in /etc/prometheus, data in /prometheus, user nobody, the same entrypoint).
FROM local/debian:bookworm
RUN printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d \
 && apt-get update && apt-get install -y --no-install-recommends prometheus \
 && rm -rf /var/lib/apt/lists/* && mkdir -p /prometheus && chown nobody:nogroup /prometheus
USER nobody
WORKDIR /prometheus
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
EOF
log "building stand-in base images (classic builder: no registry, no buildx)"
DOCKER_BUILDKIT=0 docker build -q -t python:3.11-slim "$I/python"
DOCKER_BUILDKIT=0 docker build -q -t redis:7-alpine "$I/redis"
PROM_IMAGE=$(python3 -c 'import sys,yaml; print(yaml.safe_load(open(sys.argv[1]))["services"]["prometheus"]["image"])' "$REPO/compose.yaml")
DOCKER_BUILDKIT=0 docker build -q -t "$PROM_IMAGE" "$I/prometheus"

# --- the project's compose.yaml and ops/Dockerfile, unmodified, on a copy of the repo --------------
log "copying $REPO (tracked and untracked files, not what .gitignore ignores)"
rm -rf "$W/repo"; mkdir -p "$W/repo"
(cd "$REPO" && git ls-files -co --exclude-standard -z | xargs -0 tar -c 2>/dev/null) | tar -C "$W/repo" -x
unset EDGE_MASTER_KEY OPENAI_API_KEY ANTHROPIC_API_KEY OPENAI_BASE_URL ANTHROPIC_BASE_URL || true
export DOCKER_BUILDKIT=1   # as users get it: the Dockerfile must build with BuildKit, offline
dc() { docker compose --project-directory "$W/repo" -f "$W/repo/compose.yaml" --profile demo "$@"; }

cleanup() {
  rc=$?
  if [ "${KEEP:-0}" != 1 ]; then
    log "cleanup"
    docker compose --project-directory "$W/repo" -f "$W/repo/compose.yaml" --profile demo \
      --profile observability down --volumes --remove-orphans >/dev/null 2>&1 || true
    if [ -n "$DOCKERD_PID" ]; then
      kill "$DOCKERD_PID" 2>/dev/null || true
      for _ in $(seq 30); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 1; done
    fi
  fi
  echo "exit $rc"
}
trap cleanup EXIT

log "1. compose commands without EDGE_MASTER_KEY"
dc config --quiet && echo "config: ok"
dc ps >/dev/null && echo "ps: ok"

export OPENAI_BASE_URL=http://fake-upstream:8090/v1 ANTHROPIC_BASE_URL=http://fake-upstream:8090
export GEMINI_BASE_URL=http://fake-upstream:8090/v1beta GEMINI_API_KEY=fake
export OPENAI_API_KEY=fake ANTHROPIC_API_KEY=fake EDGE_MASTER_KEY=sk-edge-demo EDGE_FRONT_PROCESSES=2

log "2. docker compose --profile demo build (BuildKit) and up"
dc build >"$W/compose-build.log" 2>&1 || { tail -30 "$W/compose-build.log"; fail "build"; }
echo "build: ok ($(docker image inspect -f '{{.Size}}' llm-edge-agent:local | awk '{printf "%.0f MB", $1/1e6}'))"
dc up -d

health() { curl -fsS -m 5 "http://127.0.0.1:$PORT/health"; }
workers() { health | python3 -c 'import json,sys; d=json.load(sys.stdin); p=d["providers"]; print(d["status"], p["openai"]["workers"], p["anthropic"]["workers"])'; }
wait_for() {  # wait_for "ok N M"
  for _ in $(seq 90); do [ "$(workers 2>/dev/null)" = "$1" ] && return 0; sleep 1; done
  echo "health never reached '$1': $(health || true)"; dc ps -a; dc logs --tail 30; return 1
}
wait_for "ok 1 1"
health; echo
for model in gpt-4o-mini claude-3-5-haiku-latest gemini-2.5-flash; do
  out=$(curl -sS -m 30 -w '\n%{http_code}' "http://127.0.0.1:$PORT/v1/chat/completions" \
        -H "Authorization: Bearer $EDGE_MASTER_KEY" -H 'Content-Type: application/json' \
        -d "{\"model\":\"$model\",\"messages\":[{\"role\":\"user\",\"content\":\"hello from compose\"}]}")
  echo "$out"
  [ "$(tail -n1 <<<"$out")" = 200 ] || fail "chat completion for $model"
done

log "3. Redis keeps an append-only file; workers warn only about their own provider's key"
aof=$(dc exec -T redis redis-cli config get appendonly | tail -n1)
echo "redis appendonly: $aof"; [ "$aof" = yes ] || fail "redis without AOF"
if dc logs worker-openai worker-anthropic 2>&1 | grep -E 'worker-openai.*ANTHROPIC_API_KEY|worker-anthropic.*OPENAI_API_KEY'; then
  fail "a worker warns about another provider's key"
fi
echo "no worker mentions another provider's key"

log "4. two front processes on port $PORT, one /metrics"
ids=$(for _ in $(seq 40); do health | python3 -c 'import json,sys; print(json.load(sys.stdin)["front_id"])'; done | sort -u)
echo "$ids"
[ "$(wc -l <<<"$ids")" = 2 ] || fail "expected two front ids"
total=$(curl -fsS "http://127.0.0.1:$PORT/metrics" | awk '/^llm_edge_requests_total\{/ {s+=$2} END {print s+0}')
echo "llm_edge_requests_total over both processes: $total"
[ "${total%.*}" = 2 ] || fail "/metrics should count the two chat completions"

log "5. --scale worker-openai=2"
dc up -d --scale worker-openai=2
wait_for "ok 2 1"
dc ps --format '{{.Name}}  {{.Status}}'

log "6. profile observability: Prometheus scrapes the front and every worker replica"
dc --profile observability up -d prometheus   # grafana: no stand-in image (see the top)
targets() { curl -fsS -m 5 "http://127.0.0.1:9090/api/v1/targets?state=active"; }
count_up() {
  targets | python3 -c 'import json,sys
t = json.load(sys.stdin)["data"]["activeTargets"]
up = [x for x in t if x["health"] == "up"]
print(sum(x["labels"]["job"] == "edge-front" for x in up), sum(x["labels"]["job"] == "edge-workers" for x in up))'
}
seen=
for _ in $(seq 90); do seen=$(count_up 2>/dev/null || true); [ "$seen" = "1 3" ] && break; sleep 2; done
targets | python3 -c 'import json,sys
for x in json.load(sys.stdin)["data"]["activeTargets"]:
    print(x["labels"]["job"], x["labels"].get("service", ""), x["scrapeUrl"], x["health"], x["lastError"])'
[ "$seen" = "1 3" ] || fail "expected 1 front and 3 worker targets up, saw '$seen'"
rules=$(curl -fsS "http://127.0.0.1:9090/api/v1/rules" | python3 -c 'import json,sys; print(sum(len(g["rules"]) for g in json.load(sys.stdin)["data"]["groups"]))')
echo "alert rules loaded: $rules"; [ "$rules" -gt 0 ] || fail "no alert rules"
q=$(curl -fsS "http://127.0.0.1:9090/api/v1/query" --data-urlencode 'query=count(up{job="edge-workers"} == 1)' \
    | python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else 0)')
echo "count(up{job=\"edge-workers\"} == 1) = $q"

echo; echo "PASS: compose stack (BuildKit, offline), chat completions 200, AOF on, 2 front processes with one /metrics, worker-openai scaled to 2, Prometheus scraping 1 front + 3 workers"
