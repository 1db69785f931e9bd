#!/usr/bin/env python3
"""An SCNet client written from the vendor's docs (requests, as the seed's sample uses), against a Canopy server.

client.py BASE USER PASSWORD ORGID OTHER_USER OTHER_PASSWORD OTHER_ORGID ACCESS_KEY SECRET_KEY
Exits non-zero with a message on the first thing that is not as the docs say.
"""
import hashlib
import hmac
import json
import sys
import time

import requests

base, user, password, org, other_user, other_password, other_org, access_key, secret_key = sys.argv[1:10]


def check(cond, what):
    if not cond:
        print("FAILED:", what, file=sys.stderr)
        sys.exit(1)


def env(r):
    check(r.headers.get("Content-Type", "").startswith("application/json"), "JSON answer: %s" % r.text[:200])
    body = r.json()
    check(set(body) == {"code", "msg", "data"} and isinstance(body["code"], str), "envelope: %s" % body)
    return body


# Sign in: one token per region, the platform's ("0") and this one's.
r = requests.post(base + "/ac/openapi/v2/tokens", headers={"user": user, "password": password, "orgId": org})
b = env(r)
check(r.status_code == 200 and b["code"] == "0", "sign-in: %s" % b)
region = [t for t in b["data"] if t["clusterId"] != "0"]
check(len(region) == 1 and region[0]["token"].count(".") == 2, "a region token: %s" % b["data"])
token = region[0]["token"]
H = {"token": token, "Content-Type": "application/json"}

b = env(requests.post(base + "/ac/openapi/v2/tokens", headers={"user": user, "password": "wrong-password", "orgId": org}))
check(b["code"] == "10009", "a wrong password is 10009: %s" % b)
b = env(requests.post(base + "/ac/openapi/v2/tokens", headers={"user": user, "orgId": org}))
check(b["code"] == "10003" and "password" in b["msg"], "a missing password is 10003: %s" % b)

check(env(requests.get(base + "/ac/openapi/v2/tokens/state", headers=H))["data"] == "token is valid", "tokens/state")

# The AK/SK exchange ("recommended"): hex HMAC-SHA256 of the compact JSON, with the key from canopy keys create.
def ak_headers(ts, secret=secret_key):
    message = json.dumps({"accessKey": access_key, "timestamp": ts, "user": user}, separators=(",", ":"))
    sig = hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()
    return {"user": user, "accessKey": access_key, "timestamp": ts, "signature": sig}


b = env(requests.post(base + "/api/user/v3/tokens", headers=ak_headers(str(int(time.time())))))
check(b["code"] == "0" and len(b["data"]) == 2, "AK/SK sign-in: %s" % b)
check(env(requests.get(base + "/ac/openapi/v2/tokens/state", headers={"token": b["data"][1]["token"]}))["code"] == "0", "the AK/SK token works")
b = env(requests.post(base + "/api/user/v3/tokens", headers=ak_headers(str(int(time.time())), secret="not-the-secret")))
check(b["code"] == "10009", "a wrong signature is 10009: %s" % b)
b = env(requests.post(base + "/api/user/v3/tokens", headers=ak_headers(str(int(time.time()) - 3600))))
check(b["code"] == "10004" and "timestamp" in b["msg"], "an hour-old timestamp: %s" % b)
b = env(requests.get(base + "/ac/openapi/v2/tokens/state", headers={"token": token[:-3] + "abc"}))
check(b["code"] == "10009", "a forged token is 10009: %s" % b)
center = env(requests.get(base + "/ac/openapi/v2/center", headers=H))["data"]
ai = center["aiUrls"][0]["url"]
check(center["aiUrls"][0]["enable"] == "true" and ai.startswith("http"), "center: %s" % center)
check(env(requests.get(base + "/ac/openapi/v2/user", headers=H))["data"]["userName"] == user, "user")
renewed = env(requests.post(base + "/ac/openapi/v2/tokens/next", headers={"token": token}))
check(renewed["code"] == "0" and renewed["data"].count(".") == 2, "tokens/next: %s" % renewed)

# From here on, the region URL the center gave.
svc = ai + "/ai/openapi/v2/instance-service"
groups = env(requests.get(svc + "/resource-group", headers=H))["data"]
check(any(g["resourceGroupCode"] == "default" for g in groups), "resource groups: %s" % groups)
res = env(requests.get(svc + "/resources", headers=H, params={"resourceGroup": "default", "acceleratorType": "cpu"}))["data"]
check(res["cpuNumber"] >= 1 and res["memorySize"] > 0 and res["nodeNumber"] >= 1, "resources: %s" % res)
dirs = env(requests.get(svc + "/allowed-mount-dir", headers=H))
check(dirs["code"] == "0" and isinstance(dirs["data"], list), "allowed-mount-dir: %s" % dirs)

