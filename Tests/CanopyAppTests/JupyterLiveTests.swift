import CanopyCore
import CanopyTesting
import Foundation
import Testing

/// A real JupyterLab (`scripts/test.sh` installs one into /opt/canopy-test/jupyter) started by `canopy jupyter`,
/// used through the proxy as a browser and JupyterLab's frontend would: REST calls, a login link, a kernel over its
/// WebSocket, a file upload.
@Suite("JupyterLab through canopy jupyter and the proxy, live", .serialized, .enabled(if: LiveJupyter.enabled, "needs the JupyterLab scripts/test.sh installs"))
struct JupyterLiveTests {
    static let venv = LiveJupyter.venv

    /// Python lines that open a WebSocket on the connected socket `s` to `url` (a urlsplit), sending the header line
    /// `auth`: the RFC 6455 handshake by hand; what followed the answer's head is left in `buf`.
    static let kernelClient = JupyterClients.kernel
    static let terminalClient = JupyterClients.terminal

    static func create(_ url: String, field: String, token: String) async throws -> String {
        try await JupyterClients.create(url, field: field, token: token)
    }

    @Test(
        "canopy jupyter: JupyterLab answers through the proxy by token and by login link, runs code in a kernel over its WebSocket, takes an upload; its own port refuses anyone without its token"
    )
    func jupyter() async throws {
        try await ServerProcess.with(dataDir: try makeTempDir("canopy-jupyter"), removeAfter: true) { server in
            let started = try await server.cli(["jupyter", "--env", "PATH=\(Self.venv)/bin:/usr/bin:/bin", "--lease", "1h", "--memory", "2Gi"])
            try #require(started.status == 0, "\(started)")
            let lines = started.stdout.split(separator: "\n").map(String.init)
            let id = lines.first ?? ""
            let url = lines.first { $0.hasPrefix("url:") }.map { $0.dropFirst(4).trimmingCharacters(in: .whitespaces) } ?? ""
            let login = lines.first { $0.hasPrefix("login:") }.map { $0.dropFirst(6).trimmingCharacters(in: .whitespaces) } ?? ""
            #expect(url.hasSuffix("/proxy/\(id)/0/8888/") && login.hasPrefix(url + "?canopy-login="), "\(started)")
            let show = try await server.cli(["show", id, "-o", "json"])
            let w = (try? JSONSerialization.jsonObject(with: Data(show.stdout.utf8))) as? [String: Any] ?? [:]
            let spec = w["spec"] as? [String: Any] ?? [:]
            #expect(spec["app"] as? String == "jupyter" && spec["kind"] as? String == "interactive")
            #expect(!show.stdout.contains("JUPYTER_TOKEN"), "the app's secret is not shown")

            let auth = "Authorization=Bearer \(server.token)"
            let status = try await ProxyLiveTests.call("get", url + "api/status", [auth])
            #expect(status.status == 200 && status.json["started"] != nil, "\(status)")

            // A browser: the login link, then the cookie alone; JupyterLab's page under the proxy path.
            let redirect = try await ProxyLiveTests.call("get", login)
            let cookie = String((redirect.headers["set-cookie"] as? String ?? "").split(separator: ";").first ?? "")
            #expect(redirect.status == 303 && !cookie.isEmpty, "\(redirect)")
            let lab = try await ProxyLiveTests.call("get", url + "lab", ["Cookie=\(cookie)"])
            #expect(lab.status == 200 && lab.body.contains("/proxy/\(id)/0/8888/"), "\(lab.status) \(lab.body.prefix(300))")

            // A kernel, and code run in it over its WebSocket.
            let kernelID = try await Self.create(url + "api/kernels", field: "id", token: server.token)
            let ws = url.replacingOccurrences(of: "http://", with: "http://") + "api/kernels/\(kernelID)/channels"
            let ran = try await runProcess(pythonPath, ["-c", Self.kernelClient, ws, "Authorization: Bearer \(server.token)", "print(6*7)"])
            #expect(ran.stdout == "42\n", "\(ran)")
            let viaCookie = try await runProcess(pythonPath, ["-c", Self.kernelClient, ws, "Cookie: \(cookie)", "import os; print(os.getcwd())"])
            #expect(viaCookie.stdout.hasSuffix("/workloads/\(id)/task-0/work\n"), "\(viaCookie)")

            // An upload through the contents API lands in the task's working directory.
            let put = try await runProcess(
                pythonPath,
                [
                    "-c",
                    "import sys, json, urllib.request; r = urllib.request.urlopen(urllib.request.Request(sys.argv[1] + 'api/contents/hello.txt', data=json.dumps({'type': 'file', 'format': 'text', 'content': 'hi from the proxy'}).encode(), method='PUT', headers={'Authorization': 'Bearer ' + sys.argv[2], 'Content-Type': 'application/json'})); print(r.status)",
                    url, server.token,
                ])
            #expect(put.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "201", "\(put)")
            let uploaded = server.dataDir + "/workloads/\(id)/task-0/work/hello.txt"
            #expect((try? String(contentsOfFile: uploaded, encoding: .utf8)) == "hi from the proxy")

            // A terminal: a line typed over its WebSocket saves a file in the working directory.
            let terminalName = try await Self.create(url + "api/terminals", field: "name", token: server.token)
            let typed = try await runProcess(
                pythonPath,
                [
                    "-c", Self.terminalClient, url + "terminals/websocket/\(terminalName)", "Authorization: Bearer \(server.token)",
                    "echo saved-from-a-terminal > term.txt && echo TERM-$((40+2))", "TERM-42",
                ])
            #expect(typed.stdout.contains("TERM-42"), "\(typed)")
            let saved = server.dataDir + "/workloads/\(id)/task-0/work/term.txt"
            #expect(await eventually(timeout: .seconds(5)) { (try? String(contentsOfFile: saved, encoding: .utf8)) == "saved-from-a-terminal\n" })

            // JupyterLab's own port, straight from this machine without the token, is closed to anyone else.
            let direct = try await ProxyLiveTests.call("get", "http://127.0.0.1:8888/proxy/\(id)/0/8888/api/status")
            #expect(direct.status == 403, "\(direct)")

            _ = try await server.cli(["stop", id])
            #expect(try await eventually(timeout: .seconds(30)) { try await server.phase(id) == "Stopped" })
        }
    }

