#!/usr/bin/env python3
"""An independent Data Forest client, written only from NCP's documentation (the signature v2 "common guide",
the aiworkspaces/aiapps pages): it signs every request with hmac+hashlib, speaks JSON or XML, and drives a whole
AI-app round trip. Usage: client.py BASE_URL ACCESS_KEY SECRET_KEY NATIVE_TOKEN json|xml
Exits non-zero with a message on the first check that fails."""
import base64, hashlib, hmac, json, sys, time, urllib.error, urllib.request
import xml.etree.ElementTree as ET

BASE, AK, SK, TOKEN, MODE = sys.argv[1:6]
XML = MODE == "xml"
ARRAYS = {"input", "output", "exposeTcpPorts", "contents"}


def fail(msg):
    print("FAIL:", msg, file=sys.stderr)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def sign(method, uri, ts, ak=AK, sk=SK):
    message = f"{method} {uri}\n{ts}\n{ak}"
    return base64.b64encode(hmac.new(sk.encode(), message.encode(), hashlib.sha256).digest()).decode()


def to_xml(root, obj):
    def add(parent, key, value):
        if isinstance(value, list):
            for v in value:
                add(parent, key, v)
            return
        el = ET.SubElement(parent, key)
        if isinstance(value, dict):
            for k, v in value.items():
                add(el, k, v)
        elif isinstance(value, bool):
            el.text = "true" if value else "false"
        else:
            el.text = str(value)
    r = ET.Element(root)
    for k, v in obj.items():
        add(r, k, v)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(r)


def from_xml(data):
    root = ET.fromstring(data)
    def conv(el):
        kids = list(el)
        if not kids:
            t = (el.text or "").strip()
            if t in ("true", "false"):
                return t == "true"
            try:
                return int(t)
            except ValueError:
                return t
        out = {}
        for k in kids:
            v = conv(k)
            if k.tag in out or k.tag in ARRAYS:
                if not isinstance(out.get(k.tag), list):
                    out[k.tag] = [] if k.tag not in out else [out[k.tag]]
                out[k.tag].append(v)
            else:
                out[k.tag] = v
        return out
    return root.tag, conv(root)


def call(op, body, root=None, ts=None, ak=AK, sk=SK, signature=None, expect=200):
    uri = f"/api/v2/{op}"
    ts = ts or str(int(time.time() * 1000))
    headers = {
        "x-ncp-apigw-timestamp": ts,
        "x-ncp-iam-access-key": ak,
        "x-ncp-apigw-signature-v2": signature or sign("POST", uri, ts, ak, sk),
    }
    if XML:
        data = to_xml(root or "Request", body)
        headers["Content-Type"] = "application/xml"
        headers["Accept"] = "application/xml"
    else:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
        headers["Accept"] = "application/json"
    req = urllib.request.Request(BASE + uri, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req) as r:
            status, raw, ctype = r.status, r.read(), r.headers.get("Content-Type", "")
    except urllib.error.HTTPError as e:
        status, raw, ctype = e.code, e.read(), e.headers.get("Content-Type", "")
    check(status == expect, f"{op}: expected HTTP {expect}, got {status}: {raw[:400]!r}")
    if "xml" in ctype:
        rtag, obj = from_xml(raw)
        if status == 200 and root:
            check(rtag == root.replace("Request", "Response"), f"{op}: XML root {rtag}, expected {root.replace('Request', 'Response')}")
        return obj
    return json.loads(raw)


def native(method, path, data=None):
    req = urllib.request.Request(BASE + "/api/v1" + path, data=data, method=method, headers={"Authorization": "Bearer " + TOKEN})
    with urllib.request.urlopen(req) as r:
        return r.read()


def signed_get(url):
    path = url[url.index("/api/"):]
    ts = str(int(time.time() * 1000))
    req = urllib.request.Request(url, headers={
        "x-ncp-apigw-timestamp": ts, "x-ncp-iam-access-key": AK, "x-ncp-apigw-signature-v2": sign("GET", path, ts)})
    with urllib.request.urlopen(req) as r:
        return r.read().decode()