create = {
    "instanceServiceName": "client-ssh", "description": "from the docs", "taskType": "ssh", "acceleratorType": "cpu",
    "version": "busybox:1.36", "imagePath": "registry.example/base/busybox:1.36", "timeoutLimit": "01:00:00", "taskNumber": 1,
    "resourceGroup": "default", "useStartScript": True, "startScriptActionScope": "all",
    "startScriptContent": "echo from-start-script > started.txt\n", "cpuNumber": 1, "ramSize": 512, "gpuNumber": 0,
    "containerPortInfoList": [{"protocolType": "SSH", "containerPort": 22}],
}
# Bad bodies: the documented codes, and nothing stored.
before = env(requests.get(svc + "/task", headers=H, data=json.dumps({"limit": 100, "sort": "desc", "start": 0})))["data"]["total"]
for key in ["instanceServiceName", "cpuNumber", "timeoutLimit", "taskType"]:
    bad = dict(create)
    del bad[key]
    b = env(requests.post(svc + "/task", headers=H, data=json.dumps(bad)))
    check(b["code"] == "10003" and key in b["msg"], "missing %s: %s" % (key, b))
for key, value in [("cpuNumber", "lots"), ("ramSize", 10**30), ("taskNumber", 0), ("timeoutLimit", "1h"), ("gpuNumber", 4096)]:
    bad = dict(create)
    bad[key] = value
    b = env(requests.post(svc + "/task", headers=H, data=json.dumps(bad)))
    check(b["code"] == "10004" and key in b["msg"], "%s=%r: %s" % (key, value, b))
b = env(requests.post(svc + "/task", headers=H, data=json.dumps(dict(create, cpuNumber=4096))))
check(b["code"] == "10004" and "cpuNumber" in b["msg"], "absurd CPUs: %s" % b)
b = env(requests.post(svc + "/task", headers=H, data=json.dumps(dict(create, taskType="codeserver"))))
check(b["code"] == "10004" and "codeserver" in b["msg"] and "not configured" in b["msg"], "codeserver without the app: %s" % b)
b = env(requests.post(svc + "/task", headers=H, data=json.dumps(dict(create, acceleratorType="dcu", gpuNumber=0))))
check(b["code"] == "10004" and "dcu" in b["msg"], "dcu: %s" % b)
b = env(requests.post(svc + "/task", headers=H, data="{not json"))
check(b["code"] == "10004", "not JSON: %s" % b)
after = env(requests.get(svc + "/task", headers=H, data=json.dumps({"limit": 100, "sort": "desc", "start": 0})))["data"]["total"]
check(before == after, "nothing stored by bad bodies (%d, %d)" % (before, after))

b = env(requests.post(svc + "/task", headers=H, data=json.dumps(create)))
check(b["code"] == "0" and isinstance(b["data"], str), "create: %s" % b)
iid = b["data"]
# A lease shorter than Canopy's minute is refused, naming the field; one of a minute runs out while the rest goes on.
b = env(requests.post(svc + "/task", headers=H, data=json.dumps(dict(create, instanceServiceName="short", timeoutLimit="00:00:03"))))
check(b["code"] == "10004" and "timeoutLimit" in b["msg"], "a 3 s lease: %s" % b)
short = env(requests.post(svc + "/task", headers=H, data=json.dumps(dict(create, instanceServiceName="short", timeoutLimit="00:01:00", useStartScript=False))))
check(short["code"] == "0", "short: %s" % short)


def detail(i, headers=H):
    return env(requests.get(svc + "/%s/detail" % i, headers=headers))


deadline = time.time() + 30
while True:
    d = detail(iid)["data"]
    if d["status"] == "Running":
        break
    check(d["status"] in ("Waiting", "Deploying") and time.time() < deadline, "to Running: %s" % d["status"])
    time.sleep(0.3)
for key in ["id", "instanceServiceName", "resourceSpec", "createTime", "startTime", "remainingTime", "containerPortInfoList", "timeoutLimit", "taskType"]:
    check(key in d, "detail has %s" % key)
check(d["resourceSpec"] == "1 核心; 0 加速器; 0.5G 内存", "resourceSpec: %s" % d["resourceSpec"])
check(len(d["createTime"]) == 19 and d["createTime"][4] == "-" and d["createTime"][10] == " ", "createTime: %s" % d["createTime"])
check(d["remainingTime"].startswith("00:5"), "remainingTime: %s" % d["remainingTime"])
ssh = [p for p in d["containerPortInfoList"] if p["protocolType"] == "SSH"]
check(ssh and ssh[0]["accessUrl"].startswith("ssh://%s@" % iid) and ssh[0]["containerPort"] == "22", "ssh accessUrl: %s" % d)
print("SSH", ssh[0]["accessUrl"])

