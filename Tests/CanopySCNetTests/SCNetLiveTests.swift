import CanopyCore
import CanopyTesting
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The SCNet dialect through a live server, driven by a client written from the vendor's docs (Python `requests`).
@Suite("SCNet dialect, live: a docs client's round trip, SSH into its instance, tokens revoked by a password change", .serialized)
struct SCNetLiveTests {
    static let client = scnetFixtures.appendingPathComponent("client.py").path
    static let hasRequests = (try? runProcessBlocking("/usr/bin/python3", ["-c", "import requests"]).status) == 0

    static func orgID(_ server: ServerProcess, _ tenant: String) async throws -> String {
        let ls = try await server.cli(["tenants", "ls", "-o", "json"])
        let items = try JSONSerialization.jsonObject(with: Data(ls.stdout.utf8)) as? [[String: Any]] ?? []
        return try #require(items.first { $0["name"] as? String == tenant }?["id"] as? String, "\(ls)")
    }

    @Test(
        "token by password, the center's region URL, bad bodies refused with nothing stored, an ssh instance created, listed, scripted, stopped, restarted; another tenant sees nothing; a lease of a minute ends an instance",
        .enabled(if: SCNetLiveTests.hasRequests, "needs python3-requests (scripts/test.sh installs it)"))
    func roundTrip() async throws {
        let ssh = getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/bin/ssh")
        try await ServerProcess.with(dataDir: try makeTempDir("canopy-scnet"), removeAfter: true, extra: ["--ssh-port", "0"]) { server in
            #expect(try await server.cli(["users", "create", "alice", "--tenant", "lab", "--password-stdin"], stdin: "alice-password-1\n").status == 0)
            #expect(try await server.cli(["users", "create", "bob", "--tenant", "other", "--password-stdin"], stdin: "bob-password-1\n").status == 0)
            let short = try await server.cli(["users", "create", "carol", "--tenant", "lab", "--password-stdin"], stdin: "short\n")
            #expect(short.status != 0 && short.stderr.contains("password"), "\(short)")
            let users = try await server.cli(["users", "ls"])
            #expect(users.stdout.contains("alice") && users.stdout.contains("yes"), "\(users)")
            let lab = try await Self.orgID(server, "lab"), other = try await Self.orgID(server, "other")

            let run = try await runProcess("/usr/bin/python3", [Self.client, server.url, "alice", "alice-password-1", lab, "bob", "bob-password-1", other])
            #expect(run.status == 0 && run.stdout.hasSuffix("OK\n"), "\(run.stdout)\n\(run.stderr)")
            let lines = run.stdout.split(separator: "\n").map(String.init)
            let id = try #require(lines.first { $0.hasPrefix("ID ") }.map { String($0.dropFirst(3)) })
            let token = try #require(lines.first { $0.hasPrefix("TOKEN ") }.map { String($0.dropFirst(6)) })

            // One object: the instance is a Canopy interactive workload of alice's, in her tenant.
            let shown = try await server.cli(["show", id, "-o", "json"])
            let json = try #require(try JSONSerialization.jsonObject(with: Data(shown.stdout.utf8)) as? [String: Any])
            #expect(json["tenant"] as? String == "lab" && json["owner"] as? String == "alice" && json["phase"] as? String == "Running", "\(shown.stdout)")
            #expect((json["spec"] as? [String: Any])?["labels"] as? [String: String] ?? [:] == [:], "vendor fields stay out of the labels")
            // The start script ran before the service, on the restart too; execute-script ran in task 0.
            let files = try await server.cli(["exec", id, "--", "sh", "-c", "cat started.txt executed.txt"])
            #expect(files.stdout == "from-start-script\nfrom-execute\n", "\(files)")

            if ssh {
                // SSH with alice's registered key into the instance (the accessUrl's target).
                let dir = try makeTempDir("canopy-scnet-ssh")
                _ = try await runProcess("/usr/bin/ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", "\(dir)/key"])
                let aliceToken = try await server.cli(["tokens", "create", "--user", "alice", "--tenant", "lab"]).stdout
                    .split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.first { $0.hasPrefix("cnp_") } ?? ""
                #expect(try await server.cli(["ssh-keys", "add", "\(dir)/key.pub"], token: aliceToken).status == 0)
                let target = try #require(lines.first { $0.hasPrefix("SSH ssh://") }.map { String($0.dropFirst(4)) })
                let port = try #require(target.split(separator: ":").last.map(String.init))
                let out = try await runProcess(
                    "/usr/bin/ssh",
                    ["-p", port, "-i", "\(dir)/key", "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                     "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "\(id)@127.0.0.1", "cat started.txt"], env: ["HOME": dir])
                #expect(out.status == 0 && out.stdout == "from-start-script\n", "\(out)")
            }

            // A new password revokes the tokens issued before it.
            func state(_ t: String) async throws -> String {
                try await runProcess("/usr/bin/curl", ["-s", "-H", "token: \(t)", server.url + "/ac/openapi/v2/tokens/state"]).stdout
            }
            #expect(try await state(token).contains("\"code\":\"0\""))
            #expect(try await server.cli(["users", "passwd", "alice", "--tenant", "lab", "--password-stdin"], stdin: "alice-password-2\n").status == 0)
            let revoked = try await state(token)
            #expect(revoked.contains("\"code\":\"10009\"") && revoked.contains("revoked"), "\(revoked)")
            _ = try await server.cli(["stop", id])
        }
    }

    @Test(
        "a jupyter instance (JupyterLab from a host directory, as an admin's app): its accessUrl opens with the SCNet token, runs code in a kernel; /url's login link works in a browser",
        .enabled(if: LiveJupyter.enabled && SCNetLiveTests.hasRequests, "needs the JupyterLab and python3-requests scripts/test.sh installs"))
    func jupyter() async throws {
        let dir = try makeTempDir("canopy-scnet-jupyter")
        // An admin's jupyter: the built-in one's command and secret handling, from the host's JupyterLab.
        var app = AppDefinition.jupyter
        app.command[0] = LiveJupyter.venv + "/bin/jupyter"
        try JSONEncoder().encode([app]).write(to: URL(fileURLWithPath: dir + "/apps.json"))
        try await ServerProcess.with(dataDir: dir + "/data", removeAfter: true, extra: ["--apps", dir + "/apps.json"]) { server in
            #expect(try await server.cli(["users", "create", "alice", "--tenant", "lab", "--password-stdin"], stdin: "alice-password-1\n").status == 0)
            let org = try await Self.orgID(server, "lab")
            let script = """
                import json, sys, time, requests
                base, org = sys.argv[1], sys.argv[2]
                token = requests.post(base + "/ac/openapi/v2/tokens", headers={"user": "alice", "password": "alice-password-1", "orgId": org}).json()["data"][1]["token"]
                H = {"token": token}
                svc = base + "/ai/openapi/v2/instance-service"
                body = {"instanceServiceName": "nb", "taskType": "jupyter", "acceleratorType": "cpu", "version": "jupyter:lab",
                        "imagePath": "registry.example/jupyter:lab", "timeoutLimit": "02:00:00", "taskNumber": 1, "resourceGroup": "default",
                        "useStartScript": False, "startScriptActionScope": "all", "startScriptContent": "", "cpuNumber": 1, "ramSize": 2048, "gpuNumber": 0}
                r = requests.post(svc + "/task", headers=H, json=body).json()
                assert r["code"] == "0", r
                iid = r["data"]
                end = time.time() + 60
                while True:
                    d = requests.get(svc + "/%s/detail" % iid, headers=H).json()["data"]
                    urls = [p["accessUrl"] for p in d["containerPortInfoList"] if p["protocolType"] == "HTTP" and p["accessUrl"]]
                    if d["status"] == "Running" and urls:
                        s = requests.get(urls[0] + "api/status", headers={"Authorization": "Bearer " + token})
                        if s.status_code == 200: break
                    assert time.time() < end, d
                    time.sleep(0.5)
                assert requests.get(urls[0] + "api/status").status_code == 401, "no credentials, no entry"
                link = requests.get(svc + "/%s/url" % iid, headers=H).json()["data"]["url"]
                browser = requests.Session()
                assert browser.get(link).status_code == 200 and browser.get(urls[0] + "api/status").status_code == 200, "the login link's cookie"
                print(iid)
                print(token)
                print(urls[0])
                """
            let run = try await runProcess("/usr/bin/python3", ["-c", script, server.url, org])
            #expect(run.status == 0, "\(run.stdout)\n\(run.stderr)")
            let out = run.stdout.split(separator: "\n").map(String.init)
            guard out.count == 3 else { return }
            let (id, token, url) = (out[0], out[1], out[2])
            let kernel = try await JupyterClients.create(url + "api/kernels", field: "id", token: token)
            let ws = url.replacingOccurrences(of: "http://", with: "ws://") + "api/kernels/\(kernel)/channels"
            let ran = try await runProcess("/usr/bin/python3", ["-c", JupyterClients.kernel, ws, "Authorization: Bearer \(token)", "print(6*7)"])
            #expect(ran.status == 0 && ran.stdout == "42\n", "\(ran)")
            _ = try await server.cli(["stop", id])
        }
    }
}
