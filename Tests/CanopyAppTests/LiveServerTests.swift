import CanopyCore
import CanopyTesting
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A `canopy serve` child process on a free port, for tests over real sockets.
final class ServerProcess: @unchecked Sendable {
    let dataDir: String
    let process = Process()
    private(set) var url = ""
    private(set) var token = ""

    init(dataDir: String, extra: [String] = []) throws {
        self.dataDir = dataDir
        process.executableURL = URL(fileURLWithPath: buildProductsDir + "/canopy")
        process.arguments = ["serve", "--data-dir", dataDir, "--port", "0", "--gpus", "T4:2", "--cpus", "4", "--memory", "8Gi", "--stop-grace", "1",
                             "--log-level", "warning"] + extra
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try? FileManager.default.removeItem(atPath: dataDir + "/url")
        try process.run()
        let started = ContinuousClock.now
        while ContinuousClock.now - started < .seconds(20) {
            if let u = try? String(contentsOfFile: dataDir + "/url", encoding: .utf8), let t = try? String(contentsOfFile: dataDir + "/admin.token", encoding: .utf8) {
                url = u.trimmingCharacters(in: .whitespacesAndNewlines)
                token = t.trimmingCharacters(in: .whitespacesAndNewlines)
                return
            }
            usleep(20_000)
        }
        throw CanopyError(.internal, "server did not start")
    }

    func kill9() {
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    func terminate() {
        kill(process.processIdentifier, SIGTERM)
        process.waitUntilExit()
    }

    /// Runs the CLI against this server.
    func cli(_ args: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
        try runProcess(buildProductsDir + "/canopy", args, env: ["CANOPY_URL": url, "CANOPY_TOKEN": token])
    }
}

/// A minimal HTTP/1.1 client over a real socket (Python's standard library), to stay independent of the server's stack.
func pythonRequest(_ url: String, _ method: String, _ path: String, token: String, body: String? = nil) throws -> (Int, String) {
    let script = """
        import sys, urllib.request, urllib.error
        req = urllib.request.Request(sys.argv[1] + sys.argv[3], method=sys.argv[2], data=(sys.argv[5].encode() if len(sys.argv) > 5 else None),
                                     headers={"Authorization": "Bearer " + sys.argv[4], "Content-Type": "application/json"})
        try:
            r = urllib.request.urlopen(req, timeout=30); print(r.status); print(r.read().decode())
        except urllib.error.HTTPError as e:
            print(e.code); print(e.read().decode())
        """
    let r = try runProcess(pythonPath, ["-c", script, url, method, path, token] + (body.map { [$0] } ?? []))
    let lines = r.stdout.split(separator: "\n", maxSplits: 1)
    return (Int(lines.first ?? "") ?? 0, lines.count > 1 ? String(lines[1]) : "")
}

@Suite("live server over real sockets", .serialized)
struct LiveServerTests {
    @Test("the CLI runs a workload, streams its output and exits with its exit code")
    func cliRun() throws {
        let server = try ServerProcess(dataDir: try makeTempDir())
        defer { server.terminate() }
        let ok = try server.cli(["run", "--cpus", "0.5", "--memory", "128Mi", "--env", "WHO=canopy", "--", "sh", "-c", "echo hello $WHO; echo warn >&2; exit 3"])
        #expect(ok.status == 3)
        #expect(ok.stdout == "hello canopy\n")
        #expect(ok.stderr.contains("warn\n") && ok.stderr.contains("exited with code 3"))
        let detached = try server.cli(["run", "-d", "--hold", "--name", "later", "--", "true"])
        let id = detached.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(detached.status == 0 && Base62.isValid(id))
        let ps = try server.cli(["ps", "-o", "json"])
        let items = try JSONSerialization.jsonObject(with: Data(ps.stdout.utf8)) as? [[String: Any]]
        #expect(items?.first?["id"] as? String == id && items?.first?["phase"] as? String == "Pending")
        let show = try server.cli(["show", id])
        #expect(show.stdout.contains("Held") && show.stdout.contains("Queue position  1"))
        #expect(try server.cli(["release", id]).status == 0)
        #expect(try server.cli(["nodes"]).stdout.contains("2x T4 (declared)"))
        #expect(try server.cli(["queues", "-o", "json"]).status == 0)
        let bad = try server.cli(["run", "--gpus", "5", "--", "true"])
        #expect(bad.status == 125 && bad.stderr.contains("Unschedulable"))
        let missing = try server.cli(["show", "nosuchid"])
        #expect(missing.status == 1 && missing.stderr.contains("no workload"))
    }

