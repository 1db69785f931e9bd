import CanopyCore
import CanopyTesting
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

extension ServerProcess {
    /// Starts `loadScript` against this server with 8 clients; acknowledged ids arrive on the pipe, one a line.
    func startSubmissionLoad() throws -> (Process, Pipe) {
        let load = Process()
        load.executableURL = URL(fileURLWithPath: pythonPath)
        load.arguments = ["-c", loadScript, url, token, "8"]
        let out = Pipe()
        load.standardOutput = out
        load.standardError = FileHandle.nullDevice
        try load.run()
        return (load, out)
    }
}

/// A minimal HTTP/1.1 client over a real socket (Python's standard library), to stay independent of the server's stack.
func pythonRequest(
    _ url: String, _ method: String, _ path: String, token: String, body: String? = nil
) async throws -> (Int, String) {
    let script = """
        import sys, urllib.request, urllib.error
        req = urllib.request.Request(sys.argv[1] + sys.argv[3], method=sys.argv[2], data=(sys.argv[5].encode() if len(sys.argv) > 5 else None),
                                     headers={"Authorization": "Bearer " + sys.argv[4], "Content-Type": "application/json"})
        try:
            r = urllib.request.urlopen(req, timeout=30); print(r.status); print(r.read().decode())
        except urllib.error.HTTPError as e:
            print(e.code); print(e.read().decode())
        """
    let r = try await runProcess(
        pythonPath, ["-c", script, url, method, path, token] + (body.map { [$0] } ?? []))
    let lines = r.stdout.split(separator: "\n", maxSplits: 1)
    return (Int(lines.first ?? "") ?? 0, lines.count > 1 ? String(lines[1]) : "")
}

