import CanopyCore
import CanopyTesting
import Foundation
import Testing

/// A real JupyterLab (`scripts/test.sh` installs one into /opt/canopy-test/jupyter) started by `canopy jupyter`,
/// used through the proxy as a browser and JupyterLab's frontend would: REST calls, a login link, a kernel over its
/// WebSocket, a file upload.
enum LiveJupyter {
    static let venv = "/opt/canopy-test/jupyter"
    /// Installed, or required (then a missing one fails the suite rather than skipping it).
    static var enabled: Bool {
        FileManager.default.isExecutableFile(atPath: venv + "/bin/jupyter") || ProcessInfo.processInfo.environment["CANOPY_REQUIRE_JUPYTER"] == "1"
    }
}

@Suite("JupyterLab through canopy jupyter and the proxy, live", .serialized, .enabled(if: LiveJupyter.enabled, "needs the JupyterLab scripts/test.sh installs"))
struct JupyterLiveTests {
    static let venv = LiveJupyter.venv

    /// Python lines that open a WebSocket on the connected socket `s` to `url` (a urlsplit), sending the header line
    /// `auth`: the RFC 6455 handshake by hand; what followed the answer's head is left in `buf`.
    static let webSocketHandshake = """
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall(("GET %s HTTP/1.1\\r\\nHost: %s:%d\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\nSec-WebSocket-Key: %s\\r\\n"
                   "Sec-WebSocket-Version: 13\\r\\n%s\\r\\n\\r\\n" % (url.path, url.hostname, url.port, key, auth)).encode())
        buf = b""
        while b"\\r\\n\\r\\n" not in buf: buf += s.recv(4096)
        head, buf = buf.split(b"\\r\\n\\r\\n", 1)
        if b" 101 " not in head.split(b"\\r\\n")[0]: print("HANDSHAKE", head.decode()); sys.exit(1)
        """

    /// Runs code in a kernel over the kernel's WebSocket (Python's standard library only: the RFC 6455 handshake and
    /// framing by hand), authenticated as the caller: a bearer token or a cookie. Prints what the kernel printed.
    static let kernelClient = """
        import base64, json, os, socket, struct, sys, urllib.parse, uuid
        url, auth, code = urllib.parse.urlsplit(sys.argv[1]), sys.argv[2], sys.argv[3]
        s = socket.create_connection((url.hostname, url.port), timeout=60)
        \(webSocketHandshake)
        def send(obj):
            data = json.dumps(obj).encode(); mask = os.urandom(4)
            n = len(data)
            header = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack(">H", n) if n < 65536 else bytes([0x80 | 127]) + struct.pack(">Q", n))
            s.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))
        def recv():
            global buf
            def need(k):
                global buf
                while len(buf) < k:
                    d = s.recv(65536)
                    if not d: raise EOFError
                    buf += d
            need(2); op, n = buf[0] & 0x0f, buf[1] & 0x7f; off = 2
            if n == 126: need(4); n = struct.unpack(">H", buf[2:4])[0]; off = 4
            elif n == 127: need(10); n = struct.unpack(">Q", buf[2:10])[0]; off = 10
            need(off + n); data = buf[off:off + n]; buf = buf[off + n:]
            return op, data
        msg_id = uuid.uuid4().hex
        send({"header": {"msg_id": msg_id, "username": "test", "session": uuid.uuid4().hex, "msg_type": "execute_request", "version": "5.3", "date": ""},
              "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
              "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {}, "allow_stdin": False, "stop_on_error": True}})
        out = ""
        while True:
            op, data = recv()
            if op == 8: break
            if op != 1: continue
            m = json.loads(data)
            if m.get("parent_header", {}).get("msg_id") != msg_id: continue
            if m["msg_type"] == "stream": out += m["content"]["text"]
            if m["msg_type"] == "status" and m["content"]["execution_state"] == "idle": break
        print(out, end="")
        """

    /// POSTs `{}` to a JupyterLab collection (`api/kernels`, `api/terminals`) with a bearer token; the new
    /// object's `field`.
    static func create(_ url: String, field: String, token: String) async throws -> String {
        let made = try await runProcess(
            pythonPath,
            [
                "-c",
                "import sys, json, urllib.request; r = urllib.request.urlopen(urllib.request.Request(sys.argv[1], data=b'{}', method='POST', headers={'Authorization': 'Bearer ' + sys.argv[2], 'Content-Type': 'application/json'})); print(json.load(r)[sys.argv[3]])",
                url, token, field,
            ])
        let value = made.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(made.status == 0 && !value.isEmpty, "\(made)")
        return value
    }

    /// Types a line into a JupyterLab terminal over its WebSocket (`["stdin", ...]` messages) and waits until the
    /// terminal echoes `marker` back, or 20 seconds pass; prints what it saw.
    static let terminalClient = """
        import base64, json, os, socket, struct, sys, time, urllib.parse
        url, auth, line, marker = urllib.parse.urlsplit(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
        s = socket.create_connection((url.hostname, url.port), timeout=20)
        \(webSocketHandshake)
        data = json.dumps(["stdin", line + "\\r"]).encode(); mask = os.urandom(4)
        s.sendall(bytes([0x81, 0x80 | len(data)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))
        seen, end = "", time.time() + 20
        while time.time() < end and marker not in seen:
            d = s.recv(65536)
            if not d: break
            buf += d
            while len(buf) >= 2:
                n, off = buf[1] & 0x7f, 2
                if n == 126: n, off = struct.unpack(">H", buf[2:4])[0], 4
                elif n == 127: n, off = struct.unpack(">Q", buf[2:10])[0], 10
                if len(buf) < off + n: break
                payload, buf = buf[off:off + n], buf[off + n:]
                try: seen += "".join(str(x) for x in json.loads(payload)[1:])
                except Exception: pass
        print(seen)
        """

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
                pythonPath, ["-c", Self.terminalClient, url + "terminals/websocket/\(terminalName)", "Authorization: Bearer \(server.token)", "echo saved-from-a-terminal > term.txt && echo TERM-$((40+2))", "TERM-42"])
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
                pythonPath, ["-c", Self.kernelClient, url + "api/kernels/\(kernelID)/channels", "Authorization: Bearer \(server.token)", "import time; time.sleep(24); print('woke')"])
            try await Task.sleep(for: .seconds(18))
            let show = try await server.cli(["show", id, "-o", "json"])
            let w = (try? JSONSerialization.jsonObject(with: Data(show.stdout.utf8))) as? [String: Any] ?? [:]
            #expect(w["phase"] as? String == "Running" && w["lastActivitySource"] as? String == "kernel", "\(w["phase"] ?? "") \(w["lastActivitySource"] ?? "")")
            let ran = try await cell
            #expect(ran.stdout == "woke\n", "\(ran)")
            // Nothing runs any more: stopped once the timeout has passed.
            #expect(try await eventually(timeout: .seconds(40)) { try await server.phase(id) == "Stopped" })
        }
    }
}
