#!/usr/bin/env bash
# Checks a live `canopy serve` against its own OpenAPI document (/api/v1/openapi.json) with schemathesis and
# every check on: no 5xx, every status and body documented, what the schema calls valid accepted and what it
# calls invalid refused, 405 with Allow for undocumented methods, and so on.
#
# Builds nothing: run `swift build` first. Needs schemathesis (`pip install schemathesis==4.32.5`).
# Starts the server on a free loopback port with a temporary data dir and declared resources, runs two bounded
# passes (SCHEMATHESIS_MAX_TIME seconds each, default 45; SCHEMATHESIS_SEED, default fixed), stops the server
# and exits non-zero on any failure.
#
# Pass 3 removes users with a disposable admin token (see below).
# Pass 1 uses a user token for every operation (admin-only ones answer a documented 403), except revoking tokens:
# the stateful phase could revoke the token it runs with. Pass 2 uses the admin token for the admin operations,
# token revocation included, without the stateful phase, so it only ever revokes tokens it does not know.
set -euo pipefail
cd "$(dirname "$0")/.."

budget=${SCHEMATHESIS_MAX_TIME:-45}
seed=${SCHEMATHESIS_SEED:-20261204}
canopy=.build/debug/canopy
[ -x "$canopy" ] || { echo "schemathesis.sh: $canopy is missing; run swift build first" >&2; exit 2; }
# Where pip put it: on PATH, or in the scripts folder of the python3 that installed it.
schemathesis=$(command -v schemathesis || echo "$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/schemathesis")
[ -x "$schemathesis" ] || { echo "schemathesis.sh: schemathesis is missing; pip install schemathesis==4.32.5" >&2; exit 2; }

work=$(mktemp -d /tmp/canopy-schemathesis.XXXXXX)
chmod 755 "$work"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$canopy" serve --data-dir "$work/data" --host 127.0.0.1 --port "$port" --gpus T4:8 --cpus 64 --memory 256Gi \
    --stop-grace 1 --log-level error >"$work/server.log" 2>&1 &
server=$!

stop_server() {
    if kill -0 "$server" 2>/dev/null; then
        kill -TERM "$server"
        for _ in $(seq 100); do kill -0 "$server" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$server" 2>/dev/null; then
            echo "schemathesis.sh: the server did not stop within 10 s of SIGTERM" >&2
            kill -KILL "$server"
            stop_failed=1
        fi
        wait "$server" 2>/dev/null || true
    fi
}
stop_failed=0
trap 'stop_server; rm -rf "$work"' EXIT

for _ in $(seq 300); do
    [ -s "$work/data/url" ] && [ -s "$work/data/admin.token" ] && break
    kill -0 "$server" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
    sleep 0.1
done
base="$(cat "$work/data/url")/api/v1"
admin=$(cat "$work/data/admin.token")
user=$(python3 - "$base" "$admin" <<'EOF'
import json, sys, urllib.request
req = urllib.request.Request(sys.argv[1] + "/tokens", method="POST", data=b'{"user": "fuzz", "tenant": "fuzz", "description": "schemathesis"}',
                             headers={"Authorization": "Bearer " + sys.argv[2], "Content-Type": "application/json"})
print(json.load(urllib.request.urlopen(req))["token"])
EOF
)