@Suite("live server over real sockets", .serialized)
struct LiveServerTests {
    @Test("the CLI runs a workload, streams its output and exits with its exit code")
    func cliRun() async throws {
        try await ServerProcess.with(dataDir: try makeTempDir(), removeAfter: true) { server in
            let ok = try await server.cli([
                "run", "--cpus", "0.5", "--memory", "128Mi", "--env", "WHO=canopy", "--", "sh", "-c",
                "echo hello $WHO; echo warn >&2; exit 3",
            ])
            #expect(ok.status == 3)
            #expect(ok.stdout == "hello canopy\n")
            #expect(ok.stderr.contains("warn\n") && ok.stderr.contains("exited with code 3"))
            let detached = try await server.cli(["run", "-d", "--hold", "--name", "later", "--", "true"])
            let id = detached.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(detached.status == 0 && Base62.isValid(id))
            let ps = try await server.cli(["ps", "-o", "json"])
            let items = try JSONSerialization.jsonObject(with: Data(ps.stdout.utf8)) as? [[String: Any]]
            #expect(
                items?.first?["id"] as? String == id && items?.first?["phase"] as? String == "Pending")
            let show = try await server.cli(["show", id])
            #expect(show.stdout.contains("Held") && show.stdout.contains("Queue position  1"))
            #expect(try await server.cli(["release", id]).status == 0)
            #expect(try await server.cli(["nodes"]).stdout.contains("2x T4 (declared)"))
            #expect(try await server.cli(["queues", "-o", "json"]).status == 0)
            let bad = try await server.cli(["run", "--gpus", "5", "--", "true"])
            #expect(bad.status == 125 && bad.stderr.contains("Unschedulable"))
            let missing = try await server.cli(["show", "nosuchid"])
            #expect(missing.status == 1 && missing.stderr.contains("no workload"))
        }
    }

    @Test("acknowledged submissions survive kill -9, and running tasks are re-adopted")
    func crash() async throws {
        let dir = try makeTempDir()
        let first = try await ServerProcess.start(dataDir: dir)
        // A task that outlives the crash, and one that ends while the server is down.
        let (_, longBody) = try await pythonRequest(
            first.url, "POST", "/api/v1/workloads", token: first.token,
            body: #"{"command": ["sh", "-c", "while [ ! -e go ]; do sleep 0.05; done; exit 6"]}"#)
        let (_, shortBody) = try await pythonRequest(
            first.url, "POST", "/api/v1/workloads", token: first.token,
            body: #"{"command": ["sh", "-c", "sleep 0.5; exit 2"]}"#)
        // One that writes an output and ends while the server is down: the output is still collected.
        let (_, outputBody) = try await pythonRequest(
            first.url, "POST", "/api/v1/workloads", token: first.token,
            body: #"{"command": ["sh", "-c", "sleep 1.5; mkdir -p out; echo done > out/r.txt"], "data": {"outputs": [{"path": "out", "destination": "/crash/out"}]}}"#)
        let outputID = try #require((try JSONSerialization.jsonObject(with: Data(outputBody.utf8)) as? [String: Any])?["id"] as? String)
        let longID = try #require(
            (try JSONSerialization.jsonObject(with: Data(longBody.utf8)) as? [String: Any])?["id"]
                as? String)
        let shortID = try #require(
            (try JSONSerialization.jsonObject(with: Data(shortBody.utf8)) as? [String: Any])?["id"]
                as? String)
        try await Task.sleep(for: .milliseconds(300))

        // Submit held workloads from 8 concurrent keep-alive clients (one Python process, 8 threads) and
        // kill -9 the server mid-load; every id the clients saw acknowledged must survive.
        let (load, out) = try first.startSubmissionLoad()
        try await Task.sleep(for: .milliseconds(700))
        await first.kill9()
        let reader = out.fileHandleForReading
        let acked = try await offPool {
            let data = reader.readDataToEndOfFile()
            load.waitUntilExit()
            return String(decoding: data, as: UTF8.self).split(separator: "\n").map(String.init)
        }
        #expect(acked.count > 0)

        try await Task.sleep(for: .milliseconds(1000))
        try await ServerProcess.with(dataDir: dir, removeAfter: true) { server in
            // Every acknowledged submission is there.
            let check = try await runProcess(
                pythonPath, ["-c", checkScript, server.url, server.token],
                stdin: acked.joined(separator: "\n"))
            #expect(
                check.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "missing 0",
                "of \(acked.count) acknowledged: \(check.stdout) \(check.stderr)")
            // The short task ended while nobody watched: its exit file tells how.
            let (_, short) = try await pythonRequest(
                server.url, "GET", "/api/v1/workloads/\(shortID)", token: server.token)
            #expect(short.contains(#""phase":"Failed""#) && short.contains(#""exitCode":2"#))
            let (_, output) = try await pythonRequest(server.url, "GET", "/api/v1/workloads/\(outputID)", token: server.token)
            #expect(output.contains(#""phase":"Succeeded""#), "\(output)")
            let (status, content) = try await pythonRequest(server.url, "GET", "/api/v1/data/content?path=/crash/out/r.txt", token: server.token)
            #expect(status == 200 && content.trimmingCharacters(in: .whitespacesAndNewlines) == "done", "\(status) \(content)")
            // The long one is provably still running (it waits for the test), was adopted, and is followed to its end.
            let (_, adopted) = try await pythonRequest(server.url, "GET", "/api/v1/workloads/\(longID)", token: server.token)
            #expect(adopted.contains(#""phase":"Running""#), "\(adopted)")
            #expect(FileManager.default.createFile(atPath: "\(dir)/workloads/\(longID)/task-0/work/go", contents: nil))
            var long = ""
            _ = try await eventually(timeout: .seconds(20)) {
                long = try await pythonRequest(
                    server.url, "GET", "/api/v1/workloads/\(longID)", token: server.token
                ).1
                return long.contains(#""phase":"Failed""#)
            }
            #expect(long.contains(#""exitCode":6"#), "\(long)")
        }
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

@Suite("Data Forest over real sockets, driven by an independent client", .serialized)
struct DataForestLiveTests {
    /// `Tests/Fixtures/dataforest/client.py`, written only from the vendor's documentation, signs with Python's hmac.
    static let client = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent()
        .appendingPathComponent("Fixtures/dataforest/client.py").path

    @Test(
        "workspace, input file, seed-shaped AI app to FINISHED/SUCCEEDED, output read back, kill, errors: in JSON and in XML",
        arguments: ["json", "xml"])
    func roundTrip(mode: String) async throws {
        try await ServerProcess.with(dataDir: try makeTempDir("canopy-df"), removeAfter: true) {
            server in
            let key = try await server.cli(["keys", "create", "-o", "json", "--description", "client.py"])
            #expect(key.status == 0, "\(key.stderr)")
            let object =
                try JSONSerialization.jsonObject(with: Data(key.stdout.utf8)) as? [String: Any] ?? [:]
            let access = try #require(object["accessKey"] as? String)
            let secret = try #require(object["secretKey"] as? String)
            let run = try await runProcess(
                "/usr/bin/python3", [Self.client, server.url, access, secret, server.token, mode])
            #expect(run.status == 0, "\(run.stdout)\n\(run.stderr)")
            #expect(run.stdout.contains("ok: \(mode) round trip"))
            // The apps are Canopy workloads, visible in `canopy ps` like any other.
            let ps = try await server.cli(["ps", "--all"])
            #expect(ps.stdout.contains("df\(mode.prefix(2))-"))
            let keys = try await server.cli(["keys", "ls"])
            #expect(keys.stdout.contains(access) && !keys.stdout.contains(secret))
        }
    }

    @Test("canopy data put, ls and get (- for standard output) against the server")
    func dataCLI() async throws {
        try await ServerProcess.with(dataDir: try makeTempDir("canopy-data"), removeAfter: true) {
            server in
            let dir = try makeTempDir("canopy-data-local")
            defer { try? FileManager.default.removeItem(atPath: dir) }
            try FileManager.default.createDirectory(
                atPath: dir + "/tree/sub", withIntermediateDirectories: true)
            try "one\n".write(toFile: dir + "/tree/a.txt", atomically: true, encoding: .utf8)
            try "two\n".write(toFile: dir + "/tree/sub/b.txt", atomically: true, encoding: .utf8)
            #expect(try await server.cli(["data", "put", dir + "/tree", "/user/me/tree"]).status == 0)
            let ls = try await server.cli(["data", "ls", "/user/me/tree"])
            #expect(ls.stdout.contains("/user/me/tree/a.txt") && ls.stdout.contains("/user/me/tree/sub/"))
            #expect(
                try await server.cli(["data", "get", "/user/me/tree/sub/b.txt", "-"]).stdout == "two\n")
            #expect(
                try await server.cli(["data", "get", "/user/me/tree/a.txt", dir + "/copy.txt"]).status == 0)
            #expect(try String(contentsOfFile: dir + "/copy.txt", encoding: .utf8) == "one\n")
            // canopy run stages inputs in and outputs back.
            let run = try await server.cli([
                "run", "--cpus", "0.5", "--memory", "64Mi", "--input", "/user/me/tree/a.txt:in.txt", "--output", "out.txt:/user/me/upper.txt", "--",
                "sh", "-c", "tr a-z A-Z < in.txt > out.txt",
            ])
            #expect(run.status == 0, "\(run.stderr)")
            #expect(try await server.cli(["data", "get", "/user/me/upper.txt", "-"]).stdout == "ONE\n")
            let again = try await server.cli(["run", "--output", "out.txt:/user/me/upper.txt", "--", "sh", "-c", "echo x > out.txt"])
            #expect(again.status != 0 && again.stderr.contains("overwrite"), "\(again.stderr)")
            #expect(try await server.cli(["run", "--output", "out.txt:/user/me/upper.txt", "--overwrite", "--", "sh", "-c", "echo x > out.txt"]).status == 0)
            #expect(try await server.cli(["data", "get", "/user/me/upper.txt", "-"]).stdout == "x\n")
            let bad = try await server.cli(["run", "--input", "nocolon", "--", "true"])
            #expect(bad.status != 0 && bad.stderr.contains("SOURCE:PATH"))
            let missing = try await server.cli(["data", "get", "/user/me/nope", "-"])
            #expect(missing.status != 0 && missing.stderr.contains("no such file"))
        }
    }
}