    @Test("acknowledged submissions survive kill -9, and running tasks are re-adopted")
    func crash() async throws {
        let dir = try makeTempDir()
        let first = try ServerProcess(dataDir: dir)
        // A task that outlives the crash, and one that ends while the server is down.
        let (_, longBody) = try pythonRequest(first.url, "POST", "/api/v1/workloads", token: first.token, body: #"{"command": ["sh", "-c", "sleep 2; exit 6"]}"#)
        let (_, shortBody) = try pythonRequest(first.url, "POST", "/api/v1/workloads", token: first.token, body: #"{"command": ["sh", "-c", "sleep 0.5; exit 2"]}"#)
        let longID = try #require((try JSONSerialization.jsonObject(with: Data(longBody.utf8)) as? [String: Any])?["id"] as? String)
        let shortID = try #require((try JSONSerialization.jsonObject(with: Data(shortBody.utf8)) as? [String: Any])?["id"] as? String)
        try await Task.sleep(for: .milliseconds(300))

        // Submit held workloads from 8 concurrent keep-alive clients (one Python process, 8 threads) and
        // kill -9 the server mid-load; every id the clients saw acknowledged must survive.
        let load = Process()
        load.executableURL = URL(fileURLWithPath: pythonPath)
        load.arguments = ["-c", loadScript, first.url, first.token, "8"]
        let out = Pipe()
        load.standardOutput = out
        load.standardError = FileHandle.nullDevice
        try load.run()
        try await Task.sleep(for: .milliseconds(700))
        first.kill9()
        let acked = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self).split(separator: "\n").map(String.init)
        load.waitUntilExit()
        #expect(acked.count > 0)

        try await Task.sleep(for: .milliseconds(1000))
        let server = try ServerProcess(dataDir: dir)
        defer { server.terminate() }
        // Every acknowledged submission is there.
        let check = try runProcess(pythonPath, ["-c", checkScript, server.url, server.token], stdin: acked.joined(separator: "\n"))
        #expect(check.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "missing 0", "of \(acked.count) acknowledged: \(check.stdout) \(check.stderr)")
        // The short task ended while nobody watched: its exit file tells how.
        let (_, short) = try pythonRequest(server.url, "GET", "/api/v1/workloads/\(shortID)", token: server.token)
        #expect(short.contains(#""phase":"Failed""#) && short.contains(#""exitCode":2"#))
        // The long one was adopted and is followed to its end.
        var long = ""
        _ = try await eventually(timeout: .seconds(10)) {
            long = try pythonRequest(server.url, "GET", "/api/v1/workloads/\(longID)", token: server.token).1
            return long.contains(#""phase":"Failed""#)
        }
        #expect(long.contains(#""exitCode":6"#))
    }
}

/// Debian's interpreter, not a version manager's shim (whose start-up costs tenths of a second).
let pythonPath = "/usr/bin/python3"

/// N threads, each with its own keep-alive connection, submit held workloads until the server goes away;
/// each acknowledged (201) id is printed as soon as it is received.
let loadScript = """
    import sys, json, threading, http.client, urllib.parse
    u = urllib.parse.urlparse(sys.argv[1]); token = sys.argv[2]; lock = threading.Lock()
    def client():
        try:
            c = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
            while True:
                c.request("POST", "/api/v1/workloads", body='{"command": ["true"], "hold": true}',
                          headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
                r = c.getresponse(); body = r.read()
                if r.status != 201: return
                with lock:
                    print(json.loads(body)["id"], flush=True)
        except Exception:
            return
    ts = [threading.Thread(target=client) for _ in range(int(sys.argv[3]))]
    [t.start() for t in ts]; [t.join() for t in ts]
    """

/// Reads ids on stdin and GETs each over one keep-alive connection; prints how many were not found.
let checkScript = """
    import sys, http.client, urllib.parse
    u = urllib.parse.urlparse(sys.argv[1]); c = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    missing = 0
    for line in sys.stdin:
        i = line.strip()
        if not i: continue
        c.request("GET", "/api/v1/workloads/" + i, headers={"Authorization": "Bearer " + sys.argv[2]})
        r = c.getresponse(); r.read()
        if r.status != 200: missing += 1; print("missing", i, r.status, file=sys.stderr)
    print("missing", missing)
    """