# Operations whose acceptance depends on the server's state, not only on the request's shape: a workload must
# name an existing queue and fit on some node (400 Unschedulable otherwise), a queue an existing pool. The
# schema cannot enumerate those, so for these operations a 400 is an expected answer to schema-valid data.
# A body over 1 MiB (an over-long command array, say) is refused with 413 before it is read: a rejection too.
# A workload with an image is refused with 409 here: this server has no container engine.
cat >"$work/schemathesis.toml" <<'EOF'
[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"]

[[operations]]
include-name = ["POST /workloads", "POST /queues"]
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409"]

# Leases and restarts: a lease request names exactly one of extend, until and unlimited (a 400 otherwise, which
# the schema cannot state), a lease or an extension must stay within the queue's cap, and only a stopped
# interactive workload restarts (409 for any other). A login link needs a declared HTTP port (400 otherwise) of a
# running task (409). Only a stopped or finished workload is deleted (409 otherwise).
[[operations]]
include-name = ["POST /workloads/{id}/lease", "POST /workloads/{id}/restart", "POST /workloads/{id}/open", "DELETE /workloads/{id}"]
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409"]

# SSH keys: a public key must be a real Ed25519 or ECDSA key (its base64 data parsed: a 400 otherwise), which a
# pattern cannot state. Exec: the first argument names a program (a 400 for an empty one), which an array's
# items cannot be told apart by.
[[operations]]
include-name = ["POST /ssh-keys", "GET /workloads/{id}/exec"]
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409"]

# Users with passwords: a user already given one is a documented 409, and a password is set only for a user who
# has one (404), which the schema cannot state.
[[operations]]
include-name = ["POST /users", "PUT /users/{tenant}/{user}/password"]
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409"]

# Images: this server has no container engine, so adding one is a documented 409, and a name must also be one the
# catalog has (404) and a valid reference (400), which the schema cannot state.
[[operations]]
include-name = ["POST /images/import", "POST /images/load", "POST /images/pull", "GET /images/{name}", "DELETE /images/{name}"]
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409"]
EOF

run() {
    local name=$1
    shift
    echo "== schemathesis: $name"
    # From the temporary dir, where schemathesis keeps its own files (.schemathesis/).
    # One worker: with two (threads), Python before 3.11.8/3.12.2 can fail hypothesis's own source parsing with
    # "SystemError: AST constructor recursion depth mismatch" (CPython gh-106905, a race on the ast module's
    # global state), which schemathesis reports as an error of the run; it failed a CI run once.
    (cd "$work" && timeout $((budget + 60)) "$schemathesis" --config-file "$work/schemathesis.toml" run "$base/openapi.json" \
        --url "$base" --checks all --max-time "$budget" --workers 1 --seed "$seed" --request-timeout 10 \
        --report har --report-har-path "$work/$name.har" --no-color "$@")
}

status=0
run user -H "Authorization: Bearer $user" --exclude-path '/tokens/{id}' || status=1
run admin -H "Authorization: Bearer $admin" --phases examples,coverage,fuzzing \
    --include-name 'POST /queues' --include-name 'DELETE /queues/{name}' --include-name 'POST /tokens' \
    --include-name 'DELETE /tokens/{id}' --include-name 'GET /workloads' --include-name 'GET /users' --include-name 'POST /users' \
    --include-name 'PUT /users/{tenant}/{user}/password' --include-name 'GET /tenants' || status=1
# Removing users, with a disposable admin token of its own and nothing to learn names from: the earlier passes
# created more admin tokens, so removing default/admin would be allowed (the last-admin rule no longer holds it),
# and the admin token above must survive for the clean-up below.
disposable=$(python3 - "$base" "$admin" <<'EOF'
import json, sys, urllib.request
req = urllib.request.Request(sys.argv[1] + "/tokens", method="POST",
                             data=b'{"user": "fuzz-admin", "tenant": "fuzz-ops", "role": "admin", "description": "schemathesis"}',
                             headers={"Authorization": "Bearer " + sys.argv[2], "Content-Type": "application/json"})
print(json.load(urllib.request.urlopen(req))["token"])
EOF
)
run users -H "Authorization: Bearer $disposable" --phases examples,coverage,fuzzing --include-name 'DELETE /users/{tenant}/{user}' || status=1

# Stop every workload the runs left unfinished: the server leaves running tasks running when it stops.
python3 - "$base" "$admin" <<'EOF' || status=1
import json, sys, time, urllib.request
base, token = sys.argv[1], sys.argv[2]
def call(method, path):
    req = urllib.request.Request(base + path, method=method, headers={"Authorization": "Bearer " + token})
    return json.load(urllib.request.urlopen(req, timeout=10))
active = "/workloads?limit=1000&phase=Pending,Starting,Running,Stopping"
for _ in range(100):
    items = call("GET", active)["items"]
    if not items:
        break
    for w in items:
        if w["phase"] != "Stopping":
            call("POST", "/workloads/%s/stop" % w["id"])
    time.sleep(0.2)
else:
    sys.exit("schemathesis.sh: workloads still active after 20 s: %s" % [w["id"] for w in items])
EOF

requests=$(python3 - "$work"/*.har <<'EOF'
import json, sys
print(sum(len(json.load(open(p))["log"]["entries"]) for p in sys.argv[1:]))
EOF
)
echo "schemathesis: $requests requests in all"

stop_server
[ "$stop_failed" = 0 ] || status=1
if grep -q "Fatal error\|panicked\|Fatal" "$work/server.log"; then
    echo "schemathesis.sh: the server crashed:" >&2
    cat "$work/server.log" >&2
    status=1
fi
exit $status