# Listing: a JSON body on GET, as the docs send it, and query parameters.
l = env(requests.get(svc + "/task", headers=H, data=json.dumps({"limit": 10, "sort": "desc", "start": 0, "instanceServiceName": ["client-ssh"], "status": "Running"})))
check(l["data"]["total"] == 1 and l["data"]["list"][0]["id"] == iid, "list with a body: %s" % l)
l = env(requests.get(svc + "/task", headers=H, data=json.dumps({"limit": 1, "sort": "desc", "start": 0})))
check(l["data"]["total"] == 2 and len(l["data"]["list"]) == 1 and l["data"]["list"][0]["instanceServiceName"] == "short", "paging: %s" % l)
l = env(requests.get(svc + "/task", headers=H, params={"limit": 10, "sort": "desc", "taskType": "jupyter"}))
check(all(i["taskType"] == "jupyter" for i in l["data"]["list"]), "list by taskType")
check(env(requests.get(svc + "/task", headers=H, data=json.dumps({"sort": "desc"})))["code"] == "10003", "list without limit is 10003")

# Another tenant's instance looks missing, everywhere.
b = env(requests.post(base + "/ac/openapi/v2/tokens", headers={"user": other_user, "password": other_password, "orgId": other_org}))
check(b["code"] == "0", "the other tenant signs in: %s" % b)
O = {"token": b["data"][0]["token"]}
check(detail(iid, O)["code"] == "10004", "another tenant's detail")
check(env(requests.post(svc + "/task/actions/stop", headers=O, params={"ids": iid}))["code"] == "10004", "another tenant's stop")
check(env(requests.delete(svc + "/task", headers=O, params={"ids": [iid]}))["code"] == "10004", "another tenant's delete")
check(detail(iid)["data"]["status"] == "Running", "still running after the other tenant's tries")

b = env(requests.post(svc + "/task/actions/execute-script", headers=H, data=json.dumps({"id": iid, "startScriptContent": "echo from-execute > executed.txt", "startScriptActionScope": "header"})))
check(b["code"] == "0", "execute-script: %s" % b)
t0 = time.time()
b = env(requests.post(svc + "/task/actions/execute-script", headers=H, data=json.dumps({"id": iid, "startScriptContent": "sleep 30"}), timeout=25))
check(b["code"] == "0" and time.time() - t0 < 15, "a long script is answered after 10 s and runs on: %s in %.1f s" % (b, time.time() - t0))
b = env(requests.post(svc + "/task/actions/execute-script", headers=H, data=json.dumps({"id": iid, "startScriptContent": "exit 3"})))
check(b["code"] == "716864" and "3" in b["msg"], "a failing script is 716864 with its status: %s" % b)
b = env(requests.post(svc + "/task/actions/execute-script", headers=H, data=json.dumps({"id": iid})))
check(b["code"] == "10003" and "startScriptContent" in b["msg"], "execute-script without a script: %s" % b)
b = env(requests.delete(svc + "/task", headers=H, params={"ids": iid}))
check(b["code"] == "716866", "deleting a running instance is refused: %s" % b)

b = env(requests.post(svc + "/task/actions/stop", headers=H, params={"ids": [iid]}))
check(b["code"] == "0", "stop: %s" % b)
deadline = time.time() + 30
while detail(iid)["data"]["status"] != "Terminated":
    check(time.time() < deadline, "to Terminated")
    time.sleep(0.3)
b = env(requests.post(svc + "/task/actions/restart", headers=H, params={"instanceServiceId": iid}))
check(b["code"] == "0" and b["data"] == iid, "restart: %s" % b)
deadline = time.time() + 30
while detail(iid)["data"]["status"] != "Running":
    check(time.time() < deadline, "restarted to Running")
    time.sleep(0.3)
print("ID", iid)

# The lease of a minute has ended its instance by now (Terminated), and it can be deleted.
deadline = time.time() + 120
while detail(short["data"])["data"]["status"] != "Terminated":
    check(time.time() < deadline, "the lease of 1 minute ended the instance")
    time.sleep(1)
b = env(requests.delete(svc + "/task", headers=H, params={"ids": short["data"]}))
check(b["code"] == "0", "delete: %s" % b)
check(detail(short["data"])["code"] == "10004", "deleted")
print("TOKEN", token)
print("OK")
