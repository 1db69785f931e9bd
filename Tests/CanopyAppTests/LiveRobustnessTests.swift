import CanopyCore
import CanopyTesting
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Sends raw bytes to a server over one connection (Python's socket module) and prints the status line of the answer,
/// or `closed` when the server closed the connection without one.
let rawRequestScript = """
    import sys, socket, urllib.parse
    u = urllib.parse.urlparse(sys.argv[1]); s = socket.create_connection((u.hostname, u.port), timeout=10)
    s.sendall(sys.argv[2].encode().decode("unicode_escape").encode("latin-1"))
    data = b""
    try:
        while b"\\r\\n" not in data:
            chunk = s.recv(4096)
            if not chunk: break
            data += chunk
    except socket.timeout:
        print("timeout"); sys.exit(0)
    print(data.split(b"\\r\\n")[0].decode() if data else "closed")
    """

/// Opens connections that a server must not wait for when it stops: a follower of a held workload's log that then
/// disconnects, one that stays, and an upload that stalls halfway. Prints `ready` once all are in place, then sleeps.
let lingeringClientsScript = """
    import sys, socket, time, urllib.parse
    u = urllib.parse.urlparse(sys.argv[1]); token = sys.argv[2]; wid = sys.argv[3]
    def connect():
        return socket.create_connection((u.hostname, u.port), timeout=10)
    def follow():
        s = connect()
        s.sendall(("GET /api/v1/workloads/%s/tasks/0/logs?follow=true HTTP/1.1\\r\\nHost: x\\r\\nAuthorization: Bearer %s\\r\\n\\r\\n" % (wid, token)).encode())
        head = s.recv(4096)
        assert head.startswith(b"HTTP/1.1 200"), head
        return s
    gone = follow(); gone.close()
    stays = follow()
    upload = connect()
    upload.sendall(("PUT /api/v1/data/content?path=/big HTTP/1.1\\r\\nHost: x\\r\\nAuthorization: Bearer %s\\r\\nContent-Length: 100000000\\r\\n\\r\\n" % token).encode())
    upload.sendall(b"x" * 65536)
    print("ready", flush=True)
    time.sleep(120)
    """

@Suite("live server robustness over real sockets", .serialized)
struct LiveRobustnessTests {
    @Test("a chunked body whose chunk size is -1 or zz is a 400 or a closed connection, never a 500")
    func badChunks() async throws {
        try await ServerProcess.with(dataDir: try makeTempDir(), removeAfter: true) { server in
            for target in ["PUT /api/v1/data/content?path=/c", "POST /api/v1/workloads"] {
                for size in ["-1", "zz", "fffffffffffffffffffff"] {
                    let request =
                        "\(target) HTTP/1.1\\r\\nHost: x\\r\\nAuthorization: Bearer \(server.token)\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\n2\\r\\n{}\\r\\n\(size)\\r\\nabc\\r\\n0\\r\\n\\r\\n"
                    let r = try await runProcess(pythonPath, ["-c", rawRequestScript, server.url, request])
                    let line = r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
                    #expect(line.hasPrefix("HTTP/1.1 4") || line == "closed", "\(target) chunk size \(size): \(line) \(r.stderr)")
                }
            }
            // And the server is still well.
            #expect(try await pythonRequest(server.url, "GET", "/api/v1/whoami", token: server.token).0 == 200)
        }
    }

    @Test("SIGTERM stops the server within its stop grace while clients follow a held workload's log or stall an upload")
    func shutdownWithLingeringClients() async throws {
        let dir = try makeTempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let server = try await ServerProcess.start(dataDir: dir)
        let (_, body) = try await pythonRequest(server.url, "POST", "/api/v1/workloads", token: server.token, body: #"{"command": ["true"], "hold": true}"#)
        let id = try #require((try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any])?["id"] as? String)
        let clients = Process()
        clients.executableURL = URL(fileURLWithPath: pythonPath)
        clients.arguments = ["-c", lingeringClientsScript, server.url, server.token, id]
        let out = Pipe()
        clients.standardOutput = out
        clients.standardError = FileHandle.nullDevice
        try clients.run()
        defer {
            kill(clients.processIdentifier, SIGKILL)
            clients.waitUntilExit()
        }
        let reader = out.fileHandleForReading
        let ready = try await offPool { String(decoding: reader.availableData, as: UTF8.self) }
        #expect(ready.contains("ready"))
        try await Task.sleep(for: .milliseconds(300))

        // Stop grace is 1 s: the server must be gone well before the 15 s after which the test would SIGKILL it.
        let process = server.process
        let started = ContinuousClock.now
        kill(process.processIdentifier, SIGTERM)
        let stopped = try await offPool {
            let deadline = Date().addingTimeInterval(10)
            while process.isRunning && Date() < deadline { usleep(20_000) }
            return !process.isRunning
        }
        let took = ContinuousClock.now - started
        if !stopped { await server.kill9() }
        #expect(stopped, "still running 10 s after SIGTERM")
        #expect(took < .seconds(8), "took \(took)")
    }
}