    @Test("idle stop asks JupyterLab: a kernel busy in a cell that only sleeps keeps its instance up (activity source kernel); once idle, it is stopped")
    func busyKernel() async throws {
        try await ServerProcess.with(dataDir: try makeTempDir("canopy-jupyter-idle"), removeAfter: true) { server in
            #expect(try await server.cli(["queues", "create", "notebooks", "--idle-timeout", "10s"]).status == 0)
            let started = try await server.cli(["jupyter", "--queue", "notebooks", "--env", "PATH=\(Self.venv)/bin:/usr/bin:/bin", "--memory", "2Gi"])
            try #require(started.status == 0, "\(started)")
            let lines = started.stdout.split(separator: "\n").map(String.init)
            let id = lines.first ?? ""
            let url = lines.first { $0.hasPrefix("url:") }.map { $0.dropFirst(4).trimmingCharacters(in: .whitespaces) } ?? ""
            let kernelID = try await Self.create(url + "api/kernels", field: "id", token: server.token)
            // A cell that sleeps 24 s: no CPU, no traffic, yet the kernel is busy.
            async let cell = runProcess(
                pythonPath,
                [
                    "-c", Self.kernelClient, url + "api/kernels/\(kernelID)/channels", "Authorization: Bearer \(server.token)",
                    "import time; time.sleep(24); print('woke')",
                ])
            try await Task.sleep(for: .seconds(18))
            let show = try await server.cli(["show", id, "-o", "json"])
            let w = (try? JSONSerialization.jsonObject(with: Data(show.stdout.utf8))) as? [String: Any] ?? [:]
            #expect(
                w["phase"] as? String == "Running" && w["lastActivitySource"] as? String == "kernel", "\(w["phase"] ?? "") \(w["lastActivitySource"] ?? "")")
            let ran = try await cell
            #expect(ran.stdout == "woke\n", "\(ran)")
            // Nothing runs any more: stopped once the timeout has passed.
            #expect(try await eventually(timeout: .seconds(40)) { try await server.phase(id) == "Stopped" })
        }
    }
}