def wait(app_id, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        d = call("aiapps/getDetail", {"id": app_id}, root="GetAiAppDetailRequest")
        if d["state"] in ("FINISHED", "FAILED", "KILLED"):
            return d
        time.sleep(0.2)
    fail(f"app {app_id} did not finish in {timeout}s: {d}")


# Authentication, as the API gateway answers it.
now = str(int(time.time() * 1000))
r = call("accounts/getList", {}, root="GetAccountListRequest", signature="AAAA" + sign("POST", "/api/v2/accounts/getList", now)[4:], ts=now, expect=401)
stale = str(int(time.time() * 1000) - 6 * 60 * 1000)
call("accounts/getList", {}, root="GetAccountListRequest", ts=stale, expect=401)
call("accounts/getList", {}, root="GetAccountListRequest", ak="NOSUCHKEY0000000000", expect=401)

# The account is the tenant.
accounts = call("accounts/getList", {}, root="GetAccountListRequest")
check(accounts["success"] is True and accounts["contents"], f"accounts/getList: {accounts}")
account = accounts["contents"][0] if isinstance(accounts["contents"], list) else accounts["contents"]
account_id, account_name = account["id"], account["name"]
check(0 < len(account_id) <= 22, f"account id {account_id!r} is not a base62 UUID")
detail = call("accounts/getDetail", {"id": account_id}, root="GetAccountDetailRequest")
check(detail["name"] == account_name, f"accounts/getDetail: {detail}")

ws_name = f"{MODE}-ws-{int(time.time()) % 100000}"
avail = call("aiworkspaces/checkAvailableName", {"accountId": account_id, "name": ws_name}, root="CheckAiWorkspaceAvailableNameRequest")
check(avail["availableName"] is True, f"checkAvailableName: {avail}")
bad = call("aiworkspaces/checkAvailableName", {"accountId": account_id, "name": "Bad--name-"}, root="CheckAiWorkspaceAvailableNameRequest")
check(bad["availableName"] is False, f"checkAvailableName accepted a bad name: {bad}")

# Seed 001's body, with its invalid image first: the vendor's exact error.
config = {
    "data": {"input": [{"hdfs": "string", "path": "string"}], "output": [{"hdfs": "string", "overwrite": True, "path": "string"}]},
    "docker": {"command": "ls", "image": "tensorflow/r2.3.1-py3", "workdir": "/root/"},
    "name": "test", "queueName": "gpu",
    "resource": {"cpuCount": 1, "gpuCount": 1, "gpuModel": "T4", "memoryMb": 1024},
    "userPackageUri": "string",
}
err = call("aiworkspaces/create", {"accountId": account_id, "configuration": config, "description": "test", "name": ws_name},
           root="CreateAiWorkspaceRequest", expect=400)
expected = "invalid request parameter (configuration.docker.image, 'tensorflow/r2.3.1-py3'). \"^(dataforest/)?([a-z0-9._-]{1,30}):([a-z0-9._-]{1,20})$\"と一致する必要があります"
check(err == {"message": expected, "success": False}, f"bad image answered {err!r}")
config["docker"]["image"] = "tensorflow:r2.3.1-py3"
config["data"] = {}
created = call("aiworkspaces/create", {"accountId": account_id, "configuration": config, "description": "test", "name": ws_name},
               root="CreateAiWorkspaceRequest")
ws_id = created["id"]
check(created["success"] is True and 0 < len(ws_id) <= 22, f"create: {created}")
dup = call("aiworkspaces/create", {"accountId": account_id, "configuration": config, "name": ws_name}, root="CreateAiWorkspaceRequest", expect=400)
check("name" in dup["message"], f"duplicate name answered {dup}")
lst = call("aiworkspaces/getList", {"search": {"accountId": account_id}}, root="GetAiWorkspaceListRequest")
check(any(c["id"] == ws_id and c["imageVersion"] == "tensorflow:r2.3.1-py3" for c in lst["contents"]), f"getList: {lst}")
cfgs = call("aiworkspaces/getConfigurationList", {"id": ws_id}, root="GetAiWorkspaceConfigurationListRequest")
check(cfgs["contents"][0]["configuration"]["docker"]["workdir"] == "/root/", f"getConfigurationList: {cfgs}")
images = call("aiworkspaces/getDockerImageList", {"search": {"typeName": "tensorflow"}}, root="GetAiWorkspaceDockerImageListRequest")
tags = images["dockerImages"]["tensorflow"]
check(tags == "r2.3.1-py3" or "r2.3.1-py3" in tags, f"getDockerImageList: {images}")

# Input data into the data store at the account's hdfs path.
hdfs_in = f"/user/{account_name}/{ws_name}/data_in"
hdfs_out = f"/user/{account_name}/{ws_name}/data_out"
native("PUT", f"/data/content?path={hdfs_in}/input.txt", b"hello data forest\n")

# Seed 000's body shape.
body = {
    "aiWorkspaceId": ws_id,
    "data": {"input": [{"hdfs": hdfs_in, "path": "data_in"}], "output": [{"hdfs": hdfs_out, "overwrite": False, "path": "data_out"}]},
    "docker": {"command": "mkdir -p data_out && wc -c < data_in/input.txt > data_out/count.txt && cat data_in/input.txt && pwd",
               "image": "tensorflow:r2.3.1-py3", "workdir": "/root/", "env": {"GREETING": "hi"}, "exposeTcpPorts": [0]},
    "namePrefix": "df" + MODE[:2],
    "queueName": "gpu",
    "resource": {"cpuCount": 1, "gpuCount": 1, "gpuModel": "T4", "memoryMb": 256},
}
sub = call("aiapps/submit", body, root="SubmitAiAppRequest")
check(sub["success"] is True and sub["state"] == "ACCEPTED" and sub["finalStatus"] == "UNDEFINED", f"submit: {sub}")
check(sub["name"].startswith(body["namePrefix"] + "-") and len(sub["name"]) == len(body["namePrefix"]) + 10, f"name {sub['name']}")
check(sub["finishedAt"].startswith("1970-01-01T"), f"finishedAt before the end: {sub['finishedAt']}")
check(sub["queueName"] == "gpu" and sub["accountName"] == account_name, f"submit: {sub}")
done = wait(sub["id"])
check((done["state"], done["finalStatus"]) == ("FINISHED", "SUCCEEDED"), f"app ended {done}")
check(not done["finishedAt"].startswith("1970"), f"finishedAt {done['finishedAt']}")
containers = done["containers"]
check(len(containers) == 1, f"containers: {containers}")
container = list(containers.values())[0]
log = signed_get(container["logUrl"])
check("hello data forest" in log and log.strip().endswith("/root"), f"container log: {log!r}")
count = native("GET", f"/data/content?path={hdfs_out}/count.txt").decode().strip()
check(count == "18", f"output read back {count!r}")

# Same output again without overwrite: FAILED, saying why; with overwrite: replaced.
again = call("aiapps/submit", body, root="SubmitAiAppRequest")
d2 = wait(again["id"])
check((d2["state"], d2["finalStatus"]) == ("FAILED", "FAILED"), f"overwrite=false app ended {d2}")
check("overwrite" in d2.get("diagnostics", ""), f"no reason given: {d2}")
body["data"]["output"][0]["overwrite"] = True
body["docker"]["command"] = "mkdir -p data_out && echo replaced > data_out/count.txt"
third = call("aiapps/submit", body, root="SubmitAiAppRequest")
check(wait(third["id"])["finalStatus"] == "SUCCEEDED", "overwrite=true app did not succeed")
check(native("GET", f"/data/content?path={hdfs_out}/count.txt").decode().strip() == "replaced", "output was not replaced")

# Kill: a running app is killed; a finished one is refused as the vendor does.
body["docker"]["command"] = "sleep 60"
body["data"] = {}
long = call("aiapps/submit", body, root="SubmitAiAppRequest")
k = call("aiapps/kill", {"id": long["id"]}, root="KillAiAppRequest")
check(k["success"] is True, f"kill: {k}")
killed = wait(long["id"])
check((killed["state"], killed["finalStatus"]) == ("KILLED", "KILLED"), f"killed app: {killed}")
refused = call("aiapps/kill", {"id": sub["id"]}, root="KillAiAppRequest", expect=400)
check(refused["success"] is False and refused["message"] == f"App {sub['name']} is FINISHED", f"kill of a finished app: {refused}")

apps = call("aiapps/getList", {"search": {"accountId": account_id}}, root="GetAiAppListRequest")
ids = {a["id"] for a in (apps["contents"] if isinstance(apps["contents"], list) else [apps["contents"]])}
check({sub["id"], again["id"], third["id"], long["id"]} <= ids, f"getList misses apps: {ids}")

# Bad input in the vendor's shape.
e = call("aiapps/submit", dict(body, namePrefix="x"), root="SubmitAiAppRequest", expect=400)
check(e["message"].startswith("invalid request parameter (namePrefix, 'x')"), f"namePrefix: {e}")
e = call("aiapps/getDetail", {"id": "NoSuchApp00000000000"}, root="GetAiAppDetailRequest", expect=404)
check(e == {"success": False, "message": "no such element"}, f"missing app: {e}")
e = call("aiapps/submit", dict(body, resource={"cpuCount": 1, "gpuCount": 8, "memoryMb": 256}), root="SubmitAiAppRequest", expect=400)
check(e["message"].startswith("invalid request parameter (resource.gpuCount, '8')"), f"impossible GPUs: {e}")

d = call("aiworkspaces/delete", {"id": ws_id}, root="DeleteAiWorkspaceRequest")
check(d["success"] is True, f"delete: {d}")
call("aiworkspaces/getDetail", {"id": ws_id}, root="GetAiWorkspaceDetailRequest", expect=404)
print(f"ok: {MODE} round trip")
