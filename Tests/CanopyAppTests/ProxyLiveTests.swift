import CanopyCore
import CanopyTesting
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The proxy listener against a real `canopy serve`, a real task serving HTTP (Python's standard library) and
/// real HTTP clients over sockets: authentication, login links, tenancy, streaming both ways, upgrades.
@Suite("the proxy to tasks' ports, live", .serialized)
struct ProxyLiveTests {
    /// What the task serves: echoes what it received (path, headers), hashes uploads (chunked or not), streams
    /// downloads of any size, and answers an Upgrade with 101, then echoes bytes upper-cased.
    static let upstream = """
        import sys, json, hashlib, http.server, socketserver
        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            def log_message(self, *a): pass
            def send_json(self, obj):
                body = json.dumps(obj).encode()
                self.send_response(200); self.send_header("Content-Type", "application/json"); self.send_header("Content-Length", str(len(body)))
                if "closeme" in self.path: self.send_header("Connection", "close"); self.close_connection = True
                self.send_header("Set-Cookie", "app=1; Path=/proxy/"); self.send_header("X-Upstream", "yes"); self.end_headers(); self.wfile.write(body)
            def do_GET(self):
                if self.headers.get("Upgrade") and "noupgrade" not in self.path:
                    self.send_response(101); self.send_header("Upgrade", self.headers["Upgrade"]); self.send_header("Connection", "Upgrade")
                    if self.headers.get("Sec-WebSocket-Protocol"): self.send_header("Sec-WebSocket-Protocol", self.headers["Sec-WebSocket-Protocol"].split(",")[0].strip())
                    self.end_headers(); self.wfile.flush()
                    while True:
                        d = self.connection.recv(65536)
                        if not d: break
                        self.connection.sendall(d.upper())
                    self.close_connection = True; return
                if "/big" in self.path:
                    n = int(self.path.split("n=")[1]); chunk = bytes(range(256)) * 256
                    self.send_response(200); self.send_header("Content-Length", str(n)); self.end_headers()
                    sent = 0
                    while sent < n:
                        k = min(len(chunk), n - sent); self.wfile.write(chunk[:k]); sent += k
                    return
                self.send_json({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}})
            def do_POST(self):
                h = hashlib.sha256(); total = 0
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    while True:
                        size = int(self.rfile.readline().strip().split(b";")[0], 16)
                        if size == 0: self.rfile.readline(); break
                        data = self.rfile.read(size); h.update(data); total += len(data); self.rfile.readline()
                else:
                    n = int(self.headers.get("Content-Length", "0"))
                    while n > 0:
                        data = self.rfile.read(min(n, 1 << 20)); h.update(data); total += len(data); n -= len(data)
                self.send_json({"bytes": total, "sha256": h.hexdigest()})
        class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True; allow_reuse_address = True
        S(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
        """

    /// A client over http.client and raw sockets; prints the status, the response headers as JSON, then the body
    /// (or a digest of it).
    static let client = """
        import sys, json, hashlib, http.client, socket, urllib.parse
        mode, url = sys.argv[1], urllib.parse.urlsplit(sys.argv[2])
        headers = dict(h.split("=", 1) for h in sys.argv[3:] if "=" in h)
        target = url.path + ("?" + url.query if url.query else "")
        if mode == "raw":
            # sys.argv[3]: what to send, with {T} for the path and | where to pause 300 ms; prints all it reads until EOF.
            s = socket.create_connection((url.hostname, url.port), timeout=10)
            pieces = sys.argv[3].replace("{T}", target).replace("CRLF", "\\r\\n").split("|")
            for i, piece in enumerate(pieces):
                if i: __import__("time").sleep(0.3)
                s.sendall(piece.encode())
            data = b""
            try:
                while True:
                    d = s.recv(65536)
                    if not d: break
                    data += d
            except socket.timeout:
                data += b"<TIMEOUT>"
            print(0); print("{}"); print(data.decode(errors="replace")); sys.exit(0)
        if mode == "upgrade":
            s = socket.create_connection((url.hostname, url.port), timeout=20)
            lines = ["GET %s HTTP/1.1" % target, "Host: %s:%d" % (url.hostname, url.port), "Connection: Upgrade", "Upgrade: websocket",
                     "Sec-WebSocket-Protocol: v1.kernel.websocket.jupyter.org, other"] + ["%s: %s" % kv for kv in headers.items()]
            s.sendall(("\\r\\n".join(lines) + "\\r\\n\\r\\n").encode() + b"early bytes;")
            data = b""
            while b"\\r\\n\\r\\n" not in data: data += s.recv(65536)
            head, rest = data.split(b"\\r\\n\\r\\n", 1)
            status = head.split(b" ")[1].decode()
            s.sendall(b"hello through the relay")
            want = len("early bytes;hello through the relay")
            while len(rest) < want:
                d = s.recv(65536)
                if not d: break
                rest += d
            print(status); print(json.dumps(head.decode())); print(rest.decode()); sys.exit(0)
        c = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
        if mode == "post":
            size = int(sys.argv[3]); headers = dict(h.split("=", 1) for h in sys.argv[4:])
            block = bytes(range(256)) * 4096
            def body():
                sent = 0
                while sent < size:
                    k = min(len(block), size - sent); yield block[:k]; sent += k
            c.request("POST", target, body=body(), headers=headers, encode_chunked=True)
        else:
            c.request("GET", target, headers=headers)
        r = c.getresponse()
        print(r.status); print(json.dumps({k.lower(): v for k, v in r.getheaders()}))
        if mode == "big":
            h = hashlib.sha256(); n = 0
            while True:
                d = r.read(1 << 20)
                if not d: break
                h.update(d); n += len(d)
            print(json.dumps({"bytes": n, "sha256": h.hexdigest()}))
        else:
            print(r.read().decode())
        """

    struct Reply {
        var status: Int
        var headers: [String: Any]
        var body: String
        var raw = ""
        var json: [String: Any] { (try? JSONSerialization.jsonObject(with: Data(body.utf8))) as? [String: Any] ?? [:] }
    }

    static func call(_ mode: String, _ url: String, _ args: [String] = []) async throws -> Reply {
        let r = try await runProcess(pythonPath, ["-c", client, mode, url] + args)
        let lines = r.stdout.split(separator: "\n", maxSplits: 2, omittingEmptySubsequences: false)
        guard lines.count >= 2, let status = Int(lines[0]) else { return Reply(status: 0, headers: [:], body: r.stdout + r.stderr) }
        let headers = (try? JSONSerialization.jsonObject(with: Data(lines[1].utf8), options: [.fragmentsAllowed])) as? [String: Any] ?? [:]
        return Reply(status: status, headers: headers, body: lines.count > 2 ? String(lines[2]) : "", raw: r.stdout)
    }

    /// A port nothing on this machine listens on.
    static func freePort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        return Int(UInt16(bigEndian: addr.sin_port))
    }

    @Test("HTTP and upgrades through the proxy: bearer and login-link access, owner only, streamed both ways, prefix kept, Canopy's credentials withheld")
    func proxy() async throws {
        try await ServerProcess.with(dataDir: try makeTempDir("canopy-proxy"), removeAfter: true) { server in
            let port = Self.freePort()
            let run = try await server.cli([
                "run", "-d", "--interactive", "--port", "\(port)/http", "--port", "9/tcp", "--", "python3", "-c", Self.upstream, String(port),
            ])
            #expect(run.status == 0, "\(run)")
            let id = run.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            // The access URL appears once the task runs.
            var base = ""
            #expect(
                try await eventually(timeout: .seconds(20)) {
                    let show = try await server.cli(["show", id, "-o", "json"])
                    let w = (try? JSONSerialization.jsonObject(with: Data(show.stdout.utf8))) as? [String: Any]
                    let task = (w?["tasks"] as? [[String: Any]])?.first
                    let endpoints = task?["endpoints"] as? [[String: Any]] ?? []
                    base = endpoints.first { $0["port"] as? Int == port }?["url"] as? String ?? ""
                    return !base.isEmpty && endpoints.contains { $0["port"] as? Int == 9 && $0["url"] == nil && $0["protocol"] as? String == "tcp" }
                })
            #expect(base.hasSuffix("/proxy/\(id)/0/\(port)/") && !base.contains(":\(server.url.split(separator: ":").last ?? "")/"), "\(base)")
            let human = try await server.cli(["show", id])
            #expect(human.stdout.contains("\(port)/http  \(base)"), "\(human.stdout)")
            let auth = "Authorization=Bearer \(server.token)"
            // The task may take a moment to listen: 502 until then.
            #expect(try await eventually(timeout: .seconds(20)) { try await Self.call("get", base + "echo", [auth]).status == 200 })

            // Bearer: the path arrives whole, the bearer header and Canopy's cookie do not, the task's cookie does.
            let echo = try await Self.call("get", base + "echo?x=1", [auth, "Cookie=canopy-session=stolen; mine=2"])
            #expect(echo.status == 200 && echo.headers["x-upstream"] as? String == "yes", "\(echo)")
            let seen = echo.json["headers"] as? [String: String] ?? [:]
            #expect(echo.json["path"] as? String == "/proxy/\(id)/0/\(port)/echo?x=1")
            #expect(seen["authorization"] == nil && seen["cookie"] == "mine=2", "\(seen)")
            #expect(seen["x-forwarded-prefix"] == "/proxy/\(id)/0/\(port)" && seen["x-forwarded-for"] == "127.0.0.1", "\(seen)")

            // No credentials, a wrong token, another tenant, an undeclared port, a TCP port, a path that is no proxy path.
            #expect(try await Self.call("get", base + "echo").status == 401)
            #expect(try await Self.call("get", base + "echo", ["Authorization=Bearer cnp_nonsense"]).status == 401)
            let other = try await server.cli(["tokens", "create", "--user", "mallory", "--tenant", "other"])
            let otherToken = other.stdout.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.first { $0.hasPrefix("cnp_") } ?? ""
            #expect(!otherToken.isEmpty, "\(other)")
            let foreign = try await Self.call("get", base + "echo", ["Authorization=Bearer \(otherToken)"])
            #expect(foreign.status == 404, "\(foreign)")
            let colleague = try await server.cli(["tokens", "create", "--user", "carol", "--tenant", "default"])
            let colleagueToken = colleague.stdout.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.first { $0.hasPrefix("cnp_") } ?? ""
            #expect(try await Self.call("get", base + "echo", ["Authorization=Bearer \(colleagueToken)"]).status == 403)
            let root = String(base.dropLast("/proxy/\(id)/0/\(port)/".count))
            #expect(try await Self.call("get", root + "/proxy/\(id)/0/8999/", [auth]).status == 404)
            #expect(try await Self.call("get", root + "/proxy/\(id)/0/9/", [auth]).status == 400)
            #expect(try await Self.call("get", root + "/api/v1/workloads", [auth]).status == 404)
            #expect(try await Self.call("get", root + "/proxy/\(id)/0/\(port)", [auth]).status == 308)
            #expect(try await Self.call("get", root + "/proxy/\(id)/1/\(port)/", [auth]).status == 404)
            #expect(try await Self.call("get", root + "/proxy/\(id)/0/99999/", [auth]).status == 404)

            // A login link: once, for this workload only, a cookie scoped to its path.
            let open = try await server.cli(["open", id])
            let link = open.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(open.status == 0 && link.hasPrefix(base + "?canopy-login="), "\(open)")
            let login = try await Self.call("get", link)
            #expect(login.status == 303 && login.headers["location"] as? String == "/proxy/\(id)/0/\(port)/", "\(login)")
            let cookie = login.headers["set-cookie"] as? String ?? ""
            #expect(cookie.contains("Path=/proxy/\(id)/") && cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"), "\(cookie)")
            #expect(try await Self.call("get", link).status == 401, "a link works once")
            let session = String(cookie.split(separator: ";").first ?? "")
            let viaCookie = try await Self.call("get", base + "echo", ["Cookie=\(session)"])
            #expect(viaCookie.status == 200 && (viaCookie.json["headers"] as? [String: String])?["cookie"] == nil, "\(viaCookie)")
            // A page of another instance (same origin, path mode) may not use the cookie.
            let crossInstance = try await Self.call(
                "get", base + "echo", ["Cookie=\(session)", "Sec-Fetch-Site=same-origin", "Referer=\(root)/proxy/5nOtHeRiNsTaNcE00000/0/80/"])
            #expect(crossInstance.status == 403, "\(crossInstance)")
            let sameInstance = try await Self.call("get", base + "echo", ["Cookie=\(session)", "Sec-Fetch-Site=same-origin", "Referer=\(base)lab"])
            #expect(sameInstance.status == 200)

            // Streaming both ways: 64 MiB up (chunked), 256 MiB down.
            let upload = try await Self.call("post", base + "upload", [String(64 << 20), auth])
            let expectedUp = try await runProcess(pythonPath, ["-c", "import hashlib; print(hashlib.sha256((bytes(range(256))*4096)*64).hexdigest())"])
            #expect(upload.status == 200 && upload.json["bytes"] as? Int == 64 << 20, "\(upload)")
            #expect(upload.json["sha256"] as? String == expectedUp.stdout.trimmingCharacters(in: .whitespacesAndNewlines))
            let big = try await Self.call("big", base + "big?n=\(256 << 20)", [auth])
            #expect(big.status == 200, "\(big)")
            let digest = (try? JSONSerialization.jsonObject(with: Data(big.body.utf8))) as? [String: Any] ?? [:]
            let expectedDown = try await runProcess(pythonPath, ["-c", "import hashlib; print(hashlib.sha256((bytes(range(256))*256)*4096).hexdigest())"])
            #expect(digest["bytes"] as? Int == 256 << 20 && digest["sha256"] as? String == expectedDown.stdout.trimmingCharacters(in: .whitespacesAndNewlines))

            // A request head split over two reads; two requests pipelined in one write, each authorized and rewritten
            // on its own; an upgrade the task declines (the connection is closed after its answer).
            let bearer = "Authorization: Bearer \(server.token)"
            let split = try await Self.call("raw", base + "echo?split", ["GET {T} HTTP/1.1CRLFHost: xCRLF|\(bearer)CRLFConnection: closeCRLFCRLF"])
            #expect(split.body.hasPrefix("HTTP/1.1 200") && split.body.contains("echo?split"), "\(split.raw)")
            let two = "GET {T}?one HTTP/1.1CRLFHost: xCRLF\(bearer)CRLFCRLFGET {T}?two HTTP/1.1CRLFHost: xCRLF\(bearer)CRLFConnection: closeCRLFCRLF"
            let pipelined = try await Self.call("raw", base + "echo", [two])
            #expect(pipelined.raw.components(separatedBy: "HTTP/1.1 200").count == 3, "\(pipelined.raw)")
            #expect(pipelined.raw.contains("echo?two") && !pipelined.raw.contains("\"authorization\""), "\(pipelined.raw)")
            // The task closes its connection after a response (Connection: close): the next request, pipelined right
            // behind it, goes over a new one rather than failing.
            let closing = "GET {T}?closeme HTTP/1.1CRLFHost: xCRLF\(bearer)CRLFCRLFGET {T}?after HTTP/1.1CRLFHost: xCRLF\(bearer)CRLFConnection: closeCRLFCRLF"
            let afterClose = try await Self.call("raw", base + "echo", [closing])
            #expect(afterClose.raw.components(separatedBy: "HTTP/1.1 200").count == 3 && afterClose.raw.contains("echo?after"), "\(afterClose.raw)")
            let declined = try await Self.call(
                "raw", base + "noupgrade", ["GET {T} HTTP/1.1CRLFHost: xCRLFConnection: UpgradeCRLFUpgrade: websocketCRLF\(bearer)CRLFCRLF"])
            #expect(declined.raw.contains("HTTP/1.1 200") && !declined.raw.contains("<TIMEOUT>"), "\(declined.raw)")

            // An upgrade: 101 with the subprotocol the task chose, then bytes both ways (those sent early included).
            let ws = try await Self.call("upgrade", base + "ws", [auth])
            #expect(ws.status == 101, "\(ws)")
            #expect(ws.raw.contains("Sec-WebSocket-Protocol: v1.kernel.websocket.jupyter.org"), "\(ws.raw)")
            #expect(ws.body.contains("EARLY BYTES;HELLO THROUGH THE RELAY"), "\(ws)")

            // Once stopped, the port is gone.
            _ = try await server.cli(["stop", id])
            #expect(try await eventually(timeout: .seconds(20)) { try await server.phase(id) == "Stopped" })
            let gone = try await Self.call("get", base + "echo", [auth])
            #expect(gone.status == 503, "\(gone)")
        }
    }

    @Test("a port another user holds is not connected to, even when the workload declares it")
    func squatter() async throws {
        guard getuid() == 0 else { return }
        try await ServerProcess.with(dataDir: try makeTempDir("canopy-proxy-squat"), removeAfter: true) { server in
            let port = Self.freePort()
            // The test (root) listens first: the task's own server then cannot bind, and the proxy must not hand it root's listener.
            let squat = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            defer { close(squat) }
            var one: Int32 = 1
            setsockopt(squat, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_addr.s_addr = inet_addr("127.0.0.1")
            addr.sin_port = in_port_t(UInt16(port).bigEndian)
            let bound = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(squat, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            #expect(bound == 0 && listen(squat, 4) == 0)
            let run = try await server.cli(["run", "-d", "--interactive", "--port", String(port), "--", "sleep", "300"])
            let id = run.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(try await eventually(timeout: .seconds(20)) { try await server.phase(id) == "Running" })
            let root = try await server.cli(["open", id])
            let base = String(root.stdout.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: "?")[0])
            let r = try await Self.call("get", base, ["Authorization=Bearer \(server.token)"])
            #expect(r.status == 502 && r.body.contains("is not task 0's"), "\(r)")
            _ = try await server.cli(["stop", id])
        }
    }

    @Test("an admin's app: its command filled in per task, its secret handed to it at launch and presented by the proxy; an unknown app is a 400")
    func adminApp() async throws {
        let dir = try makeTempDir("canopy-apps")
        let script = """
            import os, sys, json, http.server
            port, base = int(sys.argv[1]), sys.argv[2]
            class H(http.server.BaseHTTPRequestHandler):
                def log_message(self, *a): pass
                def do_GET(self):
                    body = json.dumps({"secretMatches": self.headers.get("X-App-Token") == os.environ.get("APP_SECRET") != None,
                                       "base": base, "path": self.path, "authorization": self.headers.get("Authorization")}).encode()
                    self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
            http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
            """
        let apps: [[String: Any]] = [
            [
                "name": "echo-app", "port": Self.freePort(), "command": ["python3", "-c", script, "{port}", "{base_url}"], "tokenEnv": "APP_SECRET",
                "tokenHeader": "X-App-Token: {token}", "description": "a test app",
            ]
        ]
        try JSONSerialization.data(withJSONObject: apps).write(to: URL(fileURLWithPath: dir + "/apps.json"))
        try await ServerProcess.with(dataDir: dir + "/data", removeAfter: true, extra: ["--apps", dir + "/apps.json"]) { server in
            let list = try await server.cli(["apps"])
            #expect(list.stdout.contains("echo-app") && list.stdout.contains("jupyter"), "\(list)")
            let unknown = try await server.cli(["run", "--app", "nope"])
            #expect(unknown.status != 0 && unknown.stderr.contains("app \"nope\" is not configured") && unknown.stderr.contains("echo-app"), "\(unknown)")
            let run = try await server.cli(["run", "-d", "--app", "echo-app"])
            let id = run.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(run.status == 0, "\(run)")
            #expect(try await eventually(timeout: .seconds(20)) { try await server.phase(id) == "Running" })
            let show = try await server.cli(["show", id, "-o", "json"])
            let w = (try? JSONSerialization.jsonObject(with: Data(show.stdout.utf8))) as? [String: Any] ?? [:]
            let spec = w["spec"] as? [String: Any] ?? [:]
            #expect(spec["kind"] as? String == "interactive" && spec["app"] as? String == "echo-app" && (spec["env"] as? [String: String] ?? [:]).isEmpty)
            let port = ((spec["ports"] as? [[String: Any]])?.first?["port"] as? Int) ?? 0
            let open = try await server.cli(["open", id])
            let base = String(open.stdout.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: "?").first ?? "")
            var reply = Reply(status: 0, headers: [:], body: "")
            _ = try await eventually(timeout: .seconds(20)) {
                reply = try await Self.call("get", base + "x", ["Authorization=Bearer \(server.token)", "X-App-Token=forged"])
                return reply.status == 200
            }
            #expect(reply.json["secretMatches"] as? Bool == true, "\(reply)")
            #expect(reply.json["base"] as? String == "/proxy/\(id)/0/\(port)/" && reply.json["path"] as? String == "/proxy/\(id)/0/\(port)/x", "\(reply)")
            #expect(reply.json["authorization"] is NSNull, "\(reply)")
            _ = try await server.cli(["stop", id])
        }
        try? FileManager.default.removeItem(atPath: dir)
    }

    @Test("host mode (--proxy-domain): each instance port at a host name of its own, no path prefix, a host-only cookie; path-mode URLs refused")
    func hostMode() async throws {
        try await ServerProcess.with(dataDir: try makeTempDir("canopy-proxy-host"), removeAfter: true, extra: ["--proxy-domain", "apps.test"]) { server in
            let port = Self.freePort()
            let run = try await server.cli(["run", "-d", "--interactive", "--port", String(port), "--", "python3", "-c", Self.upstream, String(port)])
            let id = run.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(try await eventually(timeout: .seconds(20)) { try await server.phase(id) == "Running" })
            let open = try await server.cli(["open", id])
            let link = try #require(URLComponents(string: open.stdout.trimmingCharacters(in: .whitespacesAndNewlines)), "\(open)")
            let label = id.utf8.map { String(format: "%02x", $0) }.joined() + "-0-\(port)"
            #expect(link.host == "\(label).apps.test" && link.path == "/", "\(open)")
            let proxyPort = try #require(link.port)
            let host = "Host=\(label).apps.test:\(proxyPort)"
            let local = "http://127.0.0.1:\(proxyPort)"
            let auth = "Authorization=Bearer \(server.token)"
            var echo = Reply(status: 0, headers: [:], body: "")
            _ = try await eventually(timeout: .seconds(20)) {
                echo = try await Self.call("get", local + "/echo?x=1", [host, auth])
                return echo.status == 200
            }
            #expect(echo.json["path"] as? String == "/echo?x=1", "\(echo)")
            #expect((echo.json["headers"] as? [String: String])?["x-forwarded-prefix"] == nil)
            // Path-mode URLs, and host names that name nothing, are not served.
            #expect(try await Self.call("get", local + "/proxy/\(id)/0/\(port)/echo", [auth]).status == 404)
            #expect(try await Self.call("get", local + "/echo", ["Host=zz-0-\(port).apps.test", auth]).status == 404)
            #expect(try await Self.call("get", local + "/echo", ["Host=\(label).elsewhere.test", auth]).status == 404)
            #expect(
                try await Self.call("get", local + "/echo", ["Host=\(label.uppercased()).APPS.TEST", auth]).status == 200, "host names are case-insensitive")
            // The login link: a host-only cookie (no Domain), for the whole host.
            let login = try await Self.call("get", local + "/?" + (link.query ?? ""), [host])
            let cookie = login.headers["set-cookie"] as? String ?? ""
            #expect(login.status == 303 && login.headers["location"] as? String == "/", "\(login)")
            #expect(cookie.contains("Path=/;") && !cookie.lowercased().contains("domain="), "\(cookie)")
            let session = String(cookie.split(separator: ";").first ?? "")
            #expect(try await Self.call("get", local + "/echo", [host, "Cookie=\(session)"]).status == 200)
            // The session opens this workload only, whichever host it is sent to.
            let other = try await server.cli(["run", "-d", "--interactive", "--port", String(port + 1), "--", "sleep", "300"])
            let otherID = other.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            let otherLabel = otherID.utf8.map { String(format: "%02x", $0) }.joined() + "-0-\(port + 1)"
            #expect(try await Self.call("get", local + "/", ["Host=\(otherLabel).apps.test", "Cookie=\(session)"]).status == 401)
            _ = try await server.cli(["stop", id, otherID])
        }
    }
}
