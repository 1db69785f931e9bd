import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The proxy's cost: the same requests to a task's HTTP server straight and through the proxy, in the same run.
/// The upstream is Python's threading HTTP server with keep-alive (the baseline it sets is what any app server
/// on this machine would), serving a small body and a large one.
enum ProxyBench {
    static let upstream = """
        import sys, http.server, socketserver
        big = bytes(range(256)) * 4096
        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True
            def log_message(self, *a): pass
            def do_GET(self):
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
