import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The proxy's cost: the same requests to a task's HTTP server straight and through the proxy, in the same run.
/// The upstream is Python's threading HTTP server with keep-alive (the baseline it sets is what any app server
/// on this machine would), serving a small body and a large one.
enum ProxyBench {
    static let upstream = """
        import sys, http.server, socketserver, base64, hashlib
        big = bytes(range(256)) * 4096
        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True
            def log_message(self, *a): pass
            def do_GET(self):
                if "ws" in self.path:
                    accept = base64.b64encode(hashlib.sha1((self.headers["Sec-WebSocket-Key"] + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
                    self.send_response(101); self.send_header("Upgrade", "websocket"); self.send_header("Connection", "Upgrade")
                    self.send_header("Sec-WebSocket-Accept", accept); self.end_headers(); self.wfile.flush()
                    while True:
                        h = self.rfile.read(2)
                        if len(h) < 2: break
                        n = h[1] & 0x7f; m = self.rfile.read(4); p = bytearray(self.rfile.read(n))
                        for i in range(n): p[i] ^= m[i % 4]
                        self.wfile.write(bytes([0x82, n]) + bytes(p)); self.wfile.flush()
                    self.close_connection = True
                    return
                if "big" in self.path:
                    n = 64 << 20
                    self.send_response(200); self.send_header("Content-Length", str(n)); self.end_headers()
                    for _ in range(n // len(big)): self.wfile.write(big)
                    return
                body = b'{"ok":true}'
                self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
        class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True; allow_reuse_address = True
        S(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
        """

    static func run(seconds: Double) throws {
        let server = try ServerUnderTest(dataDir: try temporaryDirectory("proxy"))
        defer { server.stop() }
        let api = try server.client()
        let port = 20000 + Int(getpid() % 20000)
        let body = #"{"kind": "interactive", "ports": [\#(port)], "command": ["python3", "-c", \#(jsonString(upstream)), "\#(port)"]}"#
        let created = try api.request("POST", "/api/v1/workloads", body: body)
        guard created.status == 201, let id = Benchmarks.idOf(created.body) else { throw BenchError("submit: \(created.status) \(created.text)") }
        // The access URL, once the task runs; then wait until the server answers through it.
        var url: URLComponents?
        let deadline = monotonicNow() + 30
        while url == nil, monotonicNow() < deadline {
            let w = try api.request("GET", "/api/v1/workloads/\(id)")
            let object = (try? JSONSerialization.jsonObject(with: Data(w.body))) as? [String: Any]
            let endpoint = ((object?["tasks"] as? [[String: Any]])?.first?["endpoints"] as? [[String: Any]])?.first
            url = (endpoint?["url"] as? String).flatMap(URLComponents.init(string:))
            if url == nil { usleep(100_000) }
        }
        guard let url, let proxyPort = url.port else { throw BenchError("no access URL for \(id)") }
        let prefix = url.path
        while monotonicNow() < deadline {
            if let c = try? BlockingHTTPClient(port: port, token: ""), (try? c.request("GET", "/small"))?.status == 200 { break }
            usleep(100_000)
        }
        func measure(_ label: String, port: Int, token: String, path: String) throws {
            let clients = 4
            let samples = Samples()
            let until = monotonicNow() + seconds
            onThreads(clients) { _ in
                do {
                    let c = try BlockingHTTPClient(port: port, token: token)
                    var mine: [Double] = []
                    while monotonicNow() < until {
                        let t0 = monotonicNow()
                        let r = try c.request("GET", path)
                        guard r.status == 200 else { throw BenchError("\(label): HTTP \(r.status)") }
                        mine.append(monotonicNow() - t0)
                    }
                    samples.add(mine)
                } catch { samples.fail("\(error)") }
            }
            let all = samples.all
            if let e = samples.failures.first { throw BenchError(e) }
            say(
                String(
                    format: "proxy     %@ %8.0f req/s  p50 %.2f ms  p99 %.2f ms  (%d clients, keep-alive)", label.padding(toLength: 26, withPad: " ", startingAt: 0),
                    Double(all.count) / seconds, quantile(all, 0.5) * 1000, quantile(all, 0.99) * 1000, clients))
        }
        try measure("baseline: straight to task", port: port, token: "", path: "/small")
        try measure("through the proxy", port: proxyPort, token: server.token, path: prefix + "small")
        func download(_ label: String, port: Int, token: String, path: String) throws {
            let c = try BlockingHTTPClient(port: port, token: token)
            var best = 0.0
            for _ in 0..<3 {
                let t0 = monotonicNow()
                let r = try c.request("GET", path)
                guard r.status == 200, r.body.count == 64 << 20 else { throw BenchError("\(label): HTTP \(r.status), \(r.body.count) bytes") }
                best = max(best, 64 / (monotonicNow() - t0))
            }
            say(String(format: "proxy     %@ %8.0f MiB/s (64 MiB body, best of 3)", label.padding(toLength: 26, withPad: " ", startingAt: 0), best))
        }
        // A WebSocket echo: 32-byte masked frames, one at a time, each waiting for its echo.
        func echo(_ label: String, port: Int, token: String, path: String, rounds: Int = 3000) throws -> Double {
            let c = try BlockingHTTPClient(port: port, token: token)
            let status = try c.upgrade(path)
            guard status == 101 else { throw BenchError("\(label): upgrade answered \(status)") }
            let payload = [UInt8](repeating: 0x61, count: 32)
            let mask: [UInt8] = [1, 2, 3, 4]
            let frame = [0x82, 0x80 | 32] + mask + payload.enumerated().map { $0.element ^ mask[$0.offset % 4] }
            var samples: [Double] = []
            for _ in 0..<rounds {
                let t0 = monotonicNow()
                let back = try c.roundTrip(frame, expect: 34)
                guard back.count == 34, Array(back[2...]) == payload else { throw BenchError("\(label): echo garbled") }
                samples.append(monotonicNow() - t0)
            }
            let p50 = quantile(samples, 0.5)
            say(
                String(
                    format: "proxy     %@ WebSocket echo p50 %.3f ms  p99 %.3f ms  (%d round trips)", label.padding(toLength: 26, withPad: " ", startingAt: 0),
                    p50 * 1000, quantile(samples, 0.99) * 1000, rounds))
            return p50
        }
        let straightEcho = try echo("baseline: straight to task", port: port, token: "", path: "/ws")
        let proxiedEcho = try echo("through the proxy", port: proxyPort, token: server.token, path: prefix + "ws")
        say(
            String(
                format: "proxy     WebSocket echo: %.3f ms added to the p50 round trip (target <= 1 ms: %@)", (proxiedEcho - straightEcho) * 1000,
                verdict(proxiedEcho - straightEcho <= 0.001)))
        try download("baseline: straight to task", port: port, token: "", path: "/big")
        try download("through the proxy", port: proxyPort, token: server.token, path: prefix + "big")
        say(String(format: "proxy     server CPU %.1f s, RSS %.0f MiB", server.cpuSeconds(), server.memory().rss))
        _ = try api.request("POST", "/api/v1/workloads/\(id)/stop")
    }

    static func jsonString(_ s: String) -> String {
        let data = try! JSONSerialization.data(withJSONObject: [s], options: [])
        let text = String(decoding: data, as: UTF8.self)
        return String(text.dropFirst().dropLast())
    }
}
